//! Meeting passcodes: derived, checked in constant time, and guarded against guessing.
//!
//! A meeting's passcode is the first 8 decimal digits of HMAC-SHA-256(the tenant's join key,
//! "bedside-passcode:" + room). The scheduling system, which holds the key and mints the join
//! tokens, computes it too and gives it to the patient out of band (a text message, the
//! appointment letter), so a leaked link alone does not get anyone in, and the node keeps no
//! passcode state. A client (by IP address) that fails [`MAX_FAILURES`] times within
//! [`WINDOW`] is refused for [`COOL_DOWN`] whatever it sends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;

pub const DIGITS: usize = 8;
pub const MAX_FAILURES: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(600);
pub const COOL_DOWN: Duration = Duration::from_secs(300);

/// The passcode of `room` under the tenant's join key.
pub fn derive(join_key: &[u8], room: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, join_key);
    let tag = hmac::sign(&key, format!("bedside-passcode:{room}").as_bytes());
    let mut n = u64::from_be_bytes(tag.as_ref()[..8].try_into().unwrap_or_default());
    let mut digits = String::with_capacity(DIGITS);
    for _ in 0..DIGITS {
        digits.push(char::from(b'0' + (n % 10) as u8));
        n /= 10;
    }
    digits
}

/// Whether `given` is the passcode, in time that does not depend on where they differ.
/// Spaces and dashes people type between digit groups are ignored.
pub fn matches(expected: &str, given: &str) -> bool {
    let given: String = given.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    expected.len() == given.len()
        && aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), given.as_bytes())
            .is_ok()
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
    fn the_passcode_is_eight_digits_per_room_and_key() {
        let a = derive(&[1; 32], "visit-42");
        assert_eq!(a.len(), DIGITS);
        assert!(a.bytes().all(|b| b.is_ascii_digit()), "{a}");
        assert_eq!(a, derive(&[1; 32], "visit-42"), "stable");
        assert_ne!(a, derive(&[1; 32], "visit-43"), "per room");
        assert_ne!(a, derive(&[2; 32], "visit-42"), "per tenant key");
    }

    #[test]
    fn typed_separators_are_forgiven_and_anything_else_fails() {
        assert!(matches("12345678", "1234 5678"));
        assert!(matches("12345678", "1234-5678"));
        assert!(!matches("12345678", "12345679"));
        assert!(!matches("12345678", "1234567"));
        assert!(!matches("12345678", ""));
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
