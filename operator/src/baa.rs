//! Whether a Business Associate Agreement is in force at an instant, and when that changes.
//!
//! Dates are whole days in UTC: an agreement is in force from 00:00 UTC on `signedOn` through
//! the end of `expiresOn` (its last day), i.e. until 00:00 UTC the day after.

use bedside_crds::tenant::BusinessAssociateAgreement;
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaaState {
    /// Signed on a later day; media waits until then.
    NotYetInForce {
        signed_on: Date,
    },
    Active {
        expires_on: Option<Date>,
    },
    Expired {
        expired_on: Date,
    },
}

impl BaaState {
    pub fn is_active(self) -> bool {
        matches!(self, BaaState::Active { .. })
    }
}

fn start_of(date: Date) -> Timestamp {
    date.to_zoned(TimeZone::UTC)
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::MAX)
}

fn end_of(date: Date) -> Timestamp {
    date.tomorrow().map(start_of).unwrap_or(Timestamp::MAX)
}

/// The agreement's state at `now`, and the next instant it changes (for an exact requeue).
pub fn state_at(baa: &BusinessAssociateAgreement, now: Timestamp) -> (BaaState, Option<Timestamp>) {
    let begins = start_of(baa.signed_on);
    if now < begins {
        return (
            BaaState::NotYetInForce {
                signed_on: baa.signed_on,
            },
            Some(begins),
        );
    }
    match baa.expires_on {
        Some(last_day) if now >= end_of(last_day) => (
            BaaState::Expired {
                expired_on: last_day,
            },
            None,
        ),
        Some(last_day) => (
            BaaState::Active {
                expires_on: Some(last_day),
            },
            Some(end_of(last_day)),
        ),
        None => (BaaState::Active { expires_on: None }, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baa(signed: &str, expires: Option<&str>) -> BusinessAssociateAgreement {
        BusinessAssociateAgreement {
            reference: "BAA-1".into(),
            signed_on: signed.parse().expect("date"),
            expires_on: expires.map(|e| e.parse().expect("date")),
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn an_agreement_is_in_force_through_its_last_day_and_requeues_at_its_end() {
        let agreement = baa("2026-01-15", Some("2029-01-14"));
        let (state, next) = state_at(&agreement, at("2029-01-14T23:59:59Z"));
        assert!(state.is_active());
        assert_eq!(next, Some(at("2029-01-15T00:00:00Z")));
        let (state, next) = state_at(&agreement, at("2029-01-15T00:00:00Z"));
        assert_eq!(
            state,
            BaaState::Expired {
                expired_on: "2029-01-14".parse().expect("date")
            }
        );
        assert_eq!(next, None);
    }

    #[test]
    fn an_agreement_signed_for_a_later_day_waits_and_requeues_at_its_start() {
        let (state, next) = state_at(&baa("2027-03-01", None), at("2027-02-28T12:00:00Z"));
        assert!(!state.is_active());
        assert_eq!(next, Some(at("2027-03-01T00:00:00Z")));
    }

    #[test]
    fn an_open_ended_agreement_never_needs_a_requeue() {
        let (state, next) = state_at(&baa("2025-09-01", None), at("2040-01-01T00:00:00Z"));
        assert_eq!(state, BaaState::Active { expires_on: None });
        assert_eq!(next, None);
    }
}
