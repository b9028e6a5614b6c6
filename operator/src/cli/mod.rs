//! Subcommands for people and scripts: offline checks, and booking visits.

pub mod validate;
pub mod visit;
