//! The node's audit records: joins, leaves and refusals, sealed into the tenant's chain
//! (bedside-audit), written as JSON lines to the stdout sink (or a file in tests) and appended
//! to each network sink's disk-backed spool, from which [`syslog`] and [`webhook`] deliver them.
//!
//! The chain survives restarts: the last record is kept in the buffer directory and the next
//! process continues its sequence. [`webhook`] delivers to HTTPS receivers.

pub mod health;
pub mod spool;
pub mod syslog;
pub mod webhook;

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use bedside_audit::event::{Action, Actor, ActorRole, AuthMethod, OpaqueId, Outcome, Place};
use bedside_audit::{AuditEvent, AuditKey, Chain, Record};

use self::spool::Spool;

use crate::error::NodeError;
use crate::token::Role;

pub struct Auditor {
    inner: Mutex<Inner>,
    /// Spools, outside the lock, for the backlog check on every join.
    spools: Vec<Arc<Spool>>,
    /// Beyond this many undelivered bytes for any sink, joins are refused.
    buffer_limit: u64,
    tenant: OpaqueId,
    node: OpaqueId,
}

struct Inner {
    chain: Chain,
    out: Option<Box<dyn Write + Send>>,
    spools: Vec<(Arc<Spool>, Arc<Notify>)>,
    /// Holds the last record, so a restarted node continues the chain.
    tail_file: Option<PathBuf>,
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
    pub role: Option<Role>,
}

impl Auditor {
    pub fn new(
        key: &[u8],
        tenant: &str,
        node: &str,
        out: Option<Box<dyn Write + Send>>,
        spools: Vec<(Arc<Spool>, Arc<Notify>)>,
        tail_file: Option<PathBuf>,
        buffer_limit: u64,
    ) -> Result<Self, NodeError> {
        let key = AuditKey::new(key).map_err(|e| NodeError::Audit(e.to_string()))?;
        let id = |what: &str, s: &str| {
            OpaqueId::new(s).map_err(|e| NodeError::Audit(format!("{what}: {e}")))
        };
        let tail = tail_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|line| {
                let record: Record = serde_json::from_str(line.trim()).ok()?;
                Some((record, line.trim().to_string()))
            });
        let chain = Chain::new(key, tail.as_ref().map(|(r, l)| (r, l.as_str())));
        Ok(Self {
            spools: spools.iter().map(|(s, _)| s.clone()).collect(),
            buffer_limit,
            inner: Mutex::new(Inner {
                chain,
                out,
                spools,
                tail_file,
            }),
            tenant: id("tenant name", tenant)?,
            node: id("node name", node)?,
        })
    }

    /// True when some sink's undelivered backlog is over the limit: HIPAA prefers no service
    /// to unaudited service, so the node then refuses new joins until the sink catches up.
    pub fn backlog_exceeded(&self) -> bool {
        self.spools
            .iter()
            .any(|s| s.depth(s.delivered()) > self.buffer_limit)
    }

    /// Seals and writes one record. A failed write is logged: the sink's health is issue 6.
    pub fn record(
        &self,
        who: &Who,
        action: Action,
        refusal: Option<&str>,
        room: Option<&str>,
        client_ip: Option<IpAddr>,
    ) {
        let event = AuditEvent {
            tenant: self.tenant.clone(),
            actor: Actor {
                // Ids that are not opaque are left out rather than recorded: never free text.
                user: who.user.as_deref().and_then(|u| OpaqueId::new(u).ok()),
                role: who.role.map(|r| match r {
                    Role::Host => ActorRole::Host,
                    Role::Participant => ActorRole::Participant,
                    Role::Observer => ActorRole::Observer,
                }),
                auth: if who.user.is_some() {
                    AuthMethod::JoinToken
                } else {
                    AuthMethod::None
                },
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
        let Ok(mut inner) = self.inner.lock() else {
            tracing::error!("audit chain lock poisoned; record lost");
            return;
        };
        let line = match inner.chain.append(event, jiff::Timestamp::now()) {
            Ok((_, line)) => line,
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
            let tmp = tail.with_extension("tmp");
            if let Err(e) = std::fs::write(&tmp, &line).and_then(|()| std::fs::rename(&tmp, tail)) {
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
