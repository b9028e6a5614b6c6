//! The operator's own audit records: a tenant provisioned, its settings changed, an edit of
//! its objects reverted, its BAA state changed, the tenant deprovisioned. They go to the
//! tenant's own sinks, sealed with the tenant's audit key into a chain named after this
//! operator replica, through the same disk-backed delivery the media nodes use.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bedside_audit::delivery::{self, AuditMetrics, Auditor, NetworkSink, Who};
use bedside_audit::event::{Action, ActorRole, AuthMethod};
use bedside_crds::HealthcareTenant;
use bedside_crds::tenant::AuditDestination;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::build::config::AUDIT_HMAC_KEY;
use crate::names::ChildNames;

/// Something the operator did or saw that the tenant's audit trail must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happening {
    /// The tenant's keys were created: it exists from now on.
    Provisioned,
    /// The spec changed; `refused` when it breaks the CRD's rules and nothing was applied.
    SettingsChanged {
        refused: bool,
    },
    /// An edit of an owned object was taken back; `kind` is the object's kind.
    DriftReverted {
        kind: String,
        weakened_lock: bool,
    },
    /// The BAAActive condition changed; `reason` is its new reason.
    BaaChanged {
        active: bool,
        reason: String,
    },
    Deprovisioned,
}

impl Happening {
    fn action_and_refusal(&self) -> (Action, Option<String>) {
        match self {
            Happening::Provisioned => (Action::TenantProvisioned, None),
            Happening::SettingsChanged { refused: false } => (Action::SettingsChange, None),
            Happening::SettingsChanged { refused: true } => {
                (Action::SettingsChange, Some("spec-refused".into()))
            }
            Happening::DriftReverted {
                kind,
                weakened_lock,
            } => (
                Action::DriftReverted,
                Some(format!(
                    "{}-{}",
                    kind.to_ascii_lowercase(),
                    if *weakened_lock {
                        "locked-setting"
                    } else {
                        "edited"
                    }
                )),
            ),
            Happening::BaaChanged { active, reason } => (
                Action::BaaStateChange,
                // A BAA that stops media is a failure of the service, with its reason.
                (!active).then(|| kebab(reason)),
            ),
            Happening::Deprovisioned => (Action::TenantDeprovisioned, None),
        }
    }
}

/// One step of emergency access, as the tenant's trail records it.
#[derive(Debug, Clone, Copy)]
pub struct BreakGlassStep<'a> {
    pub name: &'a str,
    pub visit: &'a str,
    pub action: Action,
    /// The clinician's user id; `None`: the operator took the step.
    pub actor: Option<&'a str>,
    pub refusal: Option<&'a str>,
}

/// `BAAExpired` -> `baa-expired`.
fn kebab(reason: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = reason.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let boundary = i > 0
            && c.is_ascii_uppercase()
            && (chars[i - 1].is_ascii_lowercase()
                || chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase()));
        if boundary {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Why a record could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("reading Secret {name} for the tenant's audit trail: {source}")]
    Secret { name: String, source: kube::Error },
    #[error(
        "Secret {name} has no key {key}: the audit sink needs it (see docs/audit.md); records wait in the operator's buffer until it is there"
    )]
    MissingKey { name: String, key: String },
    #[error("the tenant's audit trail cannot start: {0}")]
    Delivery(#[from] delivery::DeliveryError),
}

/// How long a trail with nothing left to do stays open: past one checkpoint interval, so the
/// checkpoint after its last record is sealed by the open trail.
pub const IDLE_TRAIL: Duration = Duration::from_secs(150);

struct Trail {
    /// What the trail was started with (sinks and their secrets); a change restarts it.
    fingerprint: String,
    auditor: Arc<Auditor>,
    metrics: AuditMetrics,
    last_record: Instant,
}

