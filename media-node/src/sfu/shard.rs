//! Rooms sharded over media loops, one loop per core, all behind the node's one media port.
//!
//! A room lives on one loop, chosen from its name, so everything a room's participants send
//! each other stays on one thread and no lock sits on the forwarding path. Signaling finds a
//! participant's loop from its id (the loop is its id modulo the number of loops).
//!
//! One receive task reads the port and hands each datagram to the loop that owns its sender's
//! address. Addresses are learned, not parsed: a packet from an address no loop has claimed
//! (a browser's first STUN check, an ICE restart's new path) goes to every loop, and the loop
//! whose connection accepts it (str0m's own ICE credential check) claims the address. Keeping
//! one port, rather than a port per loop, keeps what clinics open in their firewalls and what
//! the media Service exposes as it was.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::net::Protocol;

use super::participant::ParticipantId;

/// More loops than this would not find the cores to run on.
pub const MAX_LOOPS: usize = 64;

/// A route nobody has sent on for this long is forgotten (peers check their path every few
/// seconds, and a connection silent for 30 s is closed anyway).
pub const ROUTE_IDLE: Duration = Duration::from_secs(60);

/// Where one of the node's loops stands among them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The only loop of a node that runs one.
    pub const SINGLE: Shard = Shard { index: 0, count: 1 };

    /// The `n`th participant id this loop hands out: ids of different loops never collide,
    /// and the id alone says which loop holds the participant.
    pub fn participant_id(self, n: u64) -> ParticipantId {
        ParticipantId(n * self.count as u64 + self.index as u64)
    }
}

/// The loop that holds `room` on a node running `count` loops. The standard hasher with its
/// fixed keys: the same room always lands on the same loop of a node, whichever signaling task
/// asks.
pub fn loop_for_room(room: &str, count: usize) -> usize {
    let mut hasher = std::hash::DefaultHasher::new();
    room.hash(&mut hasher);
    (hasher.finish() % count.max(1) as u64) as usize
}

/// The loop that holds the participant `id`.
pub fn loop_for_participant(id: ParticipantId, count: usize) -> usize {
    (id.0 % count.max(1) as u64) as usize
}

/// How many loops a node runs: what the config asks, else one per CPU this process may use
/// (the container's CPU limit, which the Rust runtime reads from its cgroup).
pub fn loop_count(configured: Option<usize>) -> usize {
    let available = || std::thread::available_parallelism().map_or(1, |n| n.get());
    configured.unwrap_or_else(available).clamp(1, MAX_LOOPS)
}

/// A loop's news about a remote address, for the receive task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteChange {
    /// A connection of this loop accepted a packet from the address: send it its packets.
    Claimed(Protocol, SocketAddr),
    /// The connection that used the address is gone.
    Released(Protocol, SocketAddr),
}

/// Where a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Loop(usize),
    /// No loop owns the sender's address yet: every loop is asked.
    Every,
}

/// The receive task's table of which loop owns which remote address. Pure: the task passes
/// the time in.
#[derive(Debug, Default)]
pub struct Routes {
    owners: HashMap<(Protocol, SocketAddr), Owner>,
}

#[derive(Debug, Clone, Copy)]
struct Owner {
    index: usize,
    last_used: Instant,
}

impl Routes {
    /// Where a packet from `source` that arrived at `now` goes.
    pub fn target(&mut self, proto: Protocol, source: SocketAddr, now: Instant) -> Target {
        match self.owners.get_mut(&(proto, source)) {
            Some(owner) => {
                owner.last_used = now;
                Target::Loop(owner.index)
            }
            None => Target::Every,
        }
    }

    /// What loop `index` said. A release by a loop that no longer owns the address (another
    /// claimed it since) changes nothing.
    pub fn apply(&mut self, index: usize, change: RouteChange, now: Instant) {
        match change {
            RouteChange::Claimed(proto, addr) => {
                self.owners.insert(
                    (proto, addr),
                    Owner {
                        index,
                        last_used: now,
                    },
                );
            }
            RouteChange::Released(proto, addr) => {
                if self
                    .owners
                    .get(&(proto, addr))
                    .is_some_and(|o| o.index == index)
                {
                    self.owners.remove(&(proto, addr));
                }
            }
        }
    }

