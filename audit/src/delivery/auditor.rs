//! The auditor: seals events into one chain (one per media node or operator replica) and
//! hands each record to every sink: the stdout sink's writer, and each network sink's
//! disk-backed buffer.
//!
//! The chain survives restarts: the last record is kept in the buffer directory and the next
//! process continues its sequence. A checkpoint is sealed every interval in which the chain
//! grew, and a closing record when the process stops cleanly, so a verifier can tell a chain
//! that ended from one that was cut.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::DeliveryError;
use super::health::SinkTransition;
use super::spool::Spool;
use crate::event::{
    Action, Actor, ActorRole, AuthMethod, BufferFullPolicy, OpaqueId, Outcome, Place,
};
use crate::{AuditEvent, AuditKey, Chain, Record};

pub struct Auditor {
    inner: Mutex<Inner>,
    /// Spools, outside the lock, for the backlog check on every join.
    spools: Vec<Arc<Spool>>,
    /// Undelivered bytes per sink at which the tenant's policy applies.
    buffer_limit: u64,
    policy: BufferFullPolicy,
    tenant: OpaqueId,
    node: OpaqueId,
    /// The sinks' delivery tasks: they end with the auditor.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for Auditor {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.lock() {
            for task in tasks.iter() {
                task.abort();
            }
        }
    }
}

struct Inner {
    chain: Chain,
    out: Option<Box<dyn Write + Send>>,
    spools: Vec<(Arc<Spool>, Arc<Notify>)>,
    /// Holds the last record, so a restarted node continues the chain: rewritten in place
    /// (one write at offset 0; only its first line counts), no rename per record.
    tail_file: Option<std::fs::File>,
    /// Records sealed since the last checkpoint.
    since_checkpoint: u64,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("tenant", &self.tenant)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Who a record is about.
#[derive(Debug, Clone)]
pub struct Who {
    pub user: Option<String>,
    pub role: Option<ActorRole>,
    pub auth: AuthMethod,
}

impl Who {
    /// The node itself: checkpoints, sink failures.
    pub const NODE: Who = Who::UNAUTHENTICATED;

    /// A client that has not proven who it is yet (a refused join).
    pub const UNAUTHENTICATED: Who = Who {
        user: None,
        role: None,
        auth: AuthMethod::None,
    };
}

/// Whether the node's audit buffers let it take joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferState {
    Ok,
    /// Some sink's buffer is past its size, and the tenant keeps serving.
    FullServing,
    /// Joins are refused until the sinks catch up.
    FullRefusing,
}

