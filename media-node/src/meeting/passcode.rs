//! The node's passcode check: the meeting's passcode (derived as the join contract says,
//! `bedside_crds::join::passcode`), compared in constant time, and guarded against guessing: a
//! client (by IP address) that fails [`MAX_FAILURES`] times within [`WINDOW`] is refused for
//! [`COOL_DOWN`] whatever it sends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bedside_crds::join::{passcode as derive, passcode_matches as matches};

pub const MAX_FAILURES: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(600);
pub const COOL_DOWN: Duration = Duration::from_secs(300);

/// The node's passcode check: the key passcodes derive from, and who has been guessing.
#[derive(Debug)]
pub struct Passcodes {
    join_key: Vec<u8>,
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
    pub fn new(join_key: &[u8]) -> Self {
        Self {
            join_key: join_key.to_vec(),
            guard: Default::default(),
        }
    }

    /// The tenant's join key (it also vouches for client addresses between pods).
    pub fn join_key(&self) -> &[u8] {
        &self.join_key
    }

    /// Checks `given` against `room`'s passcode for `client`: a right one clears the client's
    /// failures, a wrong or missing one counts towards its cool-down.
    pub fn check(
        &self,
        room: &str,
        client: IpAddr,
        given: Option<&str>,
        now: Instant,
    ) -> Result<(), Refusal> {
        // The guard holds counters only: a panic elsewhere leaves nothing half-written to fear.
        let mut guard = self.guard.lock().unwrap_or_else(|e| e.into_inner());
        if let Attempt::CoolingDown { for_ } = guard.check(client, now) {
            return Err(Refusal::CoolingDown(for_));
        }
        match given {
            Some(given) if matches(&derive(&self.join_key, room), given) => {
                guard.succeeded(client);
                Ok(())
            }
            given => {
                let cool_down = match guard.failed(client, now) {
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
    /// Too many failures from this client: refused until then.
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

/// Failed attempts per client address. Bounded: entries older than the window and the
/// cool-down are dropped as new failures arrive.
#[derive(Debug, Default)]
pub struct Guard {
    by_client: HashMap<IpAddr, Failures>,
}

/// More clients than this and the oldest entries are swept first.
const MAX_TRACKED: usize = 100_000;

impl Guard {
    pub fn check(&self, client: IpAddr, now: Instant) -> Attempt {
        match self.by_client.get(&client).and_then(|f| f.locked_until) {
            Some(until) if until > now => Attempt::CoolingDown { for_: until - now },
            _ => Attempt::Allowed,
        }
    }

    /// Records a failure; returns the attempt state after it.
    pub fn failed(&mut self, client: IpAddr, now: Instant) -> Attempt {
        if self.by_client.len() >= MAX_TRACKED {
            self.by_client.retain(|_, f| {
                now.saturating_duration_since(f.first) < WINDOW
                    || f.locked_until.is_some_and(|u| u > now)
            });
        }
        let f = self.by_client.entry(client).or_insert(Failures {
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
        if f.count >= MAX_FAILURES {
            f.locked_until = Some(now + COOL_DOWN);
        }
        self.check(client, now)
    }

    /// A right passcode clears the client's failures.
    pub fn succeeded(&mut self, client: IpAddr) {
        self.by_client.remove(&client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_admits_the_right_passcode_and_cools_down_a_guesser() {
        let passcodes = Passcodes::new(&[7; 32]);
        let right = derive(&[7; 32], "visit-1");
        let (guesser, other) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let t0 = Instant::now();
        assert_eq!(passcodes.check("visit-1", other, Some(&right), t0), Ok(()));
        assert_eq!(
            passcodes.check("visit-1", guesser, None, t0),
            Err(Refusal::Failed {
                given: false,
                cool_down: None
            })
        );
        for _ in 1..MAX_FAILURES - 1 {
            let refused = passcodes.check("visit-1", guesser, Some("00000000"), t0);
            assert_eq!(
                refused,
                Err(Refusal::Failed {
                    given: true,
                    cool_down: None
                })
            );
        }
        assert_eq!(
            passcodes.check("visit-1", guesser, Some("00000000"), t0),
            Err(Refusal::Failed {
                given: true,
                cool_down: Some(COOL_DOWN)
            }),
            "the last failure allowed starts the cool-down"
        );
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            passcodes.check("visit-1", guesser, Some(&right), later),
            Err(Refusal::CoolingDown(COOL_DOWN - Duration::from_secs(60))),
            "not even the right passcode during the cool-down"
        );
        assert_eq!(
            passcodes.check("visit-1", other, Some(&right), later),
            Ok(())
        );
        assert_eq!(
            passcodes.check("visit-1", guesser, Some(&right), t0 + COOL_DOWN),
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
            assert_eq!(guard.failed(guesser, t0), Attempt::Allowed);
        }
        assert_eq!(
            guard.failed(guesser, t0),
            Attempt::CoolingDown { for_: COOL_DOWN }
        );
        assert_eq!(
            guard.check(guesser, t0 + Duration::from_secs(60)),
            Attempt::CoolingDown {
                for_: COOL_DOWN - Duration::from_secs(60)
            }
        );
        assert_eq!(guard.check(other, t0), Attempt::Allowed);
        assert_eq!(guard.check(guesser, t0 + COOL_DOWN), Attempt::Allowed);
        // After the cool-down it starts over.
        assert_eq!(guard.failed(guesser, t0 + COOL_DOWN), Attempt::Allowed);
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_add_up() {
        let (mut guard, t0) = (Guard::default(), Instant::now());
        let client: IpAddr = "::1".parse().expect("ip");
        for i in 0..20u64 {
            let at = t0 + WINDOW / 4 * (i as u32);
            // 4 failures per window at most
            assert_eq!(guard.failed(client, at), Attempt::Allowed, "failure {i}");
        }
    }

    #[test]
    fn a_right_passcode_clears_the_count() {
        let (mut guard, t0) = (Guard::default(), Instant::now());
        let client: IpAddr = "127.0.0.1".parse().expect("ip");
        for _ in 1..MAX_FAILURES {
            guard.failed(client, t0);
        }
        guard.succeeded(client);
        assert_eq!(guard.failed(client, t0), Attempt::Allowed);
    }
}