/// Every tenant's trail, by tenant uid.
pub struct OperatorAudit {
    root: PathBuf,
    /// This replica's name: the chain's name in every record.
    replica: String,
    trails: Mutex<HashMap<String, Trail>>,
    checkpoint_interval: Duration,
    /// Where a trail's `stdout` sink writes (the process's stdout; a buffer in tests).
    stdout: fn() -> Box<dyn std::io::Write + Send>,
    /// Tenants whose deprovisioning is on record (the finalizer may run several times).
    deprovisioned: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for OperatorAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorAudit")
            .field("root", &self.root)
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl OperatorAudit {
    /// Trails buffer under `root` (a volume of the operator's pod).
    pub fn new(root: PathBuf, replica: &str) -> Self {
        Self {
            root,
            replica: replica.to_string(),
            trails: Mutex::new(HashMap::new()),
            checkpoint_interval: Duration::from_secs(60),
            stdout: || Box::new(std::io::stdout()),
            deprovisioned: Mutex::default(),
        }
    }

    pub fn deprovision_recorded(&self, tenant: &HealthcareTenant) -> bool {
        let uid = tenant.uid().unwrap_or_default();
        self.deprovisioned.lock().is_ok_and(|d| d.contains(&uid))
    }

    /// Seals `what` into the tenant's trail and hands it to the tenant's sinks.
    pub async fn record(
        &self,
        client: &Client,
        tenant: &HealthcareTenant,
        what: &Happening,
    ) -> Result<(), AuditError> {
        let auditor = self.trail(client, tenant).await?;
        self.seal(&auditor, what);
        tracing::info!(tenant = %tenant.name_any(), what = ?what, "audit record sealed");
        Ok(())
    }

    /// Seals a step of a BreakGlass (`name`, for `visit`) into the tenant's trail: `actor` is
    /// the clinician who took it (a pseudonymous user id), or this replica when the operator
    /// did (activated it, ended it). `Err` when the record was not kept: the step waits.
    pub async fn record_break_glass(
        &self,
        client: &Client,
        tenant: &HealthcareTenant,
        step: BreakGlassStep<'_>,
    ) -> Result<(), AuditError> {
        let auditor = self.trail(client, tenant).await?;
        let who = match step.actor {
            Some(user) => Who {
                user: Some(user.to_string()),
                role: Some(ActorRole::Clinician),
                auth: AuthMethod::Kubernetes,
            },
            None => Who {
                user: Some(self.replica.clone()),
                role: Some(ActorRole::Operator),
                auth: AuthMethod::Kubernetes,
            },
        };
        auditor.try_record_break_glass(
            &who,
            step.action,
            step.refusal,
            (step.visit, step.name),
            None,
        )?;
        tracing::info!(tenant = %tenant.name_any(), break_glass = step.name, action = ?step.action, "audit record sealed");
        Ok(())
    }

    fn seal(&self, auditor: &Auditor, what: &Happening) {
        let (action, refusal) = what.action_and_refusal();
        let who = Who {
            user: Some(self.replica.clone()),
            role: Some(ActorRole::Operator),
            auth: AuthMethod::Kubernetes,
        };
        auditor.record(&who, action, refusal.as_deref(), None, None);
    }

    /// True once the tenant's sinks have taken every record of this replica's trail.
    pub fn drained(&self, tenant: &HealthcareTenant) -> bool {
        let uid = tenant.uid().unwrap_or_default();
        self.trails
            .lock()
            .map(|t| t.get(&uid).is_none_or(|t| t.auditor.drained()))
            .unwrap_or(true)
    }

    /// The operator's own view of the tenant's sinks.
    pub fn sink_reports(&self, tenant: &HealthcareTenant) -> Vec<delivery::health::SinkReport> {
        let uid = tenant.uid().unwrap_or_default();
        self.trails
            .lock()
            .ok()
            .and_then(|t| t.get(&uid).map(|t| t.metrics.report()))
            .unwrap_or_default()
    }

    /// Records the deprovisioning and closes the tenant's chain; [`forget`](Self::forget) it
    /// once [`drained`](Self::drained).
    pub async fn deprovision(
        &self,
        client: &Client,
        tenant: &HealthcareTenant,
    ) -> Result<(), AuditError> {
        self.record(client, tenant, &Happening::Deprovisioned)
            .await?;
        let uid = tenant.uid().unwrap_or_default();
        if let Some(auditor) = self
            .trails
            .lock()
            .ok()
            .and_then(|t| t.get(&uid).map(|t| t.auditor.clone()))
        {
            auditor.close();
        }
        if let Ok(mut d) = self.deprovisioned.lock() {
            d.insert(uid);
        }
        Ok(())
    }

    /// Closes the trails idle for [`IDLE_TRAIL`] whose records are all sealed into a checkpoint
    /// and delivered; the next record reopens the trail, which continues the same chain from
    /// its tail file (as after a restart). Returns how many were closed.
    pub fn close_idle(&self, now: Instant) -> usize {
        let Ok(mut trails) = self.trails.lock() else {
            return 0;
        };
        let before = trails.len();
        trails.retain(|_, t| {
            now.saturating_duration_since(t.last_record) < IDLE_TRAIL || !t.auditor.settled()
        });
        before - trails.len()
    }

    /// How many trails are open.
    pub fn open_trails(&self) -> usize {
        self.trails.lock().map(|t| t.len()).unwrap_or(0)
    }

    /// Drops a deprovisioned tenant's trail (its delivery tasks end).
    pub fn forget(&self, tenant: &HealthcareTenant) {
        let uid = tenant.uid().unwrap_or_default();
        if let Ok(mut t) = self.trails.lock() {
            t.remove(&uid);
        }
        if let Ok(mut d) = self.deprovisioned.lock() {
            d.remove(&uid);
        }
    }

    /// The tenant's open trail, opened when it has none (or its sinks changed).
    async fn trail(
        &self,
        client: &Client,
        tenant: &HealthcareTenant,
    ) -> Result<Arc<Auditor>, AuditError> {
        let sinks = TrailSinks::read(client, tenant).await?;
        self.open(tenant, sinks)
    }

    fn open(
        &self,
        tenant: &HealthcareTenant,
        sinks: TrailSinks,
    ) -> Result<Arc<Auditor>, AuditError> {
        let fingerprint = fingerprint(&sinks.key, sinks.stdout, &sinks.network, &tenant.spec.audit);
        let uid = tenant.uid().unwrap_or_default();
        // Marked used under the lock, so `close_idle` never closes a trail being recorded to.
        if let Some(trail) = self.trails.lock().ok().and_then(|mut t| {
            t.get_mut(&uid)
                .filter(|t| t.fingerprint == fingerprint)
                .map(|t| {
                    t.last_record = Instant::now();
                    t.auditor.clone()
                })
        }) {
            return Ok(trail);
        }
        // The chain's tail is kept per tenant, so a new sink set (or a reopened trail)
        // continues the same chain; the buffers are per sink set, so records never reach a
        // sink they were not meant for.
        let tenant_dir = self.root.join(&uid);
        let metrics = AuditMetrics::new(
            &prometheus::Registry::new(),
            &tenant.name_any(),
            &self.replica,
        )
        .map_err(delivery::DeliveryError::from)?;
        let plan = delivery::Plan {
            key: &sinks.key,
            tenant: &tenant.name_any(),
            node: &self.replica,
            app: "bedside-operator",
            out: sinks.stdout.then(|| (self.stdout)()),
            buffer_dir: &tenant_dir.join(&fingerprint[..16]),
            chain_tail: tenant_dir.join("chain-tail.json"),
            sinks: sinks.network,
            buffer_bytes: u64::from(tenant.spec.audit.buffer_mib) << 20,
            // The operator never refuses anything; its records simply wait.
            when_buffer_full: delivery::BufferFullPolicy::KeepServing,
            checkpoint_interval: self.checkpoint_interval,
        };
        let auditor = delivery::start(plan, &metrics)?;
        // A replaced trail's delivery tasks end with it; what it had not delivered stays on
        // disk, in the buffers of the sink set it was meant for.
        if let Ok(mut trails) = self.trails.lock() {
            trails.insert(
                uid,
                Trail {
                    fingerprint,
                    auditor: auditor.clone(),
                    metrics,
                    last_record: Instant::now(),
                },
            );
        }
        Ok(auditor)
    }
}

/// Where a tenant's trail goes, read from its spec and Secrets.
struct TrailSinks {
    key: Vec<u8>,
    stdout: bool,
    network: Vec<(usize, NetworkSink)>,
}

impl TrailSinks {
    async fn read(client: &Client, tenant: &HealthcareTenant) -> Result<Self, AuditError> {
        let namespace = tenant.namespace().unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let key = secret_key(&secrets, &ChildNames::of(tenant).keys, AUDIT_HMAC_KEY).await?;
        let mut network = Vec::new();
        let mut stdout = false;
        for (index, sink) in tenant.spec.audit.sinks.iter().enumerate() {
            match sink.destination() {
                Some(AuditDestination::Stdout) => stdout = true,
                Some(AuditDestination::Syslog(s)) => network.push((
                    index,
                    NetworkSink::Syslog {
                        address: s.address.clone(),
                        ca_pem: secret_key(&secrets, &s.ca_secret, "ca.crt").await?,
                    },
                )),
                Some(AuditDestination::Webhook(w)) => network.push((
                    index,
                    NetworkSink::Webhook {
                        url: w.url.clone(),
                        token: String::from_utf8_lossy(
                            &secret_key(&secrets, &w.token_secret, "token").await?,
                        )
                        .trim()
                        .to_string(),
                        ca_pem: None,
                    },
                )),
                None => {}
            }
        }
        Ok(Self {
            key,
            stdout,
            network,
        })
    }
}

async fn secret_key(secrets: &Api<Secret>, name: &str, key: &str) -> Result<Vec<u8>, AuditError> {
    let secret = secrets
        .get(name)
        .await
        .map_err(|source| AuditError::Secret {
            name: name.to_string(),
            source,
        })?;
    secret
        .data
        .and_then(|mut d| d.remove(key))
        .map(|b| b.0)
        .ok_or_else(|| AuditError::MissingKey {
            name: name.to_string(),
            key: key.to_string(),
        })
}

fn fingerprint(
    key: &[u8],
    stdout: bool,
    sinks: &[(usize, NetworkSink)],
    audit: &bedside_crds::tenant::AuditConfig,
) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(key);
    ctx.update(&[u8::from(stdout)]);
    for (index, sink) in sinks {
        ctx.update(&index.to_le_bytes());
        match sink {
            NetworkSink::Syslog { address, ca_pem } => {
                ctx.update(b"syslog");
                ctx.update(address.as_bytes());
                ctx.update(ca_pem);
            }
            NetworkSink::Webhook { url, token, .. } => {
                ctx.update(b"webhook");
                ctx.update(url.as_bytes());
                ctx.update(token.as_bytes());
            }
        }
    }
    ctx.update(&audit.buffer_mib.to_le_bytes());
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_reasons_become_reason_codes() {
        // The BAAActive reasons the status really carries (reconcile/status.rs).
        assert_eq!(kebab("AgreementExpired"), "agreement-expired");
        assert_eq!(
            kebab("AgreementNotYetInForce"),
            "agreement-not-yet-in-force"
        );
        // An acronym stays one word.
        assert_eq!(kebab("BAAExpired"), "baa-expired");
    }