impl Auditor {
    pub fn new(
        key: &[u8],
        tenant: &str,
        node: &str,
        out: Option<Box<dyn Write + Send>>,
        spools: Vec<(Arc<Spool>, Arc<Notify>)>,
        tail_file: Option<PathBuf>,
        (buffer_limit, policy): (u64, BufferFullPolicy),
    ) -> Result<Self, DeliveryError> {
        let key = AuditKey::new(key).map_err(|e| DeliveryError::setup("the audit key", e))?;
        let id = |what: &str, s: &str| OpaqueId::new(s).map_err(|e| DeliveryError::setup(what, e));
        // The chain goes on after the newest record this node wrote anywhere: a record reaches
        // the buffers before the tail file, so a node killed between the two resumes from the
        // buffer, and never seals a second, different record under the same sequence number.
        let saved = tail_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|text| text.lines().next().map(str::to_string));
        let buffered = spools
            .iter()
            .filter_map(|(s, _)| s.last_line().ok().flatten());
        let tail = saved
            .into_iter()
            .chain(buffered)
            .filter_map(|line| {
                let record: Record = serde_json::from_str(line.trim()).ok()?;
                Some((record, line.trim().to_string()))
            })
            .max_by_key(|(record, _)| record.seq);
        let chain = Chain::new(key, tail.as_ref().map(|(r, l)| (r, l.as_str())));
        Ok(Self {
            spools: spools.iter().map(|(s, _)| s.clone()).collect(),
            buffer_limit,
            policy,
            inner: Mutex::new(Inner {
                chain,
                out,
                spools,
                tail_file: match tail_file {
                    Some(path) => Some(
                        std::fs::OpenOptions::new()
                            .create(true)
                            .truncate(false)
                            .write(true)
                            .open(&path)
                            .map_err(|source| DeliveryError::File {
                                what: "the audit chain's tail file",
                                path,
                                source,
                            })?,
                    ),
                    None => None,
                },
                since_checkpoint: 0,
            }),
            tenant: id("tenant name", tenant)?,
            node: id("node name", node)?,
            tasks: Mutex::default(),
        })
    }

    pub(super) fn spools(&self) -> &[Arc<Spool>] {
        &self.spools
    }

    pub(super) fn own_tasks(&self, tasks: Vec<tokio::task::AbortHandle>) {
        if let Ok(mut owned) = self.tasks.lock() {
            owned.extend(tasks);
        }
    }

    /// Where the fullest sink's buffer stands against the tenant's policy. Under RefuseJoins,
    /// a full buffer refuses joins: HIPAA prefers no service to unaudited service. Under
    /// KeepServing, joins go on up to twice the size, past which records would be lost.
    pub fn buffer_state(&self) -> BufferState {
        self.state_at(self.depths().into_iter().max().unwrap_or(0))
    }

    /// Where the fullest sink's buffer, `deepest` bytes, stands against the tenant's policy
    /// (for a caller that already read the [`depths`](Self::depths)).
    pub fn state_at(&self, deepest: u64) -> BufferState {
        match self.policy {
            _ if deepest <= self.buffer_limit => BufferState::Ok,
            BufferFullPolicy::KeepServing if deepest <= self.buffer_limit.saturating_mul(2) => {
                BufferState::FullServing
            }
            _ => BufferState::FullRefusing,
        }
    }

    /// Each network sink's undelivered bytes now, in the order the sinks were opened (the
    /// delivery tasks only see them when they try to deliver, which a long back-off delays).
    pub fn depths(&self) -> Vec<u64> {
        self.spools.iter().map(|s| s.depth(s.delivered())).collect()
    }

    /// True when joins must wait for the sinks to catch up.
    pub fn refuses_joins(&self) -> bool {
        self.buffer_state() == BufferState::FullRefusing
    }

    /// Seals a checkpoint if the chain grew since the last one.
    pub fn checkpoint(&self) {
        let grew = self
            .inner
            .lock()
            .map(|inner| inner.since_checkpoint > 0)
            .unwrap_or(false);
        if grew {
            self.record(&Who::NODE, Action::Checkpoint, None, None, None);
        }
    }

    /// Seals the chain's last record: the node is stopping cleanly.
    pub fn close(&self) {
        self.record(&Who::NODE, Action::ChainClosed, None, None, None);
    }

    /// A sink went down or came back.
    pub fn sink_transition(&self, t: &SinkTransition) {
        match t.failure {
            Some(failure) => {
                let reason = format!("{}-{}-{}", t.kind, t.sink, failure.label());
                self.record(&Who::NODE, Action::SinkFailure, Some(&reason), None, None);
            }
            None => self.record(&Who::NODE, Action::SinkRecovered, None, None, None),
        }
    }

    /// True when the chain has nothing left to do: every record is covered by a checkpoint (or
    /// the chain's close) and every sink has taken every record.
    pub fn settled(&self) -> bool {
        let sealed = self
            .inner
            .lock()
            .map(|inner| inner.since_checkpoint == 0)
            .unwrap_or(false);
        sealed && self.drained()
    }

    /// True once every sink has taken every record.
    pub fn drained(&self) -> bool {
        self.spools.iter().all(|s| s.depth(s.delivered()) == 0)
    }

    /// Seals and writes one record. A failed write is logged and counted in the sink's health.
    pub fn record(
        &self,
        who: &Who,
        action: Action,
        refusal: Option<&str>,
        room: Option<&str>,
        client_ip: Option<IpAddr>,
    ) {
        self.record_repeated(who, action, refusal, room, client_ip, None);
    }

    /// Like [`record`](Self::record), for a record that stands for `repeated` like it.
    pub fn record_repeated(
        &self,
        who: &Who,
        action: Action,
        refusal: Option<&str>,
        room: Option<&str>,
        client_ip: Option<IpAddr>,
        repeated: Option<u32>,
    ) {
        let mut event = AuditEvent {
            tenant: self.tenant.clone(),
            actor: Actor {
                // Ids that are not opaque are left out rather than recorded: never free text.
                user: who.user.as_deref().and_then(|u| OpaqueId::new(u).ok()),
                role: who.role,
                auth: who.auth,
            },
            action,
            outcome: match refusal.and_then(|r| OpaqueId::new(r).ok()) {
                Some(reason) => Outcome::failure(reason),
                None => Outcome::success(),
            },
            place: Place {
                node: self.node.clone(),
                room: room.and_then(|r| OpaqueId::new(r).ok()),
                client_ip,
            },
        };
        event.outcome.repeated = repeated;
        let Ok(mut inner) = self.inner.lock() else {
            tracing::error!("audit chain lock poisoned; record lost");
            return;
        };
        let line = match inner.chain.append(event, jiff::Timestamp::now()) {
            Ok((_, line)) => {
                inner.since_checkpoint = match action {
                    Action::Checkpoint | Action::ChainClosed => 0,
                    _ => inner.since_checkpoint + 1,
                };
                line
            }
            Err(e) => {
                tracing::error!(error = %e, "audit record could not be sealed");
                return;
            }
        };
        // Spools first: once there, a record survives a sink outage and a node restart.
        for (spool, wake) in &inner.spools {
            if let Err(e) = spool.append(&line) {
                tracing::error!(error = %e, "audit record could not be buffered for a sink");
            }
            wake.notify_one();
        }
        if let Some(tail) = &inner.tail_file {
            use std::os::unix::fs::FileExt;
            let mut text = Vec::with_capacity(line.len() + 1);
            text.extend_from_slice(line.as_bytes());
            text.push(b'\n');
            if let Err(e) = tail.write_all_at(&text, 0) {
                tracing::error!(error = %e, "the audit chain's tail could not be saved");
            }
        }
        if let Some(out) = inner.out.as_mut() {
            let written = writeln!(out, "{line}").and_then(|()| out.flush());
            if let Err(e) = written {
                tracing::error!(error = %e, "audit record could not be written");
            }
        }
    }
}
