//! Refused joins in the audit trail without letting a flood fill it: per client network,
//! action and reason, the first refusal in a window is sealed as it happens and the rest are
//! counted into one record (`outcome.repeated`) sealed when the window ends.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bedside_audit::delivery::{Auditor, Who};
use bedside_audit::event::Action;

use crate::limits::{ClientGuards, CountedRefusals, Network, RefusalKind, RefusalTally, Seal};

/// How often counted refusals whose window ended are sealed.
const SEAL_EVERY: Duration = Duration::from_secs(5);

/// One refused attempt: sealed now, or counted.
pub(super) struct Refused<'a> {
    pub who: &'a Who,
    pub action: Action,
    pub reason: &'static str,
    pub room: Option<&'a str>,
    pub client: IpAddr,
}

pub(super) fn record(guards: &ClientGuards, audit: &Auditor, refused: Refused<'_>) {
    let kind = RefusalKind {
        network: Network::of(refused.client),
        action: refused.action,
        reason: refused.reason,
    };
    let seal = guards
        .refusals
        .lock()
        .map(|mut tally| tally.refused(kind, refused.client, Instant::now()))
        // A poisoned tally seals everything: records are never lost to it.
        .unwrap_or(Seal::Now);
    if seal == Seal::Now {
        audit.record(
            refused.who,
            refused.action,
            Some(refused.reason),
            refused.room,
            Some(refused.client),
        );
    }
}

/// Seals counted refusals as their windows end and forgets clients whose join attempts are
/// all back. Runs for the node's life; [`seal_all`] finishes the count when it stops.
pub async fn seal_counted(guards: Arc<ClientGuards>, audit: Arc<Auditor>) {
    let mut tick = tokio::time::interval(SEAL_EVERY);
    loop {
        tick.tick().await;
        seal_taken(&guards, &audit, |tally| tally.due(Instant::now()));
        guards.joins.forget_idle();
    }
}

/// Seals everything counted, due or not: the node is stopping and its chain is about to close.
pub fn seal_all(guards: &ClientGuards, audit: &Auditor) {
    seal_taken(guards, audit, RefusalTally::drain);
}

fn seal_taken(
    guards: &ClientGuards,
    audit: &Auditor,
    take: impl FnOnce(&mut RefusalTally) -> Vec<CountedRefusals>,
) {
    let taken = match guards.refusals.lock() {
        Ok(mut tally) => take(&mut tally),
        Err(_) => Vec::new(),
    };
    for counted in taken {
        seal(audit, &counted);
    }
}

fn seal(audit: &Auditor, counted: &CountedRefusals) {
    audit.record_repeated(
        &Who::UNAUTHENTICATED,
        counted.kind.action,
        Some(counted.kind.reason),
        None,
        Some(counted.client),
        Some(counted.count),
    );
}