    #[test]
    fn each_happening_has_its_action_and_a_reason_only_where_one_is_due() {
        let cases = [
            (Happening::Provisioned, Action::TenantProvisioned, None),
            (
                Happening::SettingsChanged { refused: true },
                Action::SettingsChange,
                Some("spec-refused"),
            ),
            (
                Happening::DriftReverted {
                    kind: "StatefulSet".into(),
                    weakened_lock: true,
                },
                Action::DriftReverted,
                Some("statefulset-locked-setting"),
            ),
            (
                Happening::BaaChanged {
                    active: false,
                    reason: "AgreementExpired".into(),
                },
                Action::BaaStateChange,
                Some("agreement-expired"),
            ),
            (
                Happening::BaaChanged {
                    active: false,
                    reason: "AgreementNotYetInForce".into(),
                },
                Action::BaaStateChange,
                Some("agreement-not-yet-in-force"),
            ),
            (
                Happening::BaaChanged {
                    active: true,
                    reason: "AgreementInForce".into(),
                },
                Action::BaaStateChange,
                None,
            ),
            (Happening::Deprovisioned, Action::TenantDeprovisioned, None),
        ];
        for (happening, action, reason) in cases {
            let (a, r) = happening.action_and_refusal();
            assert_eq!((a, r.as_deref()), (action, reason), "{happening:?}");
            // Every reason is a valid opaque code, so it is recorded, not dropped.
            if let Some(r) = r {
                bedside_audit::event::OpaqueId::new(r).expect("opaque");
            }
        }
    }

