//! One client's signaling connection: join first, then SDP and ICE, relayed to the media loop.
//!
//! Every bad input is answered with an error message; only a refused join, a refused media
//! connection, repeated abuse or shutdown end the connection. Nothing a client sends reaches
//! another room.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::state::AppState;
use crate::meeting::passcode::Refusal;
use crate::protocol::{
    self, ClientMessage, DisplayName, ErrorCode, LeaveReason, PROTOCOL_VERSION, ProtocolError,
    ServerMessage,
};
use crate::sfu::stats::JoinRefusal;
use crate::sfu::{Command, HostAction, ParticipantId};
use bedside_audit::delivery::Who;
use bedside_audit::event::{Action, ActorRole, AuthMethod};
use bedside_crds::join::Role;
use bedside_crds::join::{Grant, TokenError};
use bedside_crds::leases::VisitRefusal;

/// A client that has not joined by then is disconnected.
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Errors tolerated on one connection before it is closed.
const MAX_ERRORS: u32 = 32;
/// A client that takes no frame for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages waiting for a slow client before it is dropped.
const EVENT_QUEUE: usize = 256;

/// WebSocket close codes (RFC 6455): policy violation and going away.
const CLOSE_POLICY: u16 = 1008;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_NORMAL: u16 = 1000;

enum Flow {
    Continue,
    Close(u16, String),
}

/// Who is at the other end of a signaling connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Client {
    /// The address audit records name.
    pub ip: std::net::IpAddr,
    /// Another pod of the tenant carried this join here: it stays here.
    pub forwarded: bool,
}

/// With placement, the first message decides the pod: a join for a room another pod holds is
/// carried there; everything else is served here.
pub(super) async fn run(mut socket: WebSocket, state: AppState, client: Client) {
    let mut first = None;
    // Whether placing the first message took one of the client's join attempts already.
    let mut counted = false;
    if let (Some(placement), false) = (state.placement.clone(), client.forwarded) {
        let message = match tokio::time::timeout(JOIN_TIMEOUT, socket.recv()).await {
            Ok(Some(Ok(message))) => message,
            Ok(_) => return, // gone before a word
            Err(_) => Message::Text(Utf8Bytes::from_static("{}")), // answered: join first
        };
        let started = std::time::Instant::now();
        // Placing a join verifies its token: that takes one of the client's attempts. A client
        // out of attempts is left unplaced, and its join refused below, with a record.
        counted = state.guards.joins.allow(client.ip).is_ok();
        let route = match counted {
            true => route(&state, &placement, &message).await,
            false => Route::Unplaced,
        };
        match route {
            Route::Here => {
                state.stats.placement.record(started.elapsed());
                first = Some(message);
            }
            Route::Unplaced => first = Some(message),
            Route::To(url) => {
                match super::forward::connect(
                    &url,
                    client.ip,
                    &state.keys.current(),
                    state.peer_tls.clone(),
                )
                .await
                {
                    Ok(upstream) => {
                        state.stats.placement.record(started.elapsed());
                        state.stats.forwarded_joins.inc();
                        // A draining pod waits for these as for its own calls.
                        state.stats.relayed.inc();
                        super::forward::relay(socket, upstream, message).await;
                        state.stats.relayed.dec();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the room's media node did not answer a carried join");
                        return refuse(socket, unplaced("the visit's media node did not answer"))
                            .await;
                    }
                }
            }
            Route::Refuse(error) => return refuse(socket, error).await,
        }
    }
    serve(socket, state, client.ip, first, counted).await
}

enum Route {
    /// Not a join with a valid token: answered here, nothing placed.
    Unplaced,
    /// The room is this pod's.
    Here,
    To(String),
    Refuse(ProtocolError),
}

fn unplaced(why: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::NotAvailable,
        format!("{why}; reconnect in a few seconds to join the visit"),
    )
}

