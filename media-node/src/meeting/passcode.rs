//! The node's passcode check: the meeting's passcode (derived as the join contract says,
//! `bedside_crds::join::passcode`), compared in constant time, and guarded against guessing: a
//! client network (an IPv4 address or an IPv6 /64) that fails [`MAX_FAILURES`] times within
//! [`WINDOW`], or a room failed [`MAX_ROOM_FAILURES`] times from anywhere, is refused for
//! [`COOL_DOWN`] whatever it sends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bedside_crds::join::{passcode as derive, passcode_matches as matches};

use crate::limits::Network;

pub const MAX_FAILURES: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(600);
pub const COOL_DOWN: Duration = Duration::from_secs(300);
/// Failures at one room, from anywhere, within [`WINDOW`] before it cools down: guessing a
/// passcode needs the room's link, and a leaked link gets this many tries per window at most.
pub const MAX_ROOM_FAILURES: u32 = 20;

/// The node's passcode check: who has been guessing.
#[derive(Debug, Default)]
pub struct Passcodes {
    guard: std::sync::Mutex<Guard>,
}

/// Why a passcode did not let a client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client failed too often: this attempt was not even compared.
    CoolingDown(Duration),
    /// Wrong (`given`) or missing; `cool_down` when this failure started one.
    Failed {
        given: bool,
        cool_down: Option<Duration>,
    },
}

impl Refusal {
    /// The reason in the audit record.
    pub fn audit_reason(self) -> &'static str {
        match self {
            Refusal::CoolingDown(_) => "cool-down",
            Refusal::Failed { given: true, .. } => "passcode-wrong",
            Refusal::Failed { given: false, .. } => "passcode-missing",
        }
    }
}

impl Passcodes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks `given` against `room`'s passcode under `join_key` (the key that signed the
    /// link) for `client`: a right one clears the client's failures, a wrong or missing one
    /// counts towards its cool-down.
    pub fn check(
        &self,
        join_key: &[u8],
        room: &str,
        client: IpAddr,
        given: Option<&str>,
        now: Instant,
    ) -> Result<(), Refusal> {
        // The guard holds counters only: a panic elsewhere leaves nothing half-written to fear.
        let mut guard = self.guard.lock().unwrap_or_else(|e| e.into_inner());
        if let Attempt::CoolingDown { for_ } = guard.check(room, client, now) {
            return Err(Refusal::CoolingDown(for_));
        }
        match given {
            Some(given) if matches(&derive(join_key, room), given) => Ok(()),
            given => {
                let cool_down = match guard.failed(room, client, now) {
                    Attempt::CoolingDown { for_ } => Some(for_),
                    Attempt::Allowed => None,
                };
                Err(Refusal::Failed {
                    given: given.is_some(),
                    cool_down,
                })
            }
        }
    }
}

/// What a passcode attempt may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Allowed,
    /// Too many failures from this client network, or at this room: refused until then.
    CoolingDown {
        for_: Duration,
    },
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first: Instant,
    locked_until: Option<Instant>,
}

/// Failed attempts per key within [`WINDOW`]; `max` of them start a [`COOL_DOWN`]. Bounded:
/// past [`MAX_TRACKED`] keys, entries older than the window and the cool-down are swept.
#[derive(Debug)]
struct Counter<K> {
    max: u32,
    by_key: HashMap<K, Failures>,
}

impl<K: std::hash::Hash + Eq> Counter<K> {
    fn new(max: u32) -> Self {
        Self {
            max,
            by_key: HashMap::new(),
        }
    }

    fn check(&self, key: &K, now: Instant) -> Attempt {
        match self.by_key.get(key).and_then(|f| f.locked_until) {
            Some(until) if until > now => Attempt::CoolingDown { for_: until - now },
            _ => Attempt::Allowed,
        }
    }

    fn failed(&mut self, key: K, now: Instant) -> Option<Duration> {
        if self.by_key.len() >= MAX_TRACKED {
            self.by_key.retain(|_, f| {
                now.saturating_duration_since(f.first) < WINDOW
                    || f.locked_until.is_some_and(|u| u > now)
            });
        }
        let f = self.by_key.entry(key).or_insert(Failures {
            count: 0,
            first: now,
            locked_until: None,
        });
        if now.saturating_duration_since(f.first) >= WINDOW
            || f.locked_until.is_some_and(|u| u <= now)
        {
            *f = Failures {
                count: 0,
                first: now,
                locked_until: None,
            };
        }
        f.count += 1;
        if f.count >= self.max {
            f.locked_until = Some(now + COOL_DOWN);
            return Some(COOL_DOWN);
        }
        None
    }
}

/// Failed attempts per client network (an IPv4 address or an IPv6 /64) and per room. A right
/// passcode clears nothing: an attacker cannot reset its count with a passcode of its own
/// room, and rotating addresses (within a /64, or across many) still meets the room's limit.
#[derive(Debug)]
pub struct Guard {
    by_network: Counter<Network>,
    by_room: Counter<String>,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            by_network: Counter::new(MAX_FAILURES),
            by_room: Counter::new(MAX_ROOM_FAILURES),
        }
    }
}

