//! Room placement across a tenant's media pods: every participant of a room meets on one pod.
//!
//! The shared state is a set of Kubernetes Leases in the tenant's namespace (no new
//! infrastructure): each pod renews a *node lease* saying it is alive, where its signaling
//! listens inside the cluster and whether it is draining; each room has a *room lease* naming
//! the pod that holds it. A room lease is valid while its holder's node lease is; creating one
//! is atomic on the API server, so two pods placing the same new room agree on one holder.
//!
//! This module decides, without I/O; [`leases`] reads and writes the Leases.

pub mod leases;

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;

/// Labels on the Leases, and room keys: one definition in the shared crate (the CLI writes
/// cancellations); annotations only the node reads and writes are named here.
pub use bedside_crds::leases::{KIND_LABEL, ROOM_KEY_LABEL, TENANT_LABEL, room_key};
pub const SIGNALING_ANNOTATION: &str = "bedside.health/signaling";
pub const DRAINING_ANNOTATION: &str = "bedside.health/draining";
/// On a room lease: the meeting's memory (`meeting::Memory`, JSON), for the pod that holds the
/// room next.
pub const MEMORY_ANNOTATION: &str = "bedside.health/meeting-memory";

/// A pod as its node lease shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub name: String,
    /// Its signaling endpoint inside the cluster (`wss://<pod IP>:<port>/ws`).
    pub url: Option<String>,
    pub draining: bool,
    pub renewed: Timestamp,
    pub ttl: Duration,
}

impl NodeView {
    pub fn live(&self, now: Timestamp) -> bool {
        let ttl = jiff::SignedDuration::try_from(self.ttl).unwrap_or(jiff::SignedDuration::MAX);
        now.duration_since(self.renewed) < ttl
    }
}

/// A room lease: the hash of the room's name and the pod holding it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomView {
    pub key: String,
    pub holder: String,
}

/// Where a room's participants go.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The room is held by this live pod (draining or not: its call goes on there).
    Held { by: String },
    /// The room has no live holder: place it on this pod (least loaded, Ready, not draining).
    Place { on: String },
    /// No pod can take a new room.
    Nowhere,
}

/// Decides where `room`'s participants meet: with its live holder, or else on the live,
/// non-draining pod holding the fewest live rooms (ties broken by name, so that every pod
/// that decides at once picks the same).
pub fn decide(
    room: Option<&RoomView>,
    nodes: &[NodeView],
    rooms: &[RoomView],
    now: Timestamp,
) -> Decision {
    let live: HashMap<&str, &NodeView> = nodes
        .iter()
        .filter(|n| n.live(now) && n.url.is_some())
        .map(|n| (n.name.as_str(), n))
        .collect();
    if let Some(room) = room
        && live.contains_key(room.holder.as_str())
    {
        return Decision::Held {
            by: room.holder.clone(),
        };
    }
    let mut load: HashMap<&str, usize> = HashMap::new();
    for room in rooms {
        *load.entry(room.holder.as_str()).or_default() += 1;
    }
    live.values()
        .filter(|n| !n.draining)
        .min_by_key(|n| (load.get(n.name.as_str()).copied().unwrap_or(0), &n.name))
        .map_or(Decision::Nowhere, |n| Decision::Place {
            on: n.name.clone(),
        })
}

/// Which of its room leases a pod lets go: those whose room has had no meeting here for
/// `linger` (a room just placed here waits that long for its first participant).
#[derive(Debug, Default)]
pub struct Releases {
    idle_since: HashMap<String, std::time::Instant>,
}

impl Releases {
    /// `held`: keys of the room leases this pod holds; `active`: keys of its meetings.
    pub fn due(
        &mut self,
        held: &[String],
        active: &[String],
        now: std::time::Instant,
        linger: Duration,
    ) -> Vec<String> {
        self.idle_since
            .retain(|key, _| held.contains(key) && !active.contains(key));
        held.iter()
            .filter(|key| !active.contains(key))
            .filter(|key| {
                let since = *self.idle_since.entry((*key).clone()).or_insert(now);
                now.duration_since(since) >= linger
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    fn node(name: &str, age_s: i64, draining: bool, now: Timestamp) -> NodeView {
        NodeView {
            name: name.into(),
            url: Some(format!("wss://{name}:8443/ws")),
            draining,
            renewed: now - jiff::SignedDuration::from_secs(age_s),
            ttl: TTL,
        }
    }

    fn room(key: &str, holder: &str) -> RoomView {
        RoomView {
            key: key.into(),
            holder: holder.into(),
        }
    }

    #[test]
    fn a_room_with_a_live_holder_stays_there_even_while_it_drains() {
        let now = Timestamp::now();
        let nodes = [node("a", 1, true, now), node("b", 1, false, now)];
        let held = room("r", "a");
        assert_eq!(
            decide(Some(&held), &nodes, std::slice::from_ref(&held), now),
            Decision::Held { by: "a".into() }
        );
    }

    #[test]
    fn new_rooms_go_to_the_least_loaded_live_pod_that_is_not_draining() {
        let now = Timestamp::now();
        let nodes = [
            node("a", 1, false, now),
            node("b", 1, false, now),
            node("c", 1, true, now),
            node("d", 30, false, now), // dead: its lease ran out
        ];
        let rooms = [room("1", "a"), room("2", "a"), room("3", "b")];
        assert_eq!(
            decide(None, &nodes, &rooms, now),
            Decision::Place { on: "b".into() }
        );
        // Equal load: every pod deciding at once picks the same one.
        assert_eq!(
            decide(None, &nodes, &rooms[..2], now),
            Decision::Place { on: "b".into() }
        );
        assert_eq!(
            decide(None, &nodes, &[], now),
            Decision::Place { on: "a".into() }
        );
    }

    #[test]
    fn a_room_whose_pod_died_is_placed_again() {
        let now = Timestamp::now();
        let nodes = [node("a", 30, false, now), node("b", 1, false, now)];
        let orphan = room("r", "a");
        assert_eq!(
            decide(Some(&orphan), &nodes, std::slice::from_ref(&orphan), now),
            Decision::Place { on: "b".into() }
        );
    }

    #[test]
    fn with_every_pod_draining_or_dead_no_room_is_placed() {
        let now = Timestamp::now();
        let nodes = [node("a", 1, true, now), node("b", 60, false, now)];
        assert_eq!(decide(None, &nodes, &[], now), Decision::Nowhere);
        assert_eq!(decide(None, &[], &[], now), Decision::Nowhere);
    }

    #[test]
    fn a_room_lease_is_let_go_only_after_its_room_stayed_empty_for_the_linger() {
        let mut releases = Releases::default();
        let t0 = std::time::Instant::now();
        let linger = Duration::from_secs(20);
        let held = ["r1".to_string(), "r2".to_string()];
        let active = ["r1".to_string()];
        assert!(releases.due(&held, &active, t0, linger).is_empty());
        assert!(
            releases
                .due(&held, &active, t0 + Duration::from_secs(19), linger)
                .is_empty()
        );
        assert_eq!(
            releases.due(&held, &active, t0 + Duration::from_secs(20), linger),
            ["r2"]
        );
        // A participant came back in time: the clock starts again when the room empties.
        let both = ["r1".to_string(), "r2".to_string()];
        assert!(
            releases
                .due(&held, &both, t0 + Duration::from_secs(21), linger)
                .is_empty()
        );
        assert!(
            releases
                .due(&held, &active, t0 + Duration::from_secs(22), linger)
                .is_empty()
        );
    }
}