    /// An ICE-TCP connection closed: whatever loop owned it, its address is free.
    pub fn closed(&mut self, remote: SocketAddr) {
        self.owners.remove(&(Protocol::Tcp, remote));
    }

    /// Forgets routes idle for [`ROUTE_IDLE`].
    pub fn expire(&mut self, now: Instant) {
        self.owners
            .retain(|_, o| now.saturating_duration_since(o.last_used) < ROUTE_IDLE);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.owners.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn ids_of_different_loops_never_collide_and_name_their_loop() {
        let mut seen = std::collections::HashSet::new();
        for index in 0..3 {
            let shard = Shard { index, count: 3 };
            for n in 1..100 {
                let id = shard.participant_id(n);
                assert!(seen.insert(id), "{id} handed out twice");
                assert_eq!(loop_for_participant(id, 3), index);
            }
        }
        assert_eq!(loop_for_participant(Shard::SINGLE.participant_id(7), 1), 0);
    }

    #[test]
    fn a_room_always_lands_on_the_same_loop_and_rooms_spread_over_loops() {
        let mut per_loop = [0usize; 4];
        for n in 0..400 {
            let room = format!("visit-{n}");
            let index = loop_for_room(&room, 4);
            assert_eq!(index, loop_for_room(&room, 4));
            per_loop[index] += 1;
        }
        // 100 expected on each; SipHash spreads names far better than this bound.
        assert!(
            per_loop.iter().all(|n| (60..=140).contains(n)),
            "{per_loop:?}"
        );
        assert_eq!(loop_for_room("visit-1", 1), 0);
    }

    #[test]
    fn unknown_senders_go_to_every_loop_until_one_claims_them() {
        let now = Instant::now();
        let mut routes = Routes::default();
        assert_eq!(routes.target(Protocol::Udp, addr(5000), now), Target::Every);
        routes.apply(1, RouteChange::Claimed(Protocol::Udp, addr(5000)), now);
        assert_eq!(
            routes.target(Protocol::Udp, addr(5000), now),
            Target::Loop(1)
        );
        // The same address over TCP is another path.
        assert_eq!(routes.target(Protocol::Tcp, addr(5000), now), Target::Every);
    }

    #[test]
    fn a_release_by_a_former_owner_keeps_the_new_owners_route() {
        let now = Instant::now();
        let mut routes = Routes::default();
        let key = (Protocol::Udp, addr(5000));
        routes.apply(0, RouteChange::Claimed(key.0, key.1), now);
        routes.apply(1, RouteChange::Claimed(key.0, key.1), now);
        routes.apply(0, RouteChange::Released(key.0, key.1), now);
        assert_eq!(routes.target(key.0, key.1, now), Target::Loop(1));
        routes.apply(1, RouteChange::Released(key.0, key.1), now);
        assert_eq!(routes.target(key.0, key.1, now), Target::Every);
    }

    #[test]
    fn idle_routes_and_closed_connections_are_forgotten() {
        let start = Instant::now();
        let mut routes = Routes::default();
        routes.apply(0, RouteChange::Claimed(Protocol::Udp, addr(1)), start);
        routes.apply(0, RouteChange::Claimed(Protocol::Udp, addr(2)), start);
        routes.apply(1, RouteChange::Claimed(Protocol::Tcp, addr(3)), start);
        let later = start + ROUTE_IDLE - Duration::from_secs(1);
        routes.target(Protocol::Udp, addr(2), later);
        routes.closed(addr(3));
        routes.expire(start + ROUTE_IDLE);
        assert_eq!(routes.len(), 1);
        assert_eq!(
            routes.target(Protocol::Udp, addr(2), later),
            Target::Loop(0)
        );
    }

    #[test]
    fn the_loop_count_is_what_is_asked_within_bounds() {
        assert_eq!(loop_count(Some(3)), 3);
        assert_eq!(loop_count(Some(0)), 1);
        assert_eq!(loop_count(Some(1000)), MAX_LOOPS);
        assert!(loop_count(None) >= 1);
    }
}
