//! The Leases a tenant's media pods share in its namespace: node and room leases (placement)
//! and cancelled-visit leases. Named once here for the node, which reads and writes them, and
//! for `bedside-operator visit cancel`, which writes a cancellation with the user's own RBAC.
//!
//! A cancelled visit is a Lease, not a ConfigMap entry, because the pods already watch their
//! tenant's Leases (one watch, one RBAC rule) and one object per visit is created atomically,
//! needs no read-modify-write and has no size limit. It names the visit by its room key (a
//! hash: visit ids appear in no object name) and says until when its links could have worked;
//! after that every link is refused as expired anyway, and the pods delete it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

/// The tenant a Lease (or any object the operator makes) belongs to.
pub const TENANT_LABEL: &str = "bedside.health/tenant";
/// What a Lease is: `node`, `room` or [`CANCELLED_KIND`].
pub const KIND_LABEL: &str = "bedside.health/lease";
/// A room's (a visit's) key on its room and cancellation leases.
pub const ROOM_KEY_LABEL: &str = "bedside.health/room";
pub const CANCELLED_KIND: &str = "cancelled-visit";
/// On a cancellation: the end of the visit's window (RFC 3339).
pub const CANCELLED_UNTIL_ANNOTATION: &str = "bedside.health/cancelled-until";

/// A room's lease key: a hash, so that room names (visit ids) never appear in the cluster's
/// object names, and any name fits Kubernetes' naming rules.
pub fn room_key(room: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, room.as_bytes());
    digest.as_ref()[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The name of the Lease that cancels `visit` (its room) in `tenant`.
pub fn cancellation_name(tenant: &str, visit: &str) -> String {
    format!("{tenant}-cancelled-{}", room_key(visit))
}

/// The Lease that cancels `visit`: its links are refused on every pod, and the pod holding
/// its call ends it. `until`: the end of the visit's window, after which it may be deleted.
pub fn cancellation(tenant: &str, visit: &str, until: Timestamp, now: Timestamp) -> Lease {
    let labels: BTreeMap<String, String> = [
        (TENANT_LABEL.to_string(), tenant.to_string()),
        (KIND_LABEL.to_string(), CANCELLED_KIND.to_string()),
        (ROOM_KEY_LABEL.to_string(), room_key(visit)),
    ]
    .into();
    Lease {
        metadata: ObjectMeta {
            name: Some(cancellation_name(tenant, visit)),
            labels: Some(labels),
            annotations: Some([(CANCELLED_UNTIL_ANNOTATION.to_string(), until.to_string())].into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            acquire_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

/// Until when a cancellation matters; `None` if the Lease is not one (or was edited into
/// something unreadable, which then cancels nothing after a day: see [`cancellation_expired`]).
pub fn cancelled_until(lease: &Lease) -> Option<Timestamp> {
    lease
        .metadata
        .annotations
        .as_ref()?
        .get(CANCELLED_UNTIL_ANNOTATION)?
        .parse()
        .ok()
}

/// Whether a cancellation may be deleted: its visit's window has closed (a malformed one,
/// a day after it was made).
pub fn cancellation_expired(lease: &Lease, now: Timestamp) -> bool {
    let until = cancelled_until(lease).or_else(|| {
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

    #[test]
    fn a_cancellation_names_its_visit_by_hash_and_lasts_its_window() {
        let now: Timestamp = "2026-12-03T10:00:00Z".parse().expect("time");
        let until: Timestamp = "2026-12-03T11:15:00Z".parse().expect("time");
        let lease = cancellation("mercy-clinic", "visit-0123abcd", until, now);
        let name = lease.metadata.name.clone().expect("name");
        assert!(!name.contains("visit-0123abcd"), "{name}");
        assert_eq!(name, cancellation_name("mercy-clinic", "visit-0123abcd"));
        assert_eq!(
            room_key_of(&lease, CANCELLED_KIND),
            Some(room_key("visit-0123abcd"))
        );
        assert_eq!(room_key_of(&lease, "room"), None);
        assert_eq!(cancelled_until(&lease), Some(until));
        assert!(!cancellation_expired(&lease, until));
        assert!(cancellation_expired(
            &lease,
            until + jiff::SignedDuration::from_secs(1)
        ));
    }

    #[test]
    fn an_unreadable_cancellation_is_dropped_a_day_after_it_was_made() {
        let now: Timestamp = "2026-12-03T10:00:00Z".parse().expect("time");
        let mut lease = cancellation("mercy-clinic", "visit-1", now, now);
        lease.metadata.annotations = None;
        assert!(!cancellation_expired(
            &lease,
            now + jiff::SignedDuration::from_hours(23)
        ));
        assert!(cancellation_expired(
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