/// Where a first message goes: only a join with a valid token is placed (nobody else makes
/// the cluster write a lease); anything else is answered here.
async fn route(
    state: &AppState,
    placement: &crate::placement::leases::Placement,
    first: &Message,
) -> Route {
    let Message::Text(text) = first else {
        return Route::Unplaced;
    };
    let Ok(ClientMessage::Join { room, token, .. }) = protocol::parse(text.as_str()) else {
        return Route::Unplaced;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let Ok(grant) = state.keys.verify(&token, &room, now) else {
        return Route::Unplaced;
    };
    use crate::placement::leases::Owner;
    match placement.owner(&grant.room).await {
        Ok(Owner::Me) => Route::Here,
        Ok(Owner::Peer { url, .. }) => Route::To(url),
        Ok(Owner::Nowhere) => {
            Route::Refuse(unplaced("no media node can take a new visit right now"))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot place a room");
            Route::Refuse(unplaced("the visit's media node cannot be found right now"))
        }
    }
}

async fn refuse(mut socket: WebSocket, error: ProtocolError) {
    let text = Message::Text(Utf8Bytes::from(error.to_message(true).to_json()));
    if send(&mut socket, text).await {
        let frame = CloseFrame {
            code: CLOSE_GOING_AWAY,
            reason: "reconnect".into(),
        };
        send(&mut socket, Message::Close(Some(frame))).await;
    }
}

async fn serve(
    socket: WebSocket,
    state: AppState,
    client_ip: std::net::IpAddr,
    first: Option<Message>,
    attempt_counted: bool,
) {
    let (mut sink, stream) = socket.split();
    // A first message read to place the join is served before the rest.
    let mut stream = futures::stream::iter(first.map(Ok)).chain(stream);
    let (events_tx, mut events_rx) = mpsc::channel::<ServerMessage>(EVENT_QUEUE);
    let mut session = Session {
        state: state.clone(),
        client_ip,
        who: None,
        joined: None,
        waiting: false,
        errors: 0,
        attempt_counted,
        events_tx,
        outbox: Vec::new(),
        pace: crate::limits::MessagePace::new(),
        reports: crate::limits::ReportPace::default(),
        token_expires_at: 0,
        probes: 0,
        break_glass: None,
    };
    // An emergency link's grant is looked at again this often: a revoked one ends the call.
    let mut grant_check = tokio::time::interval(BREAK_GLASS_CHECK);
    grant_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let join_deadline = tokio::time::sleep(JOIN_TIMEOUT);
    tokio::pin!(join_deadline);
    let mut shutdown = state.shutdown.clone();
    let mut shutdown_seen = *shutdown.borrow();

    let close = loop {
        let flow = tokio::select! {
            incoming = stream.next() => match session.on_incoming(incoming).await {
                Some(flow) => flow,
                None => break None,
            },
            event = events_rx.recv() => session.on_engine_event(event),
            _ = &mut join_deadline, if session.joined.is_none() => {
                session.outbox.push(ProtocolError::new(
                    ErrorCode::JoinFirst,
                    format!("no join within {} seconds", JOIN_TIMEOUT.as_secs()),
                ).to_message(true));
                Flow::Close(CLOSE_POLICY, "join timeout".into())
            }
            _ = grant_check.tick(), if session.break_glass.is_some() && session.joined.is_some() => {
                session.check_break_glass().await
            }
            _ = shutdown.changed(), if !shutdown_seen => {
                shutdown_seen = true;
                session.on_shutdown()
            }
        };
        let mut delivered = true;
        for message in session.outbox.drain(..) {
            let text = Message::Text(Utf8Bytes::from(message.to_json()));
            if !send(&mut sink, text).await {
                delivered = false;
                break;
            }
        }
        if !delivered {
            // The client does not read (or is gone): nothing more can reach it.
            break None;
        }
        if let Flow::Close(code, reason) = flow {
            break Some((code, reason));
        }
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        };
        send(&mut sink, Message::Close(Some(frame))).await;
    }
    if let Some(id) = session.joined {
        session.audit(
            Action::Leave,
            session.waiting.then_some("left-waiting-room"),
        );
        state
            .sfu
            .tell(Command::Leave {
                id,
                reason: LeaveReason::Left,
            })
            .await;
    }
}

/// Sends one frame; false when it failed or the client did not take it within
/// [`WRITE_TIMEOUT`] (a client that never reads must not park its session forever).
async fn send(sink: &mut (impl futures::Sink<Message> + Unpin), message: Message) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, sink.send(message)).await,
        Ok(Ok(()))
    )
}

struct Session {
    state: AppState,
    client_ip: std::net::IpAddr,
    /// Who joined, and where: for the audit records of this connection.
    who: Option<(Who, String)>,
    joined: Option<ParticipantId>,
    /// In the waiting room: joined the node, not yet the visit.
    waiting: bool,
    errors: u32,
    /// The next join attempt was counted when the first message was placed.
    attempt_counted: bool,
    events_tx: mpsc::Sender<ServerMessage>,
    outbox: Vec<ServerMessage>,
    /// Messages after the join, bounded per second.
    pace: crate::limits::MessagePace,
    /// Quality reports, a few a minute.
    reports: crate::limits::ReportPace,
    /// When the join token stops working (seconds since the epoch): the relay credential
    /// handed out with `joined` stops with it.
    token_expires_at: u64,
    /// Connectivity-check offers on this connection so far.
    probes: u32,
    /// Joined through an emergency link: the BreakGlass, checked again while the call goes on.
    break_glass: Option<String>,
}

/// How often a joined emergency link's grant is looked at again (a cache lookup).
const BREAK_GLASS_CHECK: Duration = Duration::from_secs(1);

