//! What signaling asks of the media engine, and what the engine needs to know about its node:
//! the interface between the async signaling side and the single-task media side.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::participant::ParticipantId;
use crate::crypto_policy::SrtpPolicy;
use crate::meeting;
use crate::protocol::{DisplayName, LeaveReason, ParticipantInfo, ProtocolError, ServerMessage};
use bedside_crds::join::Role;

/// What the engine needs to know about its node.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The tenant's name, for log spans (never a user or a room).
    pub tenant: String,
    /// The address browsers send media to; the one host candidate of every connection.
    pub advertised: SocketAddr,
    pub policy: SrtpPolicy,
    pub max_participants: usize,
    /// The tenant's meeting rules (idle timeout, maximum duration).
    pub meeting: meeting::Policy,
    /// Media is encrypted end to end by the clients; the node forwards frames it cannot read.
    pub end_to_end: bool,
    /// Browsers are given a TURN relay: a connection's path is known only once its `relay`
    /// candidates are (see `Participant::path_known`).
    pub relay: bool,
}

/// A host's action on the meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostAction {
    Admit(ParticipantId),
    Deny(ParticipantId),
    Lock(bool),
    Expel(ParticipantId),
    Mute(Option<ParticipantId>),
    StopShare(ParticipantId),
    End,
}

/// A request from signaling to the media loop.
#[derive(Debug)]
pub enum Command {
    Join {
        room: String,
        role: Role,
        user: String,
        token_expires: Instant,
        display_name: Option<DisplayName>,
        /// The meeting's memory from before this pod held the room (placement).
        remembered: Option<meeting::Memory>,
        /// Through an emergency link (an active BreakGlass): past the lock.
        entry: meeting::Entry,
        events: mpsc::Sender<ServerMessage>,
        reply: oneshot::Sender<Result<Joined, ProtocolError>>,
    },
    Offer {
        id: ParticipantId,
        sdp: String,
        reply: oneshot::Sender<Result<String, ProtocolError>>,
    },
    Answer {
        id: ParticipantId,
        sdp: String,
        reply: oneshot::Sender<Result<(), ProtocolError>>,
    },
    Candidate {
        id: ParticipantId,
        candidate: String,
        reply: oneshot::Sender<Result<(), ProtocolError>>,
    },
    Leave {
        id: ParticipantId,
        reason: LeaveReason,
    },
    /// A host's action; the reply carries the meeting's memory after it.
    Host {
        id: ParticipantId,
        action: HostAction,
        reply: oneshot::Sender<Result<meeting::Memory, ProtocolError>>,
    },
    /// The participant unmutes themselves.
    Unmute { id: ParticipantId },
    /// The client's next offer carries its screen share on this m-line.
    Share {
        id: ParticipantId,
        mid: String,
        reply: oneshot::Sender<Result<(), ProtocolError>>,
    },
    /// The address browsers reach this node's media at changed (the operator gave this pod
    /// its public address); connections made from now on use it.
    Advertise { address: SocketAddr },
    /// The rooms that have a meeting here (placement lets go of the others' leases).
    Rooms {
        reply: oneshot::Sender<Result<Vec<String>, ProtocolError>>,
    },
    /// The clinic cancelled the visit held in `room`: its meeting here ends for everyone. The
    /// reply says whether a meeting was running.
    Cancel {
        room: String,
        reply: oneshot::Sender<Result<bool, ProtocolError>>,
    },
    /// Tell everyone, disconnect everyone, stop.
    Shutdown { reason: String },
    /// The subscriber shows `source`'s video in a tile this small: at most this many layers
    /// above the lowest (`None`: any).
    View {
        id: ParticipantId,
        source: ParticipantId,
        cap: Option<usize>,
    },
    /// A pre-call connectivity check's offer (a data channel only); the reply is the answer.
    /// It joins no room and ends by itself.
    Probe {
        sdp: String,
        reply: oneshot::Sender<Result<String, ProtocolError>>,
    },
}

/// A join the engine accepted.
#[derive(Debug, Clone)]
pub struct Joined {
    pub id: ParticipantId,
    pub participants: Vec<ParticipantInfo>,
    /// False: in the waiting room; `joined` follows when a host admits them.
    pub admitted: bool,
}