/// More keys than this and the oldest entries are swept first.
const MAX_TRACKED: usize = 100_000;

impl Guard {
    pub fn check(&self, room: &str, client: IpAddr, now: Instant) -> Attempt {
        let network = self.by_network.check(&Network::of(client), now);
        let room = self.by_room.check(&room.to_string(), now);
        match (network, room) {
            (Attempt::CoolingDown { for_: a }, Attempt::CoolingDown { for_: b }) => {
                Attempt::CoolingDown { for_: a.max(b) }
            }
            (Attempt::Allowed, other) | (other, Attempt::Allowed) => other,
        }
    }

    /// Records a failure; returns the attempt state after it.
    pub fn failed(&mut self, room: &str, client: IpAddr, now: Instant) -> Attempt {
        self.by_network.failed(Network::of(client), now);
        self.by_room.failed(room.to_string(), now);
        self.check(room, client, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn the_check_admits_the_right_passcode_and_cools_down_a_guesser() {
        let passcodes = Passcodes::new();
        let right = derive(&[7; 32], "visit-1");
        let (guesser, other) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let t0 = Instant::now();
        assert_eq!(
            passcodes.check(&KEY, "visit-1", other, Some(&right), t0),
            Ok(())
        );
        assert_eq!(
            passcodes.check(&KEY, "visit-1", guesser, None, t0),
            Err(Refusal::Failed {
                given: false,
                cool_down: None
            })
        );
        for _ in 1..MAX_FAILURES - 1 {
            let refused = passcodes.check(&KEY, "visit-1", guesser, Some("00000000"), t0);
            assert_eq!(
                refused,
                Err(Refusal::Failed {
                    given: true,
                    cool_down: None
                })
            );
        }
        assert_eq!(
            passcodes.check(&KEY, "visit-1", guesser, Some("00000000"), t0),
            Err(Refusal::Failed {
                given: true,
                cool_down: Some(COOL_DOWN)
            }),
            "the last failure allowed starts the cool-down"
        );
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            passcodes.check(&KEY, "visit-1", guesser, Some(&right), later),
            Err(Refusal::CoolingDown(COOL_DOWN - Duration::from_secs(60))),
            "not even the right passcode during the cool-down"
        );
        assert_eq!(
            passcodes.check(&KEY, "visit-1", other, Some(&right), later),
            Ok(())
        );
        assert_eq!(
            passcodes.check(&KEY, "visit-1", guesser, Some(&right), t0 + COOL_DOWN),
            Ok(())
        );
        assert_eq!(Refusal::CoolingDown(COOL_DOWN).audit_reason(), "cool-down");
    }

    #[test]
    fn a_guessing_client_is_cooled_down_and_others_are_not() {
        let (mut guard, t0) = (Guard::default(), Instant::now());
        let guesser: IpAddr = "127.0.0.9".parse().expect("ip");
        let other: IpAddr = "127.0.0.10".parse().expect("ip");
        for _ in 1..MAX_FAILURES {
            assert_eq!(guard.failed("r", guesser, t0), Attempt::Allowed);
        }
        assert_eq!(
            guard.failed("r", guesser, t0),
            Attempt::CoolingDown { for_: COOL_DOWN }
        );
        assert_eq!(
            guard.check("r", guesser, t0 + Duration::from_secs(60)),
            Attempt::CoolingDown {
                for_: COOL_DOWN - Duration::from_secs(60)
            }
        );
        assert_eq!(guard.check("r", other, t0), Attempt::Allowed);
        assert_eq!(
            guard.check("other-room", guesser, t0),
            guard.check("r", guesser, t0)
        );
        assert_eq!(guard.check("r", guesser, t0 + COOL_DOWN), Attempt::Allowed);
        // After the cool-down it starts over.
        assert_eq!(guard.failed("r", guesser, t0 + COOL_DOWN), Attempt::Allowed);
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_add_up() {
        let (mut guard, t0) = (Guard::default(), Instant::now());
        let client: IpAddr = "::1".parse().expect("ip");
        for i in 0..20u64 {
            let at = t0 + WINDOW / 4 * (i as u32);
            // 4 failures per window at most
            assert_eq!(
                guard.failed("r", client, at),
                Attempt::Allowed,
                "failure {i}"
            );
        }
    }

    #[test]
    fn a_right_passcode_for_another_room_does_not_reset_a_guesser() {
        let passcodes = Passcodes::new();
        let own = derive(&[7; 32], "my-room");
        let attacker = IpAddr::from([10, 0, 0, 1]);
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            assert!(
                passcodes
                    .check(&KEY, "victim", attacker, Some("00000000"), t0)
                    .is_err()
            );
            assert_eq!(
                passcodes.check(&KEY, "my-room", attacker, Some(&own), t0),
                Ok(())
            );
        }
        assert_eq!(
            passcodes.check(&KEY, "victim", attacker, Some("00000000"), t0),
            Err(Refusal::Failed {
                given: true,
                cool_down: Some(COOL_DOWN)
            }),
            "successes elsewhere between the guesses change nothing"
        );
    }

    #[test]
    fn rotating_addresses_meets_the_networks_and_then_the_rooms_limit() {
        let (mut guard, t0) = (Guard::default(), Instant::now());
        // Every address of one /64 is one network.
        for n in 0..MAX_FAILURES - 1 {
            let ip: IpAddr = format!("2001:db8:7:7::{n:x}").parse().expect("ip");
            assert_eq!(guard.failed("victim", ip, t0), Attempt::Allowed);
        }
        let next: IpAddr = "2001:db8:7:7::ffff".parse().expect("ip");
        assert_eq!(
            guard.failed("victim", next, t0),
            Attempt::CoolingDown { for_: COOL_DOWN }
        );
        // Across networks, the room's own limit holds.
        for n in MAX_FAILURES..MAX_ROOM_FAILURES - 1 {
            let ip = IpAddr::from([198, 51, 100, u8::try_from(n).expect("small")]);
            assert_eq!(
                guard.failed("victim", ip, t0),
                Attempt::Allowed,
                "failure {n}"
            );
        }
        let last = IpAddr::from([203, 0, 113, 1]);
        assert_eq!(
            guard.failed("victim", last, t0),
            Attempt::CoolingDown { for_: COOL_DOWN }
        );
        let fresh = IpAddr::from([203, 0, 113, 2]);
        assert_eq!(
            guard.check("victim", fresh, t0),
            Attempt::CoolingDown { for_: COOL_DOWN },
            "the room cools down for everyone"
        );
        assert_eq!(guard.check("next-door", fresh, t0), Attempt::Allowed);
    }

    /// Clients: two IPv4 hosts, two addresses of one IPv6 /64, another /64, and their
    /// networks as the guard must see them.
    const CLIENTS: [(&str, usize); 5] = [
        ("10.0.0.1", 0),
        ("10.0.0.2", 1),
        ("2001:db8:1:1::1", 2),
        ("2001:db8:1:1::2", 2),
        ("2001:db8:2:2::1", 3),
    ];

    /// At most `max` compared failures per episode, and episodes start at least a cool-down
    /// apart: any span of `d` holds at most `max * (d / COOL_DOWN + 2)`.
    fn within_rate(times: &[Instant], max: u32) -> bool {
        times.iter().enumerate().all(|(i, from)| {
            times[i..].iter().enumerate().all(|(n, to)| {
                let spans = (*to - *from).as_secs() / COOL_DOWN.as_secs() + 2;
                (n as u64) < u64::from(max) * spans
            })
        })
    }

    /// Seconds between attempts: mostly a burst, sometimes a pause, now and then a long one.
    fn pace() -> impl proptest::strategy::Strategy<Value = u64> {
        proptest::prop_oneof![6 => 0u64..3, 3 => 0u64..120, 1 => 0u64..1200]
    }

    proptest::proptest! {
        /// Any mix of right and wrong passcodes from any clients at any pace: a right passcode
        /// is only ever held back by a cool-down, a cool-down follows a real run of failures
        /// (of that network or at that room), and no network or room gets more guesses
        /// compared than the limits allow.
        #[test]
        fn the_guard_bounds_guessing_and_never_refuses_without_cause(
            attempts in proptest::collection::vec((0usize..3, 0usize..CLIENTS.len(), proptest::bool::weighted(0.2), pace()), 1..300),
        ) {
            let passcodes = Passcodes::new();
            let mut now = Instant::now();
            // Compared failures, by network and by room.
            let mut by_network: Vec<Vec<Instant>> = vec![Vec::new(); 4];
            let mut by_room: Vec<Vec<Instant>> = vec![Vec::new(); 3];
            for (room, client, right, wait) in attempts {
                now += Duration::from_secs(wait);
                let (ip, network) = CLIENTS[client];
                let name = format!("visit-{room}");
                let given = if right { derive(&KEY, &name) } else { "00000000".to_string() };
                let outcome = passcodes.check(&KEY, &name, ip.parse().expect("ip"), Some(&given), now);
                match outcome {
                    Ok(()) => proptest::prop_assert!(right, "a wrong passcode let in"),
                    Err(Refusal::CoolingDown(_)) => {
                        let recent = |times: &[Instant]| {
                            times.iter().filter(|t| now.saturating_duration_since(**t) < WINDOW + COOL_DOWN).count() as u32
                        };
                        proptest::prop_assert!(
                            recent(&by_network[network]) >= MAX_FAILURES || recent(&by_room[room]) >= MAX_ROOM_FAILURES,
                            "a cool-down without a run of failures behind it"
                        );
                    }
                    Err(Refusal::Failed { .. }) => {
                        proptest::prop_assert!(!right, "a right passcode counted as a failure");
                        by_network[network].push(now);
                        by_room[room].push(now);
                    }
                }
            }
            for times in &by_network {
                proptest::prop_assert!(within_rate(times, MAX_FAILURES), "a network guessed past its limit");
            }
            for times in &by_room {
                proptest::prop_assert!(within_rate(times, MAX_ROOM_FAILURES), "a room was guessed past its limit");
            }
        }
    }
}
