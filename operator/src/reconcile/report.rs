//! The tenant's compliance findings as an OpenReports `Report` (openreports.io/v1alpha1, the
//! successor of the PolicyReport that Kyverno and policy-reporter read), in the tenant's
//! namespace, where the cluster serves that API. Written when a result changes, and at least
//! every [`REFRESH`] so its timestamps say the evidence is live.

use std::time::{Duration, Instant};

use bedside_crds::HealthcareTenant;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject};
use serde_json::{Value, json};

use super::evidence::{Finding, Outcome, summarize};
use super::{Context, Error, server_side_apply};
use crate::build::{self, BuildError};
use crate::names::ChildNames;

/// An unchanged report is written again after this, with fresh timestamps.
pub const REFRESH: Duration = Duration::from_secs(600);

/// The Report for `findings`, evaluated at `now`. Pure.
pub fn compliance_report(
    tenant: &HealthcareTenant,
    resource: &ApiResource,
    findings: &[Finding],
    now: Timestamp,
) -> Result<DynamicObject, BuildError> {
    let namespace = tenant.namespace().ok_or(BuildError::NoNamespace)?;
    let s = summarize(findings);
    let results: Vec<Value> = findings
        .iter()
        .map(|f| result(f, &namespace, now))
        .collect();
    let report = json!({
        "apiVersion": resource.api_version, "kind": resource.kind,
        "metadata": build::metadata(tenant, &ChildNames::of(tenant).compliance_report)?,
        "scope": {
            "apiVersion": "bedside.health/v1alpha1", "kind": "HealthcareTenant",
            "name": tenant.name_any(), "namespace": namespace, "uid": tenant.uid(),
        },
        "source": "bedside-operator",
        "summary": {
            "pass": s.pass, "warn": s.warn, "fail": s.fail, "error": 0,
            "skip": s.not_checked + s.manual,
        },
        "results": results,
    });
    serde_json::from_value(report).map_err(|source| BuildError::Invalid {
        kind: "Report",
        source,
    })
}

fn result(f: &Finding, namespace: &str, now: Timestamp) -> Value {
    let mut properties = serde_json::Map::new();
    properties.insert("standard".into(), f.title.into());
    match f.outcome {
        Outcome::Manual => {
            properties.insert("manual".into(), "true".into());
        }
        Outcome::NotChecked => {
            properties.insert("notChecked".into(), "true".into());
        }
        _ => {}
    }
    let resources: Vec<Value> = f
        .objects
        .iter()
        .map(|(kind, name)| {
            let api_version = match *kind {
                "HealthcareTenant" => "bedside.health/v1alpha1",
                "StatefulSet" => "apps/v1",
                "NetworkPolicy" => "networking.k8s.io/v1",
                _ => "v1",
            };
            json!({"apiVersion": api_version, "kind": kind, "name": name, "namespace": namespace})
        })
        .collect();
    json!({
        "source": "bedside-operator",
        "policy": format!("hipaa-{}", f.control),
        "rule": f.check,
        "category": f.title,
        "result": f.outcome.as_report_result(),
        "severity": f.severity.as_str(),
        "scored": !matches!(f.outcome, Outcome::Manual | Outcome::NotChecked),
        "message": f.message,
        "properties": properties,
        "resources": resources,
        "timestamp": {"seconds": now.as_second(), "nanos": 0},
    })
}

/// Writes the tenant's Report when its results changed since the last write, or it is
/// [`REFRESH`] old; returns its name, or none where the cluster does not serve the API.
pub(super) async fn apply(
    tenant: &HealthcareTenant,
    ctx: &Context,
    namespace: &str,
    findings: &[Finding],
) -> Result<Option<String>, Error> {
    let Some(resource) = &ctx.reports else {
        return Ok(None);
    };
    let name = ChildNames::of(tenant).compliance_report;
    let uid = tenant.uid().unwrap_or_default();
    let fingerprint = format!("{findings:?}");
    let fresh = ctx.reports_written.lock().ok().is_some_and(|written| {
        written
            .get(&uid)
            .is_some_and(|(f, at)| *f == fingerprint && at.elapsed() < REFRESH)
    });
    if fresh {
        return Ok(Some(name));
    }
    let report = compliance_report(tenant, resource, findings, Timestamp::now())?;
    let reports: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, resource);
    server_side_apply(&reports, &report, "Report").await?;
    if let Ok(mut written) = ctx.reports_written.lock() {
        written.insert(uid, (fingerprint, Instant::now()));
    }
    Ok(Some(name))
}
