//! Types of the third-party APIs the operator writes, generated from their real CRDs.

#[allow(clippy::all, missing_debug_implementations, unused_qualifications)]
pub mod certmanager;
