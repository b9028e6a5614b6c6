//! What one client network may take of a node, so that a hostile or broken client cannot hurt
//! other visits: open signaling connections (per network and in all), join attempts (per
//! network, checked before a token is read), and refusals, counted rather than sealed into the
//! audit trail one by one. State only; the signaling server drives it with `now`.
//!
//! A client network is an IPv4 address or an IPv6 /64: one home, one phone's allocation, so
//! rotating addresses within a /64 gains nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bedside_audit::event::Action;
use bedside_crds::node_config::ClientLimits;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// An IPv4 address, or the /64 an IPv6 address is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl Network {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Network::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Network::V4(v4.octets()),
                None => {
                    let mut prefix = [0; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    Network::V6(prefix)
                }
            },
        }
    }
}

/// Why a connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// The client's network holds its share of connections already.
    NetworkFull,
    /// The node holds as many connections as it takes.
    NodeFull,
}

/// Open signaling connections, per client network and in all.
#[derive(Debug)]
pub struct Connections {
    per_network: usize,
    total: usize,
    open: Mutex<OpenConnections>,
}

#[derive(Debug, Default)]
struct OpenConnections {
    by_network: HashMap<Network, usize>,
    total: usize,
}

/// One open connection: its place is given back when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    connections: Arc<Connections>,
    network: Network,
}

impl Connections {
    pub fn new(per_network: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            per_network,
            total,
            open: Mutex::default(),
        })
    }

    pub fn open(self: &Arc<Self>, client: IpAddr) -> Result<ConnectionSlot, ConnectionRefusal> {
        let network = Network::of(client);
        // Counters only: a panic elsewhere leaves nothing half-written.
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.total {
            return Err(ConnectionRefusal::NodeFull);
        }
        let mine = open.by_network.entry(network).or_default();
        if *mine >= self.per_network {
            return Err(ConnectionRefusal::NetworkFull);
        }
        *mine += 1;
        open.total += 1;
        Ok(ConnectionSlot {
            connections: self.clone(),
            network,
        })
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.open.lock().map(|o| o.total).unwrap_or(0)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_network.get_mut(&self.network) {
            *n -= 1;
            if *n == 0 {
                open.by_network.remove(&self.network);
            }
        }
    }
}

/// Join attempts per client network: a bucket of `per_minute` that refills at that rate.
#[derive(Debug)]
pub struct JoinAttempts<C: Clock + Clone = DefaultClock> {
    limiter: RateLimiter<Network, DefaultKeyedStateStore<Network>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
}

impl JoinAttempts {
    pub fn new(per_minute: NonZeroU32) -> Self {
        Self::with_clock(per_minute, DefaultClock::default())
    }
}

impl<C: Clock + Clone> JoinAttempts<C> {
    pub fn with_clock(per_minute: NonZeroU32, clock: C) -> Self {
        Self {
            limiter: RateLimiter::dashmap_with_clock(Quota::per_minute(per_minute), clock.clone()),
            clock,
        }
    }

    /// `Err(wait)`: the client's network has used its attempts; the next one is allowed then.
    pub fn allow(&self, client: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&Network::of(client))
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets networks whose buckets are full again: the map holds recent clients only.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    pub fn networks(&self) -> usize {
        self.limiter.len()
    }
}

/// Messages one joined client may send: a browser sends an offer, a handful of candidates and
/// an answer per renegotiation, and a host's clicks; a burst of [`MESSAGE_BURST`] and
/// [`MESSAGES_PER_SECOND`] after it is far above that, and bounds what one session can make the
/// media loop do.
pub const MESSAGES_PER_SECOND: u32 = 20;
pub const MESSAGE_BURST: u32 = 60;

/// One session's message budget.
pub struct MessagePace<C: Clock = DefaultClock> {
    limiter: RateLimiter<
        governor::state::NotKeyed,
        governor::state::InMemoryState,
        C,
        NoOpMiddleware<C::Instant>,
    >,
}

impl std::fmt::Debug for MessagePace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessagePace").finish_non_exhaustive()
    }
}

impl MessagePace {
    pub fn new() -> Self {
        Self::with_clock(&DefaultClock::default())
    }
}

