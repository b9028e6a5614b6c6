//! `bedside-media-node` as a library: the pieces the binary wires together, testable alone.
//!
//! - [`signaling`]: the WebSocket-over-TLS protocol and the web client;
//! - [`sfu`]: rooms, participants and the str0m media loop;
//! - [`crypto_policy`]: DTLS/SRTP restricted to what a BAA asks for;
//! - [`token`]: join-token verification;
//! - [`node`]: config and key material in, a running node out.

pub mod config;
pub mod crypto_policy;
pub mod error;
pub mod meeting;
pub mod node;
pub mod sfu;
pub mod signaling;
pub mod tls;
pub mod token;

pub use error::NodeError;