/// A connectivity check tries UDP, TCP and the relay: one offer each.
const PROBES_PER_CONNECTION: u32 = 3;
/// How long a check's relay credential works: the check takes seconds.
const PROBE_CREDENTIAL_SECS: u64 = 60;

/// No visit starts while its audit record cannot be kept or delivered.
fn audit_unavailable() -> ProtocolError {
    ProtocolError::new(
        ErrorCode::NotAvailable,
        "visits cannot start right now: the clinic's audit log cannot be kept or delivered \
         (the record of who joined must be kept); please try again shortly",
    )
}

fn cool_down(left: Duration) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::PasscodeCoolDown,
        format!(
            "too many wrong passcodes from this network; try again in {} minute(s)",
            left.as_secs().div_ceil(60).max(1)
        ),
    )
}

/// Who a join token names, for the audit trail.
fn token_holder(user: &str, role: Role) -> Who {
    Who {
        user: Some(user.to_string()),
        role: Some(match role {
            Role::Host => ActorRole::Host,
            Role::Participant => ActorRole::Participant,
            Role::Observer => ActorRole::Observer,
        }),
        auth: AuthMethod::JoinToken,
    }
}

impl Session {
    /// A frame from the client; `None` when the client closed the connection.
    async fn on_incoming(
        &mut self,
        incoming: Option<Result<Message, axum::Error>>,
    ) -> Option<Flow> {
        Some(match incoming {
            Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
            Some(Ok(Message::Binary(_))) => self.on_error(ProtocolError::new(
                ErrorCode::BinaryFrame,
                "binary frames are not part of the protocol; send JSON text frames",
            )),
            Some(Ok(Message::Close(_))) | None => return None,
            Some(Ok(_)) => Flow::Continue, // ping/pong: answered by the WebSocket layer
            Some(Err(e)) => {
                // Oversized frames land here: tell the client if the socket still works.
                self.outbox.push(
                    ProtocolError::new(
                        ErrorCode::TooLarge,
                        format!("the message could not be read: {e}"),
                    )
                    .to_message(true),
                );
                Flow::Close(CLOSE_POLICY, "unreadable message".into())
            }
        })
    }

    /// A message the media loop sends this participant.
    fn on_engine_event(&mut self, event: Option<ServerMessage>) -> Flow {
        match event {
            Some(ServerMessage::Closing { v, reason }) => {
                self.outbox.push(ServerMessage::Closing {
                    v,
                    reason: reason.clone(),
                });
                Flow::Close(CLOSE_GOING_AWAY, reason)
            }
            Some(message @ ServerMessage::Error { fatal: true, .. }) => {
                self.joined = None; // the media loop already removed us
                if let ServerMessage::Error { code, .. } = &message {
                    match code {
                        ErrorCode::MediaEncryptionRefused => {
                            self.audit(Action::MediaRefused, Some("encryption-policy"));
                        }
                        // Denied, expelled, idle, token expired, meeting ended.
                        code => self.audit(Action::Leave, Some(code.as_str())),
                    }
                }
                self.outbox.push(message);
                Flow::Close(CLOSE_POLICY, "refused".into())
            }
            Some(message) => {
                if let (
                    ServerMessage::MediaConnected {
                        path: Some(path), ..
                    },
                    Some((who, room)),
                ) = (&message, &self.who)
                {
                    self.state
                        .audit
                        .record_media_connected(who, room, self.client_ip, *path);
                }
                if matches!(message, ServerMessage::Joined { .. }) && self.waiting {
                    // A host admitted us: from now on this is a visit.
                    self.waiting = false;
                    self.audit(Action::Join, None);
                }
                let message = self.with_relay(message);
                self.outbox.push(message);
                Flow::Continue
            }
            // The session holds a sender itself, so this cannot happen; were it to, a closed
            // channel would answer at once and spin this loop.
            None => Flow::Close(CLOSE_GOING_AWAY, "the media loop is gone".into()),
        }
    }

    /// `joined` carries the tenant's relay, with a credential that dies with the join token.
    fn with_relay(&self, mut message: ServerMessage) -> ServerMessage {
        if let (
            ServerMessage::Joined {
                ice_servers,
                participant_id,
                ..
            },
            Some(relay),
        ) = (&mut message, &self.state.relay)
        {
            *ice_servers = vec![relay.ice_server(self.token_expires_at, participant_id)];
        }
        message
    }

    /// The node began shutting down: joined clients hear it from the media loop, the rest here.
    fn on_shutdown(&mut self) -> Flow {
        if self.joined.is_some() {
            return Flow::Continue;
        }
        self.outbox.push(ServerMessage::Closing {
            v: PROTOCOL_VERSION,
            reason: "the media node is shutting down".into(),
        });
        Flow::Close(CLOSE_GOING_AWAY, "shutting down".into())
    }