    /// The `stdout` sink of the trails in these tests.
    static OUT: Mutex<Vec<u8>> = Mutex::new(Vec::new());

    struct Captured;

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            OUT.lock().expect("captured output").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn an_idle_sealed_trail_closes_and_its_chain_goes_on_when_reopened() {
        let dir = tempfile::tempdir().expect("dir");
        let mut audit = OperatorAudit::new(dir.path().to_path_buf(), "bedside-operator-0");
        audit.stdout = || Box::new(Captured);
        let tenant = crate::build::objects_tests_tenant("mercy-clinic.yaml");
        let mut key = vec![0u8; 32];
        aws_lc_rs::rand::fill(&mut key).expect("random key");
        let sinks = || TrailSinks {
            key: key.clone(),
            stdout: true,
            network: Vec::new(),
        };

        let trail = audit.open(&tenant, sinks()).expect("trail");
        audit.seal(&trail, &Happening::Provisioned);
        drop(trail);
        let idle = Instant::now() + IDLE_TRAIL + Duration::from_secs(1);
        assert_eq!(
            audit.close_idle(idle),
            0,
            "a record no checkpoint covers yet keeps its trail open"
        );
        audit.open(&tenant, sinks()).expect("trail").checkpoint();
        assert_eq!(audit.close_idle(Instant::now()), 0, "just used");
        assert_eq!(audit.close_idle(idle + IDLE_TRAIL), 1);
        assert_eq!(audit.open_trails(), 0);

        let reopened = audit.open(&tenant, sinks()).expect("reopened trail");
        audit.seal(&reopened, &Happening::SettingsChanged { refused: false });
        let text = String::from_utf8(OUT.lock().expect("output").clone()).expect("utf-8");
        let key = bedside_audit::AuditKey::new(&key).expect("key");
        let verified = bedside_audit::verify(text.lines(), &key).expect("one unbroken chain");
        assert_eq!(verified.chains.len(), 1, "{text}");
        let chain = &verified.chains[0];
        assert_eq!(
            (chain.records, chain.first_seq, chain.last_seq),
            (3, Some(1), Some(3))
        );
    }
}
