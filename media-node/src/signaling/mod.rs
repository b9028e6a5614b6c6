//! Signaling: the WebSocket-over-TLS protocol clients speak to join rooms and set up media.

pub mod accept;
pub mod forward;
pub mod refusals;
pub mod server;
mod session;
pub mod state;