    /// Records `action` of this connection's holder, or says why it could not be kept.
    fn try_audit(&self, action: Action) -> Result<(), bedside_audit::delivery::DeliveryError> {
        let Some((who, room)) = &self.who else {
            return Ok(());
        };
        self.state
            .audit
            .try_record(who, action, None, Some(room), Some(self.client_ip))
    }

    /// The record of a join: into the visit, its waiting room, or through an emergency link.
    fn try_audit_entry(
        &self,
        admitted: bool,
    ) -> Result<(), bedside_audit::delivery::DeliveryError> {
        match (&self.break_glass, &self.who) {
            (Some(break_glass), Some((who, room))) => self.state.audit.try_record_break_glass(
                who,
                Action::BreakGlassJoin,
                None,
                (room, break_glass),
                Some(self.client_ip),
            ),
            _ if admitted => self.try_audit(Action::Join),
            _ => self.try_audit(Action::WaitingRoomEnter),
        }
    }

    /// The join went through but its record could not be kept: undone, and the client told.
    async fn unrecorded(
        &mut self,
        id: ParticipantId,
        error: bedside_audit::delivery::DeliveryError,
    ) -> Flow {
        tracing::error!(tenant = %self.state.tenant, error = %error, "join undone: its audit record could not be kept");
        self.state.stats.refused(JoinRefusal::AuditUnavailable);
        self.joined = None;
        self.waiting = false;
        self.state
            .sfu
            .tell(Command::Leave {
                id,
                reason: LeaveReason::Left,
            })
            .await;
        self.fatal(audit_unavailable())
    }

    fn audit(&self, action: Action, refusal: Option<&str>) {
        let (who, room) = match &self.who {
            Some((who, room)) => (who.clone(), Some(room.as_str())),
            None => (Who::UNAUTHENTICATED, None),
        };
        self.state
            .audit
            .record(&who, action, refusal, room, Some(self.client_ip));
    }

    fn on_error(&mut self, error: ProtocolError) -> Flow {
        self.errors += 1;
        tracing::debug!(code = ?error.code, "signaling error");
        if self.errors > MAX_ERRORS {
            self.outbox.push(
                ProtocolError::new(
                    error.code,
                    format!(
                        "too many bad messages ({MAX_ERRORS}); closing. Last: {}",
                        error.message
                    ),
                )
                .to_message(true),
            );
            return Flow::Close(CLOSE_POLICY, "too many errors".into());
        }
        self.outbox.push(error.to_message(false));
        Flow::Continue
    }

    /// The meeting's passcode (meeting::passcode decides); every refusal is an audit record.
    fn check_passcode(&mut self, grant: &Grant, given: Option<&str>) -> Result<(), ProtocolError> {
        let now = std::time::Instant::now();
        let passcodes = &self.state.passcodes;
        // The room's passcode derives from the key that signed the link.
        let key = self.state.keys.by_id(&grant.key_id).unwrap_or_default();
        let Err(refusal) = passcodes.check(&key, &grant.room, self.client_ip, given, now) else {
            return Ok(());
        };
        self.refused(
            &token_holder(&grant.user, grant.role),
            Action::PasscodeFailure,
            refusal.audit_reason(),
            Some(&grant.room),
        );
        self.state.stats.refused(JoinRefusal::Passcode);
        Err(match refusal {
            Refusal::CoolingDown(left)
            | Refusal::Failed {
                cool_down: Some(left),
                ..
            } => cool_down(left),
            Refusal::Failed { given: true, .. } => ProtocolError::new(
                ErrorCode::PasscodeRefused,
                "that passcode is not this meeting's; check the one the clinic sent you",
            ),
            Refusal::Failed { given: false, .. } => ProtocolError::new(
                ErrorCode::PasscodeRefused,
                "this meeting needs its passcode (the clinic sent it to you with the link)",
            ),
        })
    }

