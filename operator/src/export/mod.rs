//! Evidence for auditors: what a tenant's compliance looked like over a time range, as a JSON
//! document, a page people read, and a signed manifest that names any part altered after it
//! was written. Built here without I/O from what `bedside-operator evidence export` read.
//!
//! bedside produces evidence; it is not an auditor. The document says so.

pub mod html;
pub mod seal;

use std::collections::BTreeMap;

use bedside_audit::chain::{AuditKey, Record, line_hash};
use bedside_audit::event::Action;
use bedside_crds::HealthcareTenant;
use bedside_crds::break_glass::BreakGlass;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};

use crate::names::CONFIG_HASH_ANNOTATION;

pub const FORMAT: &str = "bedside-evidence/v1";
/// What the evidence is, and is not, in its own words.
pub const DISCLAIMER: &str = "bedside produces this evidence from the tenant's live state and audit records; it is not an audit, and bedside is not an auditor. Manual items are for people to keep.";

/// The exported document.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    pub format: String,
    pub about: About,
    /// The controls as the operator last evaluated them (the tenant's compliance Report).
    pub controls: Vec<Control>,
    pub baa: Baa,
    /// The media nodes' configuration over the range: each revision's config hash.
    pub config_history: Vec<ConfigRevision>,
    /// Emergency access granted, asked for or refused in the range.
    pub break_glass: Vec<BreakGlassEntry>,
    pub audit_chains: AuditChains,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct About {
    pub tenant: String,
    pub namespace: String,
    pub from: Timestamp,
    pub to: Timestamp,
    pub generated_at: Timestamp,
    pub generated_by: String,
    pub disclaimer: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Control {
    /// `hipaa-164.312(b)`.
    pub control: String,
    pub check: String,
    /// pass, warn, fail, error or skip (manual items and what was not checked).
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    pub message: String,
    pub manual: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Baa {
    pub reference: String,
    pub signed_on: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_on: Option<String>,
    /// The BAAActive condition when exported: status and reason.
    pub in_force: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigRevision {
    pub revision: i64,
    pub created: Option<Timestamp>,
    /// SHA-256 of the rendered media-node config the pods of this revision ran.
    pub config_hash: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BreakGlassEntry {
    pub name: String,
    pub visit: String,
    pub clinician: String,
    pub requested_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    pub incident: String,
    pub ttl_minutes: u32,
    pub phase: String,
    pub created: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuditChains {
    /// The records file the export read (its name and SHA-256), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Whether every chain in it verified under the tenant's audit key.
    pub verified: bool,
    /// What is broken, or why nothing was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub chains: Vec<ChainEvidence>,
    /// Records in the range by action (`join`, `break-glass-join`, ...).
    pub actions: BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChainEvidence {
    /// The media node or operator replica that sealed it.
    pub node: String,
    pub records_in_range: u64,
    /// Its last record in the range: seq, time and the SHA-256 of its line.
    pub head: Option<Checkpoint>,
    /// Its periodic checkpoints in the range.
    pub checkpoints: Vec<Checkpoint>,
    /// Closed cleanly (a chain-closed record) within the range.
    pub closed: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub seq: u64,
    pub time: Timestamp,
    pub hash: String,
}

/// What the export reads, gathered by the command.
#[derive(Debug)]
pub struct Inputs<'a> {
    pub tenant: &'a HealthcareTenant,
    /// The Report's `results` (openreports.io), empty where none is served.
    pub report_results: &'a [serde_json::Value],
    pub revisions: &'a [ControllerRevision],
    pub break_glass: &'a [BreakGlass],
    /// The audit records file: its name and lines, with the tenant's audit key.
    pub records: Option<(&'a str, &'a [String], &'a AuditKey)>,
    pub range: (Timestamp, Timestamp),
    pub now: Timestamp,
}

/// To the second: what people read (the range itself is applied exactly).
fn seconds(t: Timestamp) -> Timestamp {
    t.round(jiff::Unit::Second).unwrap_or(t)
}

pub fn build(inputs: &Inputs) -> Evidence {
    let (from, to) = inputs.range;
    let tenant = inputs.tenant;
    Evidence {
        format: FORMAT.into(),
        about: About {
            tenant: tenant.name_any(),
            namespace: tenant.namespace().unwrap_or_default(),
            from: seconds(from),
            to: seconds(to),
            generated_at: seconds(inputs.now),
            generated_by: format!("bedside-operator {}", env!("CARGO_PKG_VERSION")),
            disclaimer: DISCLAIMER.into(),
        },
        controls: inputs.report_results.iter().map(control).collect(),
        baa: baa(tenant),
        config_history: config_history(inputs.revisions, inputs.range),
        break_glass: inputs
            .break_glass
            .iter()
            .filter(|bg| bg.spec.tenant == tenant.name_any())
            .filter_map(|bg| break_glass_entry(bg, inputs.range))
            .collect(),
        audit_chains: match inputs.records {
            Some((source, lines, key)) => audit_chains(source, lines, key, inputs.range),
            None => AuditChains {
                problem: Some(
                    "no audit records were given (--records: the tenant's records as its SIEM holds them)".into(),
                ),
                ..Default::default()
            },
        },
    }
}

fn control(result: &serde_json::Value) -> Control {
    let text = |key: &str| result[key].as_str().unwrap_or_default().to_string();
    Control {
        control: text("policy"),
        check: text("rule"),
        result: text("result"),
        severity: result["severity"].as_str().map(str::to_string),
        message: text("message"),
        manual: result["properties"]["manual"] == "true",
    }
}

fn baa(tenant: &HealthcareTenant) -> Baa {
    let baa = &tenant.spec.baa;
    let in_force = tenant
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "BAAActive"))
        .map_or_else(
            || "not evaluated".to_string(),
            |c| format!("{} ({})", c.status, c.reason),
        );
    Baa {
        reference: baa.reference.clone(),
        signed_on: baa.signed_on.to_string(),
        expires_on: baa.expires_on.map(|d| d.to_string()),
        in_force,
    }
}

/// The revisions in force during the range: those made in it, and the last one before it.
fn config_history(
    revisions: &[ControllerRevision],
    (from, to): (Timestamp, Timestamp),
) -> Vec<ConfigRevision> {
    let mut all: Vec<ConfigRevision> = revisions
        .iter()
        .map(|r| ConfigRevision {
            revision: r.revision,
            created: r.metadata.creation_timestamp.as_ref().map(|t| t.0),
            config_hash: r
                .data
                .as_ref()
                .and_then(|d| {
                    d.0["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
                        .as_str()
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "unknown".into()),
        })
        .filter(|r| r.created.is_none_or(|c| c <= to))
        .collect();
    all.sort_by_key(|r| r.revision);
    let before = all
        .iter()
        .rposition(|r| r.created.is_some_and(|c| c < from));
    all.into_iter()
        .enumerate()
        .filter(|(i, r)| Some(*i) == before || r.created.is_none_or(|c| c >= from))
        .map(|(_, r)| r)
        .collect()
}

/// A grant that lived at any time in the range.
fn break_glass_entry(
    bg: &BreakGlass,
    (from, to): (Timestamp, Timestamp),
) -> Option<BreakGlassEntry> {
    let status = bg.status.clone().unwrap_or_default();
    let created = bg.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let began = created.unwrap_or(from);
    let ended = status.ended_at.unwrap_or(to);
    if began > to || ended < from {
        return None;
    }
    Some(BreakGlassEntry {
        name: bg.name_any(),
        visit: bg.spec.visit.clone(),
        clinician: bg.spec.clinician.clone(),
        requested_by: bg.spec.requested_by.clone(),
        approved_by: bg.spec.approved_by.clone(),
        revoked_by: bg.spec.revoked_by.clone(),
        incident: bg.spec.incident.clone(),
        ttl_minutes: bg.spec.ttl_minutes,
        phase: status.phase.map_or("Unknown", |p| p.as_str()).into(),
        created,
        activated_at: status.activated_at,
        ended_at: status.ended_at,
    })
}

fn audit_chains(
    source: &str,
    lines: &[String],
    key: &AuditKey,
    (from, to): (Timestamp, Timestamp),
) -> AuditChains {
    let verdict = bedside_audit::verify::verify(lines.iter().map(String::as_str), key);
    let mut chains: BTreeMap<String, ChainEvidence> = BTreeMap::new();
    let mut actions: BTreeMap<String, u64> = BTreeMap::new();
    for line in lines {
        let line = line.trim_end();
        let Ok(record) = serde_json::from_str::<Record>(line) else {
            continue;
        };
        if record.time < from || record.time > to {
            continue;
        }
        let chain = chains
            .entry(record.event.place.node.to_string())
            .or_insert_with(|| ChainEvidence {
                node: record.event.place.node.to_string(),
                records_in_range: 0,
                head: None,
                checkpoints: Vec::new(),
                closed: false,
            });
        chain.records_in_range += 1;
        let at = Checkpoint {
            seq: record.seq,
            time: record.time,
            hash: line_hash(line),
        };
        if record.event.action == Action::Checkpoint {
            chain.checkpoints.push(at.clone());
        }
        chain.closed |= record.event.action == Action::ChainClosed;
        if chain.head.as_ref().is_none_or(|h| h.seq < record.seq) {
            chain.head = Some(at);
        }
        let action = serde_json::to_value(record.event.action)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        *actions.entry(action).or_default() += 1;
    }
    AuditChains {
        source: Some(source.to_string()),
        verified: verdict.is_ok(),
        problem: verdict.err().map(|broken| broken.to_string()),
        chains: chains.into_values().collect(),
        actions,
    }
}

#[cfg(test)]
mod tests;
