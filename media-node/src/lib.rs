//! `bedside-media-node` as a library: the pieces the binary wires together, testable alone.

pub mod config;
pub mod token;
