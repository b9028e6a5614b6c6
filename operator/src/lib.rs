//! `bedside-operator` as a library: the controller (so tests can run it in-process against a
//! real API server) and its pure parts.

pub mod audit;
pub mod baa;
pub mod break_glass;
pub mod build;
pub mod export;
pub mod metrics;
pub mod names;
#[cfg(test)]
mod properties;
pub mod rbac;
pub mod reconcile;
pub mod run;
pub mod thirdparty;