    fn fatal(&mut self, error: ProtocolError) -> Flow {
        let reason = format!("{:?}", error.code);
        self.outbox.push(error.to_message(true));
        Flow::Close(CLOSE_POLICY, reason)
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        let message = match protocol::parse(text) {
            Ok(message) => message,
            Err(e) => return self.on_error(e),
        };
        let Some(id) = self.joined else {
            return self.before_join(message).await;
        };
        if !self.pace.allow() {
            return self.fatal(ProtocolError::new(
                ErrorCode::TooManyMessages,
                format!(
                    "more than {} messages a second; this connection is closed",
                    crate::limits::MESSAGES_PER_SECOND
                ),
            ));
        }
        match message {
            ClientMessage::Join { .. } => self.on_error(ProtocolError::new(
                ErrorCode::AlreadyJoined,
                "this connection has already joined; open a new one for another room",
            )),
            ClientMessage::Leave { .. } => Flow::Close(CLOSE_NORMAL, "left".into()),
            ClientMessage::Unmute { .. } => {
                self.state.sfu.tell(Command::Unmute { id }).await;
                Flow::Continue
            }
            ClientMessage::View {
                participant_id,
                quality,
                ..
            } => {
                // An id that names nobody is ignored: a tile can outlive its participant.
                if let Some(source) = participant_id
                    .strip_prefix('p')
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    let cap = quality.layer_cap();
                    let source = ParticipantId(source);
                    self.state.sfu.tell(Command::View { id, source, cap }).await;
                }
                Flow::Continue
            }
            ClientMessage::Quality(report) => {
                match report.checked() {
                    Ok(report) if self.reports.allow() => self.state.stats.record_quality(&report),
                    Ok(_) => {}
                    Err(e) => return self.on_error(e),
                }
                Flow::Continue
            }
            message @ (ClientMessage::Offer { .. }
            | ClientMessage::Answer { .. }
            | ClientMessage::Candidate { .. }
            | ClientMessage::Share { .. }) => self.negotiate(id, message).await,
            message => self.control(id, message).await,
        }
    }

    /// Before a join, a join (or a connectivity check) is all a client may send.
    async fn before_join(&mut self, message: ClientMessage) -> Flow {
        if let ClientMessage::Probe {
            room, token, sdp, ..
        } = message
        {
            return self.probe(room, token, sdp).await;
        }
        if self.probes > 0 {
            // A join is placed on its room's pod by its connection's first message.
            return self.fatal(ProtocolError::new(
                ErrorCode::JoinFirst,
                "this connection checked the network; open a new connection to join",
            ));
        }
        let ClientMessage::Join {
            room,
            token,
            display_name,
            passcode,
            ..
        } = message
        else {
            return self.on_error(ProtocolError::new(
                ErrorCode::JoinFirst,
                "send a join message with your token first",
            ));
        };
        match protocol::display_name(display_name.as_deref()) {
            Ok(name) => self.join(room, token, name, passcode).await,
            Err(e) => self.on_error(e),
        }
    }

    /// Media negotiation: offers, answers, candidates, a screen share's track.
    async fn negotiate(&mut self, id: ParticipantId, message: ClientMessage) -> Flow {
        let sfu = &self.state.sfu;
        let result = match message {
            ClientMessage::Offer { sdp, .. } => sfu
                .ask(|reply| Command::Offer { id, sdp, reply })
                .await
                .map(|sdp| {
                    self.outbox.push(ServerMessage::Answer {
                        v: PROTOCOL_VERSION,
                        sdp,
                    })
                }),
            ClientMessage::Answer { sdp, .. } => {
                sfu.ask(|reply| Command::Answer { id, sdp, reply }).await
            }
            ClientMessage::Candidate { candidate, .. } => {
                sfu.ask(|reply| Command::Candidate {
                    id,
                    candidate,
                    reply,
                })
                .await
            }
            ClientMessage::Share { mid, .. } => {
                sfu.ask(|reply| Command::Share { id, mid, reply }).await
            }
            // on_text sends nothing else here.
            _ => Ok(()),
        };
        match result {
            Ok(()) => Flow::Continue,
            Err(e) => self.on_error(e),
        }
    }

    /// A host's controls: admit, deny, expel, mute, stop a share, lock, end.
    async fn control(&mut self, id: ParticipantId, message: ClientMessage) -> Flow {
        match message {
            ClientMessage::Admit { participant_id, .. } => {
                self.host_action(id, Action::Admit, &participant_id, HostAction::Admit)
                    .await
            }
            ClientMessage::Deny { participant_id, .. } => {
                self.host_action(id, Action::Deny, &participant_id, HostAction::Deny)
                    .await
            }
            ClientMessage::Expel { participant_id, .. } => {
                self.host_action(id, Action::Expel, &participant_id, HostAction::Expel)
                    .await
            }
            ClientMessage::Mute {
                participant_id: Some(target),
                ..
            } => {
                self.host_action(id, Action::Mute, &target, |t| HostAction::Mute(Some(t)))
                    .await
            }
            ClientMessage::Mute { .. } => self.host(id, Action::Mute, HostAction::Mute(None)).await,
            ClientMessage::Lock { locked, .. } => {
                self.host(id, Action::LockMeeting, HostAction::Lock(locked))
                    .await
            }
            ClientMessage::End { .. } => self.host(id, Action::MeetingEnd, HostAction::End).await,
            ClientMessage::StopShare { participant_id, .. } => {
                self.host_action(
                    id,
                    Action::StopShare,
                    &participant_id,
                    HostAction::StopShare,
                )
                .await
            }
            // on_text sends nothing else here.
            _ => Flow::Continue,
        }
    }

    /// A host action on another participant, named by the id the node gave them.
    async fn host_action(
        &mut self,
        id: ParticipantId,
        action: Action,
        target: &str,
        make: impl FnOnce(ParticipantId) -> HostAction,
    ) -> Flow {
        match target.strip_prefix('p').and_then(|n| n.parse::<u64>().ok()) {
            Some(n) => self.host(id, action, make(ParticipantId(n))).await,
            None => self.on_error(ProtocolError::new(
                ErrorCode::NoSuchParticipant,
                "participantId is not one the node gave out",
            )),
        }
    }

    /// Asks the media loop to carry out a host action; audited either way.
    async fn host(&mut self, id: ParticipantId, action: Action, host_action: HostAction) -> Flow {
        let result = self
            .state
            .sfu
            .ask(|reply| Command::Host {
                id,
                action: host_action,
                reply,
            })
            .await;
        match result {
            Ok(memory) => {
                self.audit(action, None);
                self.remember(memory);
                Flow::Continue
            }
            Err(e) => {
                self.audit(action, Some(e.code.as_str()));
                self.on_error(e)
            }
        }
    }

    /// With placement, the meeting's memory (lock, expelled, admitted, ended) goes into its
    /// room's lease, for the pod that holds the room next; written in the background, the host
    /// does not wait for the API server.
    fn remember(&self, memory: crate::meeting::Memory) {
        if let (Some(placement), Some((_, room))) = (&self.state.placement, &self.who) {
            placement.remember(room, memory);
        }
    }

    /// A draining node still takes joins into its meetings in progress (a participant whose
    /// connection dropped comes back to their call), and no new ones.
    async fn hosted_here(&self, room: &str) -> bool {
        self.state
            .sfu
            .rooms()
            .await
            .is_ok_and(|rooms| rooms.iter().any(|r| r == room))
    }

    #[tracing::instrument(name = "join", skip_all, fields(tenant = %self.state.tenant))]
    async fn join(
        &mut self,
        room: String,
        token: String,
        name: Option<DisplayName>,
        passcode: Option<String>,
    ) -> Flow {
        if let Err(e) = self.available(&room).await {
            return self.fatal(e);
        }
        if let Err(e) = self.attempt_allowed() {
            return self.fatal(e);
        }
        let (grant, now) = match self.admissible(&token, &room) {
            Ok(admissible) => admissible,
            Err(e) => return self.fatal(e),
        };
        // An emergency link goes past the passcode (and the waiting room, and the lock) for
        // its clinician only, while its grant is active; everyone else's checks stay.
        let checked = match &grant.break_glass {
            Some(break_glass) => self.break_glass_allows(&grant, break_glass),
            None => self.check_passcode(&grant, passcode.as_deref()),
        };
        if let Err(e) = checked {
            return self.fatal(e);
        }
        self.enter(grant, name, now).await
    }

    /// Whether the active BreakGlass an emergency link names lets this clinician into this
    /// visit now (its lease, kept by the operator); a refusal is counted and audited.
    fn break_glass_allows(&self, grant: &Grant, break_glass: &str) -> Result<(), ProtocolError> {
        let active = grant.role == Role::Host
            && self
                .state
                .placement
                .as_ref()
                .is_some_and(|p| p.break_glass_lets_in(break_glass, &grant.user, &grant.room));
        if active {
            return Ok(());
        }
        self.state.stats.refused(JoinRefusal::BreakGlassInactive);
        let _ = self.state.audit.try_record_break_glass(
            &token_holder(&grant.user, grant.role),
            Action::BreakGlassJoin,
            Some(JoinRefusal::BreakGlassInactive.code()),
            (&grant.room, break_glass),
            Some(self.client_ip),
        );
        tracing::info!(tenant = %self.state.tenant, "emergency link refused: its grant is not active");
        Err(ProtocolError::break_glass_inactive())
    }

    /// A joined emergency link whose grant ended (expired early, revoked): its clinician
    /// leaves the visit, told why, on the record.
    async fn check_break_glass(&mut self) -> Flow {
        let (Some(break_glass), Some((who, room)), Some(id)) =
            (&self.break_glass, &self.who, self.joined)
        else {
            return Flow::Continue;
        };
        let user = who.user.clone().unwrap_or_default();
        let active = self
            .state
            .placement
            .as_ref()
            .is_some_and(|p| p.break_glass_lets_in(break_glass, &user, room));
        if active {
            return Flow::Continue;
        }
        let _ = self.state.audit.try_record_break_glass(
            who,
            Action::Leave,
            Some(JoinRefusal::BreakGlassInactive.code()),
            (room, break_glass),
            Some(self.client_ip),
        );
        tracing::info!(tenant = %self.state.tenant, "emergency access ended: its clinician left the visit");
        self.joined = None;
        self.state
            .sfu
            .tell(Command::Leave {
                id,
                reason: LeaveReason::Left,
            })
            .await;
        self.fatal(ProtocolError::break_glass_inactive())
    }

    /// The link's grant, and the time it was checked at, when its token verifies and its
    /// visit is neither cancelled nor replaced; a refusal is counted and audited.
    fn admissible(&self, token: &str, room: &str) -> Result<(Grant, u64), ProtocolError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let grant = self.verify(token, room, now)?;
        self.visit_allows(&grant)?;
        Ok((grant, now))
    }

    /// A pre-call connectivity check's offer: answered with the node's candidates (and the
    /// relay) when the link would be let in now. It joins no room and needs no passcode: it
    /// shows the network, not the visit. The first offer of a connection counts as a join
    /// attempt of its network.
    async fn probe(&mut self, room: String, token: String, sdp: String) -> Flow {
        self.probes += 1;
        if self.probes > PROBES_PER_CONNECTION {
            return self.fatal(ProtocolError::new(
                ErrorCode::TooManyMessages,
                format!(
                    "a connection check tries at most {PROBES_PER_CONNECTION} paths; open a new \
                     connection to check again"
                ),
            ));
        }
        if self.probes == 1
            && let Err(e) = self.attempt_allowed()
        {
            return self.fatal(e);
        }
        let (grant, now) = match self.admissible(&token, &room) {
            Ok(admissible) => admissible,
            Err(e) => return self.fatal(e),
        };
        match self
            .state
            .sfu
            .ask(|reply| Command::Probe { sdp, reply })
            .await
        {
            Ok(sdp) => {
                let expires = grant.expires_at.min(now + PROBE_CREDENTIAL_SECS);
                let ice_servers = self
                    .state
                    .relay
                    .iter()
                    .map(|relay| relay.ice_server(expires, &format!("check-{}", self.probes)))
                    .collect();
                self.outbox.push(ServerMessage::ProbeAnswer {
                    v: PROTOCOL_VERSION,
                    sdp,
                    ice_servers,
                });
                Flow::Continue
            }
            Err(e) => self.on_error(e),
        }
    }

    /// Whether this node takes the join at all: not while it shuts down (unless it holds the
    /// room), not without a media address, not while audit cannot keep up.
    async fn available(&self, room: &str) -> Result<(), ProtocolError> {
        if *self.state.shutdown.borrow() && !self.hosted_here(room).await {
            self.state.stats.refused(JoinRefusal::NotAvailable);
            return Err(ProtocolError::new(
                ErrorCode::NotAvailable,
                "the media node is shutting down; reconnect to join through another node",
            ));
        }
        if self.state.media_address.borrow().is_none() {
            self.state.stats.refused(JoinRefusal::NotAvailable);
            return Err(ProtocolError::new(
                ErrorCode::NotAvailable,
                "this media node has no public media address yet (the operator gives it one \
                 once its media Service has an address); reconnect to join through another node",
            ));
        }
        if self.state.audit.refuses_joins() {
            self.state.stats.refused(JoinRefusal::AuditUnavailable);
            tracing::warn!(tenant = %self.state.tenant, "join refused: audit records cannot be kept or delivered");
            return Err(audit_unavailable());
        }
        Ok(())
    }

    /// Join attempts per client network, before the token is read: a flood of bad tokens
    /// costs neither signature checks nor one audit record each.
    fn attempt_allowed(&mut self) -> Result<(), ProtocolError> {
        if std::mem::take(&mut self.attempt_counted) {
            return Ok(());
        }
        let Err(wait) = self.state.guards.joins.allow(self.client_ip) else {
            return Ok(());
        };
        self.state.stats.refused(JoinRefusal::RateLimited);
        self.refused(&Who::UNAUTHENTICATED, Action::Join, "rate-limited", None);
        Err(ProtocolError::new(
            ErrorCode::TooManyAttempts,
            format!(
                "too many join attempts from your network; try again in {} s",
                wait.as_secs().max(1)
            ),
        ))
    }

    /// A refused attempt's audit record: sealed now, or counted into one sealed later.
    fn refused(&self, who: &Who, action: Action, reason: &'static str, room: Option<&str>) {
        super::refusals::record(
            &self.state.guards,
            &self.state.audit,
            super::refusals::Refused {
                who,
                action,
                reason,
                room,
                client: self.client_ip,
            },
        );
    }

    /// The join token, verified; a refusal is counted and audited.
    fn verify(&self, token: &str, room: &str, now: u64) -> Result<Grant, ProtocolError> {
        self.state.keys.verify(token, room, now).map_err(|e| {
            let (reason, code) = match e {
                TokenError::Expired => (JoinRefusal::TokenExpired, ErrorCode::TokenExpired),
                TokenError::NotOpenYet { .. } => {
                    (JoinRefusal::TokenNotOpenYet, ErrorCode::VisitNotOpenYet)
                }
                TokenError::WrongTenant => (JoinRefusal::TokenWrongTenant, ErrorCode::TokenRefused),
                TokenError::WrongRoom => (JoinRefusal::TokenWrongRoom, ErrorCode::TokenRefused),
                TokenError::Forged => (JoinRefusal::TokenForged, ErrorCode::TokenRefused),
                TokenError::NotPseudonymous => {
                    (JoinRefusal::TokenNotPseudonymous, ErrorCode::TokenRefused)
                }
                _ => (JoinRefusal::TokenInvalid, ErrorCode::TokenRefused),
            };
            self.state.stats.refused(reason);
            self.refused(
                &Who::UNAUTHENTICATED,
                Action::TokenRefused,
                reason.code(),
                Some(room),
            );
            tracing::info!(tenant = %self.state.tenant, reason = reason.label(), "join refused");
            ProtocolError::new(code, e.to_string())
        })
    }

    /// A cancelled visit's links, and a reissued visit's older links, are refused on every pod
    /// (with placement: visit leases every pod watches); counted and audited like a refused
    /// token.
    fn visit_allows(&self, grant: &Grant) -> Result<(), ProtocolError> {
        let refusal = self
            .state
            .placement
            .as_ref()
            .and_then(|p| p.visit(&grant.room))
            // An emergency link is of no issue of the visit's links: only a cancellation
            // refuses it.
            .and_then(|visit| match grant.break_glass {
                Some(_) => visit.refuses(u32::MAX),
                None => visit.refuses(grant.generation),
            });
        let (reason, error) = match refusal {
            None => return Ok(()),
            Some(VisitRefusal::Cancelled) => (
                JoinRefusal::VisitCancelled,
                ProtocolError::visit_cancelled(),
            ),
            Some(VisitRefusal::Replaced) => (
                JoinRefusal::LinkReplaced,
                ProtocolError::new(
                    ErrorCode::LinkReplaced,
                    "this link was replaced by a newer one; please use the latest link the clinic sent you",
                ),
            ),
        };
        self.state.stats.refused(reason);
        self.refused(
            &Who::UNAUTHENTICATED,
            Action::TokenRefused,
            reason.code(),
            Some(&grant.room),
        );
        tracing::info!(tenant = %self.state.tenant, reason = reason.label(), "join refused");
        Err(error)
    }

    /// Into the meeting: joined, or in its waiting room; or refused by the meeting.
    async fn enter(&mut self, grant: Grant, name: Option<DisplayName>, now: u64) -> Flow {
        let role = grant.role;
        let events = self.events_tx.clone();
        // A room placed here again (its pod died, or moved) starts from what it remembered.
        let remembered = match &self.state.placement {
            Some(placement) => placement.memory(&grant.room),
            None => None,
        };
        // The token's expiry, on the media loop's clock: it ejects its holder then.
        let token_expires =
            std::time::Instant::now() + Duration::from_secs(grant.expires_at.saturating_sub(now));
        match self
            .state
            .sfu
            .ask(|reply| Command::Join {
                room: grant.room.clone(),
                role,
                user: grant.user.clone(),
                token_expires,
                display_name: name,
                remembered,
                entry: match grant.break_glass {
                    Some(_) => crate::meeting::Entry::Emergency,
                    None => crate::meeting::Entry::Link,
                },
                events,
                reply,
            })
            .await
        {
            Ok(joined) => {
                self.joined = Some(joined.id);
                self.who = Some((token_holder(&grant.user, role), grant.room.clone()));
                self.break_glass = grant.break_glass.clone();
                // No visit without its record: a join that cannot be audited is undone.
                if let Err(e) = self.try_audit_entry(joined.admitted) {
                    return self.unrecorded(joined.id, e).await;
                }
                self.token_expires_at = grant.expires_at;
                if joined.admitted {
                    let message = self.with_relay(ServerMessage::Joined {
                        v: PROTOCOL_VERSION,
                        participant_id: joined.id.to_string(),
                        room: grant.room,
                        role,
                        participants: joined.participants,
                        end_to_end: self.state.end_to_end,
                        ice_servers: Vec::new(),
                    });
                    self.outbox.push(message);
                } else {
                    self.waiting = true;
                    self.outbox.push(ServerMessage::Waiting {
                        v: PROTOCOL_VERSION,
                        participant_id: joined.id.to_string(),
                    });
                }
                Flow::Continue
            }
            Err(e) => {
                if e.code == ErrorCode::RoomFull {
                    self.state.stats.refused(JoinRefusal::RoomFull);
                }
                self.state.audit.record(
                    &token_holder(&grant.user, role),
                    Action::Join,
                    Some(e.code.as_str()),
                    Some(&grant.room),
                    Some(self.client_ip),
                );
                self.fatal(e)
            }
        }
    }
}
