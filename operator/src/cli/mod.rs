//! Subcommands for people and scripts: offline checks, and booking visits.

pub mod keys;
pub mod validate;
pub mod visit;
