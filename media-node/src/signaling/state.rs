//! What every signaling connection shares: the engine, the token check, the node's state and
//! its audit trail. Its own module, so the server (which builds it) and the sessions (which use
//! it) do not import each other.

use std::sync::Arc;

use tokio::sync::watch;

use crate::meeting::passcode::Passcodes;
use crate::sfu::{EngineStats, SfuHandle};

#[derive(Clone, Debug)]
pub struct AppState {
    pub sfu: SfuHandle,
    /// The tenant's join keys: tokens verified, passcodes derived, pods vouched for.
    pub keys: Arc<crate::keys::JoinKeys>,
    /// Flips to true when the node starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Where browsers send media; `None` until the pod has an address (joins are refused).
    pub media_address: watch::Receiver<Option<std::net::SocketAddr>>,
    pub display_name: String,
    pub stats: Arc<EngineStats>,
    pub tenant: String,
    pub audit: Arc<bedside_audit::delivery::Auditor>,
    pub passcodes: Arc<Passcodes>,
    /// The tenant's mediaEncryption is EndToEnd.
    pub end_to_end: bool,
    /// Which pod holds which room (Kubernetes); `None`: this node holds every room.
    pub placement: Option<Arc<crate::placement::leases::Placement>>,
    /// TLS to the other pods of the tenant, for joins carried on to their room's pod.
    pub peer_tls: Arc<rustls::ClientConfig>,
    /// What one client network may take: connections, join attempts; refusals counted.
    pub guards: Arc<crate::limits::ClientGuards>,
    /// The tenant's TURN relay, handed to each joining browser; `None`: the tenant runs none.
    pub relay: Option<Arc<crate::relay::Relay>>,
}
