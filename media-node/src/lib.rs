//! `bedside-media-node` as a library: the pieces the binary wires together, testable alone.
//!
//! - [`protocol`]: the signaling messages, the one wire contract clients and the engine share
//!   (a leaf: `sfu` and `signaling` both use it, neither through the other);
//! - [`signaling`]: the WebSocket-over-TLS server, its sessions and the web client; joins
//!   carried to the room's pod;
//! - [`sfu`]: the media engine (sans-IO: rooms, participants, str0m connections) and the shell
//!   that gives it the socket and the clock;
//! - [`limits`]: what one client network may take (connections, join attempts) and refusals
//!   counted instead of sealed one by one;
//! - [`meeting`]: the meeting state machine (waiting room, host controls, timeouts, passcodes);
//! - [`crypto_policy`]: DTLS/SRTP restricted to what a BAA asks for;
//! - [`tls`]: the HTTPS certificate and server config;
//! - [`config`]: reading and checking the node's config file, and the dev default;
//! - [`address`]: the pod's advertised media address, followed from the operator's ConfigMap;
//! - [`health`]: liveness and readiness verdicts for the kubelet's probes;
//! - [`evidence`]: what the node enforces and has seen (its audit chain checked at rest), for
//!   the operator's compliance report;
//! - [`placement`]: which pod holds which room, shared through Kubernetes Leases;
//! - [`api`]: the visits API for scheduling systems (book, read, cancel);
//! - [`node`]: config and key material in, a running node out;
//! - [`error`]: the crate's one error type.

pub mod address;
pub mod api;
pub mod config;
pub mod crypto_policy;
pub mod error;
pub mod evidence;
pub mod health;
pub mod keys;
pub mod limits;
pub mod meeting;
pub mod node;
pub mod placement;
pub mod protocol;
pub mod relay;
pub mod reload;
pub mod sfu;
pub mod signaling;
pub mod tls;

pub use error::NodeError;
