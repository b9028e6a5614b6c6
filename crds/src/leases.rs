//! The Leases a tenant's media pods share in its namespace: node and room leases (placement)
//! and visit leases. Named once here for the node, which reads and writes them, and for
//! `bedside-operator visit cancel|reissue`, which write a visit lease with the user's own RBAC.
//!
//! A visit lease records what bedside must remember about a booked visit, which is otherwise
//! stored nowhere: that it was cancelled, and which issue of its links is current (a reissue
//! refuses the older ones). It is a Lease, not a ConfigMap entry, because the pods already watch
//! their tenant's Leases (one watch, one RBAC rule), and one object per visit is written with a
//! resourceVersion guard and has no size limit. It names the visit by its room key (a hash:
//! visit ids appear in no object name) and says until when the visit's links could work; after
//! that every link is refused as expired anyway, and the pods delete it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

use crate::visit::VisitError;

/// The tenant a Lease (or any object the operator makes) belongs to.
pub const TENANT_LABEL: &str = "bedside.health/tenant";
/// What a Lease is: `node`, `room` or [`VISIT_KIND`].
pub const KIND_LABEL: &str = "bedside.health/lease";
/// A room's (a visit's) key on its room and visit leases.
pub const ROOM_KEY_LABEL: &str = "bedside.health/room";
pub const VISIT_KIND: &str = "visit";
/// On a visit lease: the end of the visit's window (RFC 3339).
pub const VISIT_UNTIL_ANNOTATION: &str = "bedside.health/visit-until";
/// On a visit lease: `true` once the visit is cancelled.
pub const CANCELLED_ANNOTATION: &str = "bedside.health/cancelled";
/// On a visit lease: the current issue of the visit's links; older ones are refused.
pub const GENERATION_ANNOTATION: &str = "bedside.health/links-generation";

/// A room's lease key: a hash, so that room names (visit ids) never appear in the cluster's
/// object names, and any name fits Kubernetes' naming rules.
pub fn room_key(room: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, room.as_bytes());
    digest.as_ref()[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The name of `visit`'s lease in `tenant`.
pub fn visit_lease_name(tenant: &str, visit: &str) -> String {
    format!("{tenant}-visit-{}", room_key(visit))
}

/// What a visit lease says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VisitRecord {
    /// The end of the visit's window (`None` if unreadable: see [`visit_lease_expired`]).
    pub until: Option<Timestamp>,
    pub cancelled: bool,
    /// Links of an older issue are refused.
    pub generation: u32,
}

impl VisitRecord {
    pub fn of(lease: &Lease) -> Self {
        let annotations = lease.metadata.annotations.as_ref();
        let get = |key: &str| annotations.and_then(|a| a.get(key));
        Self {
            until: get(VISIT_UNTIL_ANNOTATION).and_then(|t| t.parse().ok()),
            cancelled: get(CANCELLED_ANNOTATION).is_some_and(|c| c == "true"),
            generation: get(GENERATION_ANNOTATION)
                .and_then(|g| g.parse().ok())
                .unwrap_or(0),
        }
    }

    /// Why a link of issue `generation` is refused, if it is.
    pub fn refuses(&self, generation: u32) -> Option<VisitRefusal> {
        if self.cancelled {
            Some(VisitRefusal::Cancelled)
        } else if generation < self.generation {
            Some(VisitRefusal::Replaced)
        } else {
            None
        }
    }
}

/// Why a visit's link is refused by its visit lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VisitRefusal {
    /// The clinic cancelled the visit.
    Cancelled,
    /// The visit's links were reissued; this one is older.
    Replaced,
}

/// What to do to a visit's lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VisitChange {
    Cancel,
    /// Make the next issue of the links current.
    Reissue,
}

/// The visit lease to write for `change`, given the one that exists (if any; its
/// resourceVersion is kept, so a concurrent writer's change is never lost), with the record it
/// holds; `None`: nothing to write (cancelled already). A cancelled visit cannot be reissued.
pub fn visit_change(
    change: VisitChange,
    existing: Option<&Lease>,
    (tenant, visit): (&str, &str),
    until: Timestamp,
    now: Timestamp,
) -> Result<Option<(Lease, VisitRecord)>, VisitError> {
    let mut record = existing.map(VisitRecord::of).unwrap_or_default();
    if record.cancelled {
        return match change {
            VisitChange::Cancel => Ok(None),
            VisitChange::Reissue => Err(VisitError::Invalid {
                field: "id".into(),
                problem:
                    "this visit was cancelled; its links cannot be reissued (book a new visit)"
                        .into(),
            }),
        };
    }
    match change {
        VisitChange::Cancel => record.cancelled = true,
        VisitChange::Reissue => record.generation += 1,
    }
    record.until = Some(record.until.map_or(until, |t| t.max(until)));
    let mut lease = existing.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(visit_lease_name(tenant, visit)),
            labels: Some(
                [
                    (TENANT_LABEL.to_string(), tenant.to_string()),
                    (KIND_LABEL.to_string(), VISIT_KIND.to_string()),
                    (ROOM_KEY_LABEL.to_string(), room_key(visit)),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            acquire_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    });
    let annotations: &mut BTreeMap<String, String> =
        lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if let Some(until) = record.until {
        annotations.insert(VISIT_UNTIL_ANNOTATION.into(), until.to_string());
    }
    annotations.insert(CANCELLED_ANNOTATION.into(), record.cancelled.to_string());
    annotations.insert(GENERATION_ANNOTATION.into(), record.generation.to_string());
    Ok(Some((lease, record)))
}

/// Why a visit's lease could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum VisitWriteError {
    #[error(transparent)]
    Refused(#[from] VisitError),
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("others kept changing the visit's lease at the same moment; try again")]
    Contended,
}

