//! How fast visits are booked and what a visit link's checks add to a join. A scheduling
//! system books a day's appointments at once; every join verifies its link (signature, tenant,
//! room, window) before anything else.
//!
//! Prints visits booked per second on one core (a host and one patient, and a host with three
//! invitees: one signed link each), the time to verify a visit link at p50/p99, and what the
//! cancellation check adds to a join (a lookup in the pod's watched cache of its tenant's
//! Leases, here holding 10,000 cancelled visits).
//!
//! Run: `cargo bench -p bedside-benches --bench visit_booking`

use std::time::{Duration, Instant};

use bedside_benches::{percentile_us, print_table, rate};
use bedside_crds::join::TokenVerifier;
use bedside_crds::visit::{self, Invitee, InviteeRole, VisitPolicy, VisitRequest};

fn request(start: jiff::Timestamp, invitees: usize) -> VisitRequest {
    let roles = [
        InviteeRole::Patient,
        InviteeRole::Interpreter,
        InviteeRole::Caregiver,
    ];
    let kinds = ["Patient", "Practitioner", "RelatedPerson"];
    VisitRequest {
        start,
        duration: Duration::from_secs(30 * 60),
        host: "Practitioner/dr-7".into(),
        invitees: (0..invitees)
            .map(|i| Invitee {
                reference: format!("{}/p-{i}", kinds[i % 3]),
                role: roles[i % 3],
            })
            .collect(),
    }
}

fn main() {
    let mut key = vec![0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        // A throwaway key made here; nothing is signed with it outside this run.
        *b = (i as u8).wrapping_mul(151).wrapping_add(7);
    }
    let policy = VisitPolicy {
        tenant: "mercy-clinic".into(),
        base_url: "https://meet.mercy.example".into(),
        max_duration: Duration::from_secs(4 * 3600),
        max_participants: 10,
        opens_before: visit::DEFAULT_OPENS_BEFORE,
        grace: visit::DEFAULT_GRACE,
    };
    let now = jiff::Timestamp::now();
    let budget = Duration::from_secs(3);
    let mut rows = vec![vec![
        "case".to_string(),
        "visits/s".to_string(),
        "per visit".to_string(),
    ]];
    for invitees in [1, 3] {
        let request = request(now, invitees);
        let (per_sec, each) = rate(budget, || {
            let id = visit::new_visit_id().expect("id");
            let booked = visit::book(&request, &policy, &key, &id, now).expect("booked");
            booked.invitees.len()
        });
        rows.push(vec![
            format!("host + {invitees} invitee(s), {} links", invitees + 1),
            format!("{per_sec:.0}"),
            format!("{each:.2?}"),
        ]);
    }
    print_table("Visits booked (validate, sign every link), one core", &rows);

    // What a join pays for its link: verify a visit link inside its window.
    let booked = visit::book(&request(now, 1), &policy, &key, "visit-bench", now).expect("booked");
    let (_, token) = bedside_crds::join::parse_link(&booked.invitees[0].link).expect("a link");
    let verifier = TokenVerifier::new("mercy-clinic", &key).expect("verifier");
    let at = now.as_second() as u64;
    let mut took = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let started = Instant::now();
        let grant = verifier.verify(&token, "visit-bench", at);
        took.push(started.elapsed());
        assert!(grant.is_ok(), "{grant:?}");
    }
    took.sort();
    print_table(
        "Verifying a visit link on join (signature, tenant, room, window), 100,000 joins",
        &[
            vec!["p50".into(), "p99".into(), "max".into()],
            vec![
                format!("{:.1} µs", percentile_us(&took, 0.50)),
                format!("{:.1} µs", percentile_us(&took, 0.99)),
                format!("{:.1} µs", percentile_us(&took, 1.0)),
            ],
        ],
    );
    cancellation_check(now);
}

/// A pod's cache with 10,000 cancelled visits; each join looks its own visit up.
fn cancellation_check(now: jiff::Timestamp) {
    use bedside_crds::leases::{VisitChange, visit_change};
    use bedside_media_node::placement::leases::visit_in;
    use kube::runtime::{reflector, watcher};
    let (cache, mut writer) = reflector::store();
    let until = now + Duration::from_secs(3600);
    for i in 0..10_000 {
        let visit = format!("visit-{i}");
        let (mut lease, _) = visit_change(
            VisitChange::Cancel,
            None,
            ("mercy-clinic", &visit),
            until,
            now,
        )
        .expect("a cancellation")
        .expect("a lease");
        lease.metadata.namespace = Some("clinic".into());
        writer.apply_watcher_event(&watcher::Event::Apply(lease));
    }
    let mut took = Vec::with_capacity(100_000);
    for i in 0..100_000 {
        // Half the joins are to cancelled visits, half to others.
        let room = format!("visit-{}", i % 20_000);
        let started = Instant::now();
        let cancelled = visit_in(&cache, "clinic", "mercy-clinic", &room)
            .is_some_and(|v| v.refuses(0).is_some());
        took.push(started.elapsed());
        assert_eq!(cancelled, i % 20_000 < 10_000, "{room}");
    }
    took.sort();
    print_table(
        "The cancellation check on join (10,000 cancelled visits in the pod's cache), 100,000 joins",
        &[
            vec!["p50".into(), "p99".into(), "max".into()],
            vec![
                format!("{:.2} µs", percentile_us(&took, 0.50)),
                format!("{:.2} µs", percentile_us(&took, 0.99)),
                format!("{:.1} µs", percentile_us(&took, 1.0)),
            ],
        ],
    );
}
