//! The node's audit records: joins, leaves and refusals, sealed into the tenant's chain
//! (bedside-audit) and written as JSON lines to the stdout sink (or a file in tests).
//!
//! Delivery to syslog and webhook sinks with a disk-backed buffer is issue 6's next step; until
//! then a node configured with them says so at start-up.

use std::io::Write;
use std::net::IpAddr;
use std::sync::Mutex;

use bedside_audit::event::{Action, Actor, ActorRole, AuthMethod, OpaqueId, Outcome, Place};
use bedside_audit::{AuditEvent, AuditKey, Chain};

use crate::error::NodeError;
use crate::token::Role;

pub struct Auditor {
    inner: Mutex<Inner>,
    tenant: OpaqueId,
    node: OpaqueId,
}

struct Inner {
    chain: Chain,
    out: Box<dyn Write + Send>,
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
        out: Box<dyn Write + Send>,
    ) -> Result<Self, NodeError> {
        let key = AuditKey::new(key).map_err(|e| NodeError::Audit(e.to_string()))?;
        let id = |what: &str, s: &str| {
            OpaqueId::new(s).map_err(|e| NodeError::Audit(format!("{what}: {e}")))
        };
        Ok(Self {
            inner: Mutex::new(Inner {
                chain: Chain::new(key, None),
                out,
            }),
            tenant: id("tenant name", tenant)?,
            node: id("node name", node)?,
        })
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
        match inner.chain.append(event, jiff::Timestamp::now()) {
            Ok((_, line)) => {
                let written = writeln!(inner.out, "{line}").and_then(|()| inner.out.flush());
                if let Err(e) = written {
                    tracing::error!(error = %e, "audit record could not be written");
                }
            }
            Err(e) => tracing::error!(error = %e, "audit record could not be sealed"),
        }
    }
}
