//! `/evidence` on the metrics port: what this node enforces and what it has seen, for the
//! operator's live compliance report (the wire type is `bedside_audit::evidence`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bedside_audit::delivery::{AuditHealthReport, Auditor};
use bedside_audit::evidence::{ChainCheck, NodeEvidence};
use bedside_crds::node_config::MediaNodeConfig;
use prometheus::Registry;

use crate::crypto_policy::SrtpPolicy;

/// The check at rest reads the disk: at most this often, however often it is asked.
const CHECK_EVERY: Duration = Duration::from_secs(30);

/// What `/evidence` answers from: the config the node runs, its metrics, its chain.
#[derive(Clone, Debug)]
pub struct EvidenceSource {
    registry: Registry,
    audit: Arc<Auditor>,
    idle_timeout_seconds: u64,
    media_encryption: &'static str,
    srtp_allowed: Vec<String>,
    last_check: Arc<Mutex<Option<(Instant, ChainCheck)>>>,
}

impl EvidenceSource {
    pub fn new(
        config: &MediaNodeConfig,
        policy: SrtpPolicy,
        registry: Registry,
        audit: Arc<Auditor>,
    ) -> Self {
        let idle: Duration = config.meetings.idle_timeout.into();
        Self {
            registry,
            audit,
            idle_timeout_seconds: idle.as_secs(),
            media_encryption: config.meetings.media_encryption.as_str(),
            srtp_allowed: policy.profiles().iter().map(|p| (*p).to_string()).collect(),
            last_check: Arc::default(),
        }
    }

    /// The evidence now. Reads the disk (the chain's check at rest): call off the runtime.
    pub fn evidence(&self, audit: AuditHealthReport) -> NodeEvidence {
        NodeEvidence {
            audit,
            chain: self.chain(),
            srtp_sessions: self.srtp_sessions(),
            srtp_allowed: self.srtp_allowed.clone(),
            idle_timeout_seconds: self.idle_timeout_seconds,
            media_encryption: self.media_encryption.to_string(),
        }
    }

    fn chain(&self) -> ChainCheck {
        let Ok(mut last) = self.last_check.lock() else {
            return self.audit.check_at_rest();
        };
        match last.as_ref() {
            Some((at, check)) if at.elapsed() < CHECK_EVERY => check.clone(),
            _ => {
                let check = self.audit.check_at_rest();
                *last = Some((Instant::now(), check.clone()));
                check
            }
        }
    }

    /// `bedside_media_srtp_sessions_total` by profile, read from the node's own registry.
    fn srtp_sessions(&self) -> BTreeMap<String, u64> {
        let mut sessions = BTreeMap::new();
        let families = self.registry.gather();
        let family = families
            .iter()
            .find(|f| f.name() == "bedside_media_srtp_sessions_total");
        for metric in family.map(|f| f.get_metric()).unwrap_or_default() {
            let profile = metric
                .get_label()
                .iter()
                .find(|l| l.name() == "profile")
                .map(|l| l.value().to_string());
            if let Some(profile) = profile {
                *sessions.entry(profile).or_default() += metric.get_counter().get_value() as u64;
            }
        }
        sessions
    }
}