impl Default for MessagePace {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clock + Clone> MessagePace<C> {
    pub fn with_clock(clock: &C) -> Self {
        let quota =
            Quota::per_second(NonZeroU32::new(MESSAGES_PER_SECOND).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(MESSAGE_BURST).unwrap_or(NonZeroU32::MIN));
        Self {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
        }
    }

    /// False once the client sends faster than any client does.
    pub fn allow(&self) -> bool {
        self.limiter.check().is_ok()
    }
}

/// Quality reports: one every few seconds is all a browser sends; more are dropped, not
/// refused (a report is a nicety, never worth a closed connection).
pub const QUALITY_REPORT_EVERY: Duration = Duration::from_secs(4);

/// One session's budget of quality reports (two at once, then one per
/// [`QUALITY_REPORT_EVERY`]).
pub struct ReportPace(governor::DefaultDirectRateLimiter);

impl std::fmt::Debug for ReportPace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportPace").finish_non_exhaustive()
    }
}

impl Default for ReportPace {
    fn default() -> Self {
        let quota = Quota::with_period(QUALITY_REPORT_EVERY)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
        Self(RateLimiter::direct(quota))
    }
}

impl ReportPace {
    pub fn allow(&self) -> bool {
        self.0.check().is_ok()
    }
}

/// What a refusal's audit record is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefusalKind {
    pub network: Network,
    pub action: Action,
    pub reason: &'static str,
}

/// Refusals counted while a record of their kind is recent.
#[derive(Debug, Clone, Copy)]
struct Tally {
    since: Instant,
    /// Refusals counted, not sealed, since the last record of this kind.
    counted: u32,
    /// The last client address counted (the record names one).
    last_client: IpAddr,
}

/// A refused attempt's record now, or a count sealed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seal {
    /// The first refusal of its kind in the window: sealed as usual.
    Now,
    /// Counted; a record with the count is due when the window ends.
    Counted,
}

/// A record of counted refusals, due now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountedRefusals {
    pub kind: RefusalKind,
    pub client: IpAddr,
    pub count: u32,
}

/// Collapses repeated refusals: per kind (network, action, reason), the first in a window is
/// sealed, the rest are counted and sealed as one record when the window ends. Bounded: past
/// `capacity` kinds a refusal is counted under its action and reason alone.
#[derive(Debug)]
pub struct RefusalTally {
    window: Duration,
    capacity: usize,
    open: HashMap<RefusalKind, Tally>,
}

/// The network every refusal is counted under once the tally is full.
const ANY_NETWORK: Network = Network::V6([0; 8]);

impl RefusalTally {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity,
            open: HashMap::new(),
        }
    }

    pub fn refused(&mut self, mut kind: RefusalKind, client: IpAddr, now: Instant) -> Seal {
        if !self.open.contains_key(&kind) && self.open.len() >= self.capacity {
            kind.network = ANY_NETWORK;
        }
        match self.open.get_mut(&kind) {
            Some(tally) => {
                tally.counted += 1;
                tally.last_client = client;
                Seal::Counted
            }
            None => {
                self.open.insert(
                    kind,
                    Tally {
                        since: now,
                        counted: 0,
                        last_client: client,
                    },
                );
                Seal::Now
            }
        }
    }

    /// The counts whose windows ended: one record each (kinds with nothing counted end quietly).
    pub fn due(&mut self, now: Instant) -> Vec<CountedRefusals> {
        let window = self.window;
        self.take(|tally| now.saturating_duration_since(tally.since) >= window)
    }

    /// Everything counted, due or not (the node is stopping).
    pub fn drain(&mut self) -> Vec<CountedRefusals> {
        self.take(|_| true)
    }

    /// Ends the windows `ended` picks; their counts, where there are any.
    fn take(&mut self, ended: impl Fn(&Tally) -> bool) -> Vec<CountedRefusals> {
        let mut taken = Vec::new();
        self.open.retain(|kind, tally| {
            if !ended(tally) {
                return true;
            }
            if tally.counted > 0 {
                taken.push(CountedRefusals {
                    kind: kind.clone(),
                    client: tally.last_client,
                    count: tally.counted,
                });
            }
            false
        });
        taken
    }
}

/// How many TCP connections a client network (and the node) may hold for each signaling
/// connection it may hold: a browser loads the page and the client over a few more.
pub const SOCKETS_PER_SIGNALING_CONNECTION: usize = 2;