/// Applies `change` to `visit`'s lease through `api` (the tenant's namespace): read, change,
/// write guarded by the resourceVersion read, again on a conflict. The one writer of the
/// contract, for the node (the visits API) and the CLI (with the user's credentials). The
/// record written; `None`: nothing to do (cancelled already).
pub async fn write_visit_change(
    api: &kube::Api<Lease>,
    change: VisitChange,
    (tenant, visit): (&str, &str),
    until: Timestamp,
) -> Result<Option<VisitRecord>, VisitWriteError> {
    let name = visit_lease_name(tenant, visit);
    let post = kube::api::PostParams::default();
    for _ in 0..4 {
        let existing = api.get_opt(&name).await?;
        let planned = visit_change(
            change,
            existing.as_ref(),
            (tenant, visit),
            until,
            Timestamp::now(),
        )?;
        let Some((lease, record)) = planned else {
            return Ok(None);
        };
        let written = match existing {
            None => api.create(&post, &lease).await,
            Some(_) => api.replace(&name, &post, &lease).await,
        };
        match written {
            Ok(_) => return Ok(Some(record)),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(VisitWriteError::Contended)
}

/// Whether a visit lease may be deleted: its visit's window has closed (an unreadable one, a
/// day after it was made).
pub fn visit_lease_expired(lease: &Lease, now: Timestamp) -> bool {
    let until = VisitRecord::of(lease).until.or_else(|| {
        let made = lease.spec.as_ref()?.acquire_time.as_ref()?.0;
        made.checked_add(jiff::SignedDuration::from_hours(24)).ok()
    });
    until.is_some_and(|until| now > until)
}

/// The room key of a Lease of `kind`, if it is one.
pub fn room_key_of(lease: &Lease, kind: &str) -> Option<String> {
    let labels = lease.metadata.labels.as_ref()?;
    (labels.get(KIND_LABEL)? == kind).then_some(())?;
    labels.get(ROOM_KEY_LABEL).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: &str) -> Timestamp {
        t.parse().expect("time")
    }

    const VISIT: (&str, &str) = ("mercy-clinic", "visit-0123abcd");

    #[test]
    fn a_cancellation_names_its_visit_by_hash_and_lasts_its_window() {
        let (now, until) = (at("2026-12-03T10:00:00Z"), at("2026-12-03T11:15:00Z"));
        let (lease, record) = visit_change(VisitChange::Cancel, None, VISIT, until, now)
            .expect("ok")
            .expect("a lease to write");
        let name = lease.metadata.name.clone().expect("name");
        assert!(!name.contains("visit-0123abcd"), "{name}");
        assert_eq!(name, visit_lease_name("mercy-clinic", "visit-0123abcd"));
        assert_eq!(
            room_key_of(&lease, VISIT_KIND),
            Some(room_key("visit-0123abcd"))
        );
        assert_eq!(room_key_of(&lease, "room"), None);
        assert_eq!(VisitRecord::of(&lease), record);
        assert_eq!(record.until, Some(until));
        assert_eq!(record.refuses(0), Some(VisitRefusal::Cancelled));
        assert!(!visit_lease_expired(&lease, until));
        assert!(visit_lease_expired(
            &lease,
            until + jiff::SignedDuration::from_secs(1)
        ));
        assert_eq!(
            visit_change(VisitChange::Cancel, Some(&lease), VISIT, until, now),
            Ok(None),
            "cancelled once"
        );
        assert!(
            visit_change(VisitChange::Reissue, Some(&lease), VISIT, until, now).is_err(),
            "a cancelled visit's links are not reissued"
        );
    }

    #[test]
    fn a_reissue_refuses_the_older_links_and_keeps_the_writers_version() {
        let (now, until) = (at("2026-12-03T10:00:00Z"), at("2026-12-03T11:15:00Z"));
        let (mut lease, first) = visit_change(VisitChange::Reissue, None, VISIT, until, now)
            .expect("ok")
            .expect("lease");
        assert_eq!(first.generation, 1);
        assert_eq!(first.refuses(0), Some(VisitRefusal::Replaced));
        assert_eq!(first.refuses(1), None);
        lease.metadata.resource_version = Some("42".into());
        let (again, second) = visit_change(VisitChange::Reissue, Some(&lease), VISIT, until, now)
            .expect("ok")
            .expect("lease");
        assert_eq!(second.generation, 2);
        assert_eq!(again.metadata.resource_version.as_deref(), Some("42"));
        let (cancelled, record) =
            visit_change(VisitChange::Cancel, Some(&again), VISIT, until, now)
                .expect("ok")
                .expect("lease");
        assert!(record.cancelled && record.generation == 2);
        assert_eq!(
            VisitRecord::of(&cancelled).refuses(2),
            Some(VisitRefusal::Cancelled)
        );
    }

    #[test]
    fn an_unreadable_visit_lease_is_dropped_a_day_after_it_was_made() {
        let now = at("2026-12-03T10:00:00Z");
        let (mut lease, _) = visit_change(VisitChange::Cancel, None, VISIT, now, now)
            .expect("ok")
            .expect("lease");
        lease.metadata.annotations = None;
        assert!(!visit_lease_expired(
            &lease,
            now + jiff::SignedDuration::from_hours(23)
        ));
        assert!(visit_lease_expired(
            &lease,
            now + jiff::SignedDuration::from_hours(25)
        ));
    }

    #[test]
    fn room_keys_are_stable_short_and_hide_the_room_name() {
        let key = room_key("visit-42");
        assert_eq!(key, room_key("visit-42"));
        assert_eq!(key.len(), 20);
        assert!(!key.contains("visit"));
        assert_ne!(key, room_key("visit-43"));
    }
}
