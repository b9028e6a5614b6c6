//! Simulcast layer choice: pure, so it is tested without a network.
//!
//! A publisher sends up to three encodings of its camera (rids, low to high). Each subscriber
//! gets the best layer that fits its share of the bandwidth estimate; a switch takes effect at
//! the target layer's next keyframe so the decoder never sees a broken frame.

use std::time::{Duration, Instant};

use str0m::media::Rid;

/// The most layers a browser sends.
pub const MAX_LAYERS: usize = 3;
/// Headroom kept below the estimate so a layer is not chosen on the edge of congestion.
const HEADROOM: f64 = 0.85;
const WINDOW: Duration = Duration::from_secs(1);

/// Incoming bitrate of one layer, measured over one-second windows.
#[derive(Debug, Clone)]
pub struct LayerRate {
    pub rid: Rid,
    bytes_in_window: u64,
    window_start: Instant,
    /// Bits per second over the last full window.
    pub bps: u64,
}

impl LayerRate {
    pub fn new(rid: Rid, now: Instant) -> Self {
        Self {
            rid,
            bytes_in_window: 0,
            window_start: now,
            bps: 0,
        }
    }

    pub fn record(&mut self, bytes: usize, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= WINDOW {
            self.bps = self.bytes_in_window * 8 * 1000 / (elapsed.as_millis().max(1) as u64);
            self.bytes_in_window = 0;
            self.window_start = now;
        }
        self.bytes_in_window += bytes as u64;
    }
}

/// The layers a publisher has sent so far, in the order they appear in its offer (browsers list
/// them low to high when the client sets them up that way; the rate decides in any case).
#[derive(Debug, Clone, Default)]
pub struct Layers {
    rates: Vec<LayerRate>,
}

impl Layers {
    pub fn record(&mut self, rid: Rid, bytes: usize, now: Instant) {
        if let Some(rate) = self.rates.iter_mut().find(|r| r.rid == rid) {
            rate.record(bytes, now);
        } else if self.rates.len() < MAX_LAYERS {
            let mut rate = LayerRate::new(rid, now);
            rate.record(bytes, now);
            self.rates.push(rate);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rates.is_empty()
    }

    /// The highest-rate layer whose rate fits `budget_bps`; the lowest one when none fits.
    /// Layers not yet measured count as fitting only when nothing is measured.
    pub fn choose(&self, budget_bps: u64) -> Option<Rid> {
        let budget = (budget_bps as f64 * HEADROOM) as u64;
        let mut by_rate: Vec<&LayerRate> = self.rates.iter().collect();
        by_rate.sort_by_key(|r| r.bps);
        let lowest = by_rate.first().map(|r| r.rid);
        by_rate
            .iter()
            .rev()
            .find(|r| r.bps > 0 && r.bps <= budget)
            .map(|r| r.rid)
            .or(lowest)
    }

    /// The rate of the best layer: what a subscriber would like to receive.
    pub fn top_bps(&self) -> u64 {
        self.rates.iter().map(|r| r.bps).max().unwrap_or(0)
    }
}

/// Which layer one subscriber receives of one simulcast track.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selection {
    /// The layer being forwarded.
    pub current: Option<Rid>,
    /// The layer to switch to at its next keyframe.
    pub target: Option<Rid>,
}

impl Selection {
    /// Decides whether a packet of layer `rid` is forwarded, switching at keyframes.
    pub fn admit(&mut self, rid: Option<Rid>, keyframe: bool) -> bool {
        let Some(rid) = rid else {
            // Not simulcast: a single encoding is always forwarded.
            return true;
        };
        if self.target == Some(rid)
            && self.current != Some(rid)
            && (keyframe || self.current.is_none())
        {
            self.current = Some(rid);
        }
        if self.current.is_none() && self.target.is_none() {
            // Nothing chosen yet: start on the first layer that shows up.
            self.current = Some(rid);
            self.target = Some(rid);
        }
        self.current == Some(rid)
    }

    /// True when the switch is pending and the target layer needs a keyframe.
    pub fn wants_keyframe(&self) -> bool {
        self.target.is_some() && self.target != self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(rates: &[(&str, u64)]) -> Layers {
        let now = Instant::now();
        Layers {
            rates: rates
                .iter()
                .map(|(rid, bps)| LayerRate {
                    rid: (*rid).into(),
                    bytes_in_window: 0,
                    window_start: now,
                    bps: *bps,
                })
                .collect(),
        }
    }

    #[test]
    fn the_best_layer_that_fits_the_estimate_is_chosen() {
        let l = layers(&[("l", 150_000), ("m", 500_000), ("h", 1_500_000)]);
        assert_eq!(l.choose(3_000_000), Some("h".into()));
        assert_eq!(l.choose(1_000_000), Some("m".into()));
        assert_eq!(l.choose(300_000), Some("l".into()));
        // Nothing fits: the lowest layer still flows (video degrades, it does not freeze).
        assert_eq!(l.choose(10_000), Some("l".into()));
    }

    #[test]
    fn a_switch_waits_for_a_keyframe_of_the_target_layer() {
        let mut s = Selection::default();
        assert!(
            s.admit(Some("l".into()), false),
            "first layer starts flowing"
        );
        s.target = Some("h".into());
        assert!(s.wants_keyframe());
        assert!(!s.admit(Some("h".into()), false), "no switch mid-GOP");
        assert!(s.admit(Some("l".into()), false), "old layer keeps flowing");
        assert!(s.admit(Some("h".into()), true), "switch on the keyframe");
        assert!(!s.admit(Some("l".into()), true), "old layer stops");
        assert!(!s.wants_keyframe());
    }

    #[test]
    fn non_simulcast_tracks_always_flow() {
        let mut s = Selection::default();
        assert!(s.admit(None, false));
    }

    #[test]
    fn rates_are_measured_per_window() {
        let start = Instant::now();
        let mut l = Layers::default();
        for i in 0..100 {
            l.record("h".into(), 1_200, start + Duration::from_millis(i * 10));
        }
        l.record("h".into(), 1_200, start + Duration::from_millis(1_000));
        let bps = l.top_bps();
        // 100 packets of 1,200 bytes in one second: 960 kbit/s.
        assert!((900_000..1_000_000).contains(&bps), "{bps}");
    }
}
