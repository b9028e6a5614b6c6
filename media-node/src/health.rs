//! What the kubelet's probes ask: is the node alive (liveness), and should it get new visits
//! (readiness). Pure verdicts over facts the shell gathers, so tests need no clock or socket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sfu::shard::MAX_LOOPS;

/// The media loop has not turned for this long: it is stuck (or gone), and the pod must be
/// restarted. The loop turns at least every 100 ms even when idle.
pub const STUCK_AFTER: Duration = Duration::from_secs(10);

/// Proof of life from the media loops: each beats on every turn; the probes read the age of
/// the oldest beat, so one stuck loop (its rooms' calls frozen) is seen though others turn.
#[derive(Debug)]
pub struct Heartbeat {
    origin: Instant,
    /// Milliseconds since `origin` of each loop's last beat; `NEVER` for a slot no loop uses.
    last_ms: [AtomicU64; MAX_LOOPS],
}

const NEVER: u64 = u64::MAX;

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: std::array::from_fn(|_| AtomicU64::new(NEVER)),
        }
    }
}

impl Heartbeat {
    /// Loop `index` turned at `now`.
    pub fn beat(&self, index: usize, now: Instant) {
        let ms = now.saturating_duration_since(self.origin).as_millis() as u64;
        if let Some(slot) = self.last_ms.get(index) {
            slot.store(ms, Ordering::Relaxed);
        }
    }

    /// How long ago the loop that turned least recently last turned (since the start when no
    /// loop has turned yet).
    pub fn age(&self, now: Instant) -> Duration {
        let oldest = self
            .last_ms
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .filter(|ms| *ms != NEVER)
            .min()
            .unwrap_or(0);
        now.saturating_duration_since(self.origin + Duration::from_millis(oldest))
    }
}

/// The facts a probe verdict rests on.
#[derive(Debug, Clone)]
pub struct Facts {
    pub loop_age: Duration,
    /// The media loop's task has ended (it only ends on shutdown, or by a panic).
    pub loop_ended: bool,
    pub media_address: Option<SocketAddr>,
    pub draining: bool,
    pub audit_refusing_joins: bool,
}

/// Liveness: only a dead or stuck media loop fails it. Anything a restart would not fix (no
/// address yet, a sink down) is readiness, so the kubelet does not kill calls over it.
pub fn live(facts: &Facts) -> Result<(), String> {
    if facts.loop_ended {
        return Err("the media loop has stopped".into());
    }
    if facts.loop_age > STUCK_AFTER {
        return Err(format!(
            "the media loop has not turned for {} s (stuck)",
            facts.loop_age.as_secs()
        ));
    }
    Ok(())
}

/// Readiness: every reason the node should not be sent new visits now, or none.
pub fn ready(facts: &Facts) -> Result<(), Vec<String>> {
    let mut reasons = Vec::new();
    if let Err(e) = live(facts) {
        reasons.push(e);
    }
    if facts.media_address.is_none() {
        reasons.push(
            "no advertised media address yet (the operator writes it once the pod's media \
             Service has a public address)"
                .into(),
        );
    }
    if facts.draining {
        reasons.push("draining: the node is shutting down".into());
    }
    if facts.audit_refusing_joins {
        reasons.push(
            "audit records cannot be kept or an audit sink's buffer is full: joins are refused"
                .into(),
        );
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Facts {
        Facts {
            loop_age: Duration::from_millis(100),
            loop_ended: false,
            media_address: Some("203.0.113.7:31000".parse().expect("addr")),
            draining: false,
            audit_refusing_joins: false,
        }
    }

    #[test]
    fn a_turning_loop_with_an_address_is_live_and_ready() {
        assert!(live(&healthy()).is_ok());
        assert!(ready(&healthy()).is_ok());
    }

    #[test]
    fn a_stuck_or_ended_media_loop_fails_liveness() {
        let stuck = Facts {
            loop_age: Duration::from_secs(11),
            ..healthy()
        };
        assert!(live(&stuck).expect_err("stuck").contains("stuck"));
        let ended = Facts {
            loop_ended: true,
            ..healthy()
        };
        assert!(live(&ended).is_err());
        assert!(ready(&ended).is_err());
    }

    #[test]
    fn no_address_draining_or_a_full_audit_buffer_is_not_ready_but_still_live() {
        let facts = Facts {
            media_address: None,
            draining: true,
            audit_refusing_joins: true,
            ..healthy()
        };
        assert!(live(&facts).is_ok(), "a restart would fix none of these");
        let reasons = ready(&facts).expect_err("not ready");
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("advertised media address"));
    }

    #[test]
    fn the_heartbeat_age_grows_until_the_next_beat() {
        let heartbeat = Heartbeat::default();
        let start = Instant::now();
        heartbeat.beat(0, start);
        assert!(heartbeat.age(start + Duration::from_secs(3)) >= Duration::from_secs(3));
        heartbeat.beat(0, start + Duration::from_secs(3));
        assert!(heartbeat.age(start + Duration::from_secs(3)) < Duration::from_millis(5));
    }

    #[test]
    fn one_stuck_loop_ages_the_heartbeat_though_the_others_turn() {
        let heartbeat = Heartbeat::default();
        let start = Instant::now();
        heartbeat.beat(0, start);
        heartbeat.beat(1, start);
        let later = start + STUCK_AFTER + Duration::from_secs(1);
        heartbeat.beat(0, later);
        assert!(heartbeat.age(later) > STUCK_AFTER);
        heartbeat.beat(1, later);
        assert!(heartbeat.age(later) < Duration::from_millis(5));
    }
}
