//! Subcommands that work offline, without a cluster.

pub mod validate;