/// How many ICE-TCP connections a client network (and the node) may hold for each signaling
/// connection: a browser may try a connection per local interface before it settles on one.
pub const ICE_TCP_PER_SIGNALING_CONNECTION: usize = 2;

/// The limits a signaling server holds, built from the node's config.
#[derive(Debug)]
pub struct ClientGuards {
    pub connections: Arc<Connections>,
    /// TCP connections at accept, before TLS ([`crate::signaling::accept`]).
    pub sockets: Arc<Connections>,
    /// ICE-TCP media connections, from browsers whose networks block UDP.
    pub media_tcp: Arc<Connections>,
    pub joins: JoinAttempts,
    pub refusals: Mutex<RefusalTally>,
}

/// How long repeated refusals of one kind are counted before their record is sealed.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);
/// Refusal kinds tracked at once (each a few dozen bytes).
const REFUSAL_KINDS: usize = 10_000;

impl ClientGuards {
    pub fn new(limits: &ClientLimits) -> Self {
        let per_minute =
            NonZeroU32::new(limits.join_attempts_per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            connections: Connections::new(
                limits.connections_per_network as usize,
                limits.connections as usize,
            ),
            sockets: Connections::new(
                limits.connections_per_network as usize * SOCKETS_PER_SIGNALING_CONNECTION,
                limits.connections as usize * SOCKETS_PER_SIGNALING_CONNECTION,
            ),
            media_tcp: Connections::new(
                limits.connections_per_network as usize * ICE_TCP_PER_SIGNALING_CONNECTION,
                limits.connections as usize * ICE_TCP_PER_SIGNALING_CONNECTION,
            ),
            joins: JoinAttempts::new(per_minute),
            refusals: Mutex::new(RefusalTally::new(REFUSAL_WINDOW, REFUSAL_KINDS)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_network_is_an_ipv4_address_or_an_ipv6_64() {
        assert_eq!(
            Network::of(ip("2001:db8:1:2::1")),
            Network::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            Network::of(ip("2001:db8:1:2::1")),
            Network::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Network::of(ip("::ffff:192.0.2.7")),
            Network::of(ip("192.0.2.7"))
        );
        assert_ne!(Network::of(ip("192.0.2.7")), Network::of(ip("192.0.2.8")));
    }

    #[test]
    fn connections_are_capped_per_network_and_in_all_and_given_back_when_closed() {
        let connections = Connections::new(2, 3);
        let a1 = connections.open(ip("2001:db8::1")).expect("first");
        let _a2 = connections
            .open(ip("2001:db8::2"))
            .expect("second, same /64");
        assert_eq!(
            connections
                .open(ip("2001:db8::3"))
                .expect_err("a third from the /64"),
            ConnectionRefusal::NetworkFull
        );
        let _b = connections.open(ip("192.0.2.1")).expect("another network");
        assert_eq!(
            connections
                .open(ip("192.0.2.2"))
                .expect_err("the node is full"),
            ConnectionRefusal::NodeFull
        );
        drop(a1);
        assert_eq!(connections.count(), 2);
        connections
            .open(ip("192.0.2.2"))
            .expect("a closed connection's place is free again");
    }

    #[test]
    fn join_attempts_are_limited_per_network_and_refill_with_time() {
        let clock = FakeRelativeClock::default();
        let joins = JoinAttempts::with_clock(NonZeroU32::new(6).expect("6"), clock.clone());
        for n in 0..6 {
            joins
                .allow(ip("2001:db8::1"))
                .unwrap_or_else(|_| panic!("attempt {n} of the burst"));
        }
        let wait = joins
            .allow(ip("2001:db8::ffff"))
            .expect_err("another address of the same /64 shares the bucket");
        assert_eq!(
            wait,
            Duration::from_secs(10),
            "one attempt per 10 s at 6 a minute"
        );
        joins
            .allow(ip("192.0.2.1"))
            .expect("another network has its own");
        clock.advance(Duration::from_secs(10));
        joins.allow(ip("2001:db8::1")).expect("refilled");
        assert!(joins.allow(ip("2001:db8::1")).is_err());
        clock.advance(Duration::from_secs(120));
        joins.forget_idle();
        assert_eq!(joins.networks(), 0, "full buckets are forgotten");
    }

    #[test]
    fn repeated_refusals_become_one_counted_record_per_window() {
        let mut tally = RefusalTally::new(Duration::from_secs(60), 100);
        let t0 = Instant::now();
        let kind = |client: &str| RefusalKind {
            network: Network::of(ip(client)),
            action: Action::TokenRefused,
            reason: "token-forged",
        };
        assert_eq!(
            tally.refused(kind("192.0.2.1"), ip("192.0.2.1"), t0),
            Seal::Now
        );
        for _ in 0..499 {
            assert_eq!(
                tally.refused(kind("192.0.2.1"), ip("192.0.2.1"), t0),
                Seal::Counted
            );
        }
        assert_eq!(
            tally.refused(kind("192.0.2.2"), ip("192.0.2.2"), t0),
            Seal::Now,
            "another network's first refusal is sealed"
        );
        assert!(tally.due(t0 + Duration::from_secs(59)).is_empty());
        let due = tally.due(t0 + Duration::from_secs(60));
        assert_eq!(
            due,
            vec![CountedRefusals {
                kind: kind("192.0.2.1"),
                client: ip("192.0.2.1"),
                count: 499
            }],
            "one record for the 499 counted; nothing for a kind refused once"
        );
        assert_eq!(
            tally.refused(
                kind("192.0.2.1"),
                ip("192.0.2.1"),
                t0 + Duration::from_secs(61)
            ),
            Seal::Now,
            "a new window starts with a sealed record"
        );
    }

    #[test]
    fn a_full_tally_counts_new_networks_together() {
        let mut tally = RefusalTally::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        let kind = |n: u8| RefusalKind {
            network: Network::V4([192, 0, 2, n]),
            action: Action::TokenRefused,
            reason: "token-forged",
        };
        let client = ip("192.0.2.1");
        assert_eq!(tally.refused(kind(1), client, t0), Seal::Now);
        assert_eq!(tally.refused(kind(2), client, t0), Seal::Now);
        assert_eq!(
            tally.refused(kind(3), client, t0),
            Seal::Now,
            "the shared kind's first"
        );
        for n in 4..=200 {
            assert_eq!(tally.refused(kind(n), client, t0), Seal::Counted);
        }
        assert_eq!(tally.open.len(), 3, "bounded");
        let due = tally.drain();
        assert_eq!(due.iter().map(|d| d.count).sum::<u32>(), 197);
    }

    proptest::proptest! {
        /// Whatever arrives in whatever order, every refusal is either sealed as it happens or
        /// counted into exactly one later record: none lost, none counted twice; and the tally
        /// never tracks more kinds than its capacity, plus one shared kind per action and reason.
        #[test]
        fn every_refusal_is_sealed_once_or_counted_into_one_record(
            mut refusals in proptest::collection::vec((0u8..6, 0usize..3, 0u64..400), 0..300),
        ) {
            refusals.sort_by_key(|r| r.2);
            let mut tally = RefusalTally::new(Duration::from_secs(60), 4);
            let t0 = Instant::now();
            let reasons = ["token-forged", "passcode-wrong", "rate-limited"];
            let (mut sealed, mut counted) = (0u64, 0u64);
            for (network, reason, at) in &refusals {
                let now = t0 + Duration::from_secs(*at);
                counted += tally.due(now).iter().map(|d| u64::from(d.count)).sum::<u64>();
                let kind = RefusalKind {
                    network: Network::V4([192, 0, 2, *network]),
                    action: Action::TokenRefused,
                    reason: reasons[*reason],
                };
                if tally.refused(kind, ip("192.0.2.1"), now) == Seal::Now {
                    sealed += 1;
                }
                proptest::prop_assert!(tally.open.len() <= 4 + reasons.len());
            }
            counted += tally.drain().iter().map(|d| u64::from(d.count)).sum::<u64>();
            proptest::prop_assert_eq!(sealed + counted, refusals.len() as u64);
        }
    }

    #[test]
    fn a_session_has_a_burst_and_a_steady_pace_and_no_more() {
        let clock = governor::clock::FakeRelativeClock::default();
        let pace = MessagePace::with_clock(&clock);
        let burst = (0..1000).take_while(|_| pace.allow()).count();
        assert_eq!(burst, MESSAGE_BURST as usize);
        clock.advance(Duration::from_secs(1));
        let next = (0..1000).take_while(|_| pace.allow()).count();
        assert_eq!(next, MESSAGES_PER_SECOND as usize);
    }
}
