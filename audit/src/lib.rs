//! bedside's audit trail: a PHI-free event model ([`event`]), a tamper-evident chain
//! ([`chain`]) and its verifier ([`verify`]); with the `delivery` feature, the disk-backed,
//! at-least-once delivery to the tenant's sinks. Shared by the media node and the operator.

pub mod chain;
#[cfg(feature = "delivery")]
pub mod delivery;
pub mod event;
pub mod evidence;
pub mod verify;

pub use chain::{AuditKey, Chain, ChainError, Record};
pub use event::AuditEvent;
pub use verify::{Broken, Verified, verify};
