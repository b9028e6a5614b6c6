//! Issue 19's shaped link, as the picture-quality test and bench both run it: two pages in a
//! call, each decoding the other at the top layer; the second page's media port is limited
//! for a while, then freed. What each page decodes is read inside the page every 100 ms (a
//! WebDriver round trip takes a few hundred ms on a busy machine and would blur a 2 s goal)
//! and, for the way back, by WebDriver.

use std::time::{Duration, Instant};

use fantoccini::Client;

use crate::browser::{self, Decoding, Sampled, ShapedLink};

/// The top simulcast layer's width of a 1280x720 camera.
pub const TOP_WIDTH: u64 = 1280;
/// How long both pages show the top layer before the link is limited: a call's first seconds
/// have their own dips (about 1 s in, the node moves a subscriber to the lowest layer for
/// 0.5 s, not for bandwidth), which a limit applied at once would take as its effect (picture
/// bench runs 37 and 38 of 2026-12-06: 3 of 5 calls "stepped down" 0.15-0.25 s after the
/// limit, a dip the unlimited calls show as well).
pub const SETTLED_FOR: Duration = Duration::from_secs(3);
/// The shaped link's goals (issue 19): a lower layer within 2 s, no stall over 1 s, the top
/// layer again within 10 s of the link being freed.
pub const GOAL_DOWN: Duration = Duration::from_secs(2);
pub const GOAL_STALL: Duration = Duration::from_secs(1);
pub const GOAL_BACK: Duration = Duration::from_secs(10);
/// How often each page reads its own decoding while the link is limited.
const IN_PAGE_EVERY: Duration = Duration::from_millis(100);
/// How long the way back is watched for before it counts as not back.
const BACK_WITHIN: Duration = Duration::from_secs(30);

/// What one page saw of the limited spell and after it.
#[derive(Debug, Default, Clone)]
pub struct Spell {
    /// Read by WebDriver (every 100 ms plus a round trip): the first width under the top.
    pub down: Option<Duration>,
    pub longest_stall: Duration,
    /// From the link's freeing to the first reading of the top layer the other page sends
    /// (every 250 ms plus two round trips): [`TOP_WIDTH`], or less where that page's browser
    /// scaled its camera down for CPU ([`top_sent`]; not where it dropped layers for its own
    /// bandwidth).
    pub back: Option<Duration>,
    /// The width the other page sent on its top layer when `back` was read.
    pub back_sent: u64,
    /// The same two as `down` and `longest_stall`, read inside the page.
    pub in_page: InPage,
    /// The page's own readings, and how long before the limit they began.
    pub samples: Vec<Sampled>,
    pub sampled_before: Duration,
}

/// A page's own readings of the limited spell.
#[derive(Debug, Default, Clone, Copy)]
pub struct InPage {
    /// From the limit to the first reading under the top width.
    pub down: Option<Duration>,
    /// The longest time without a new decoded frame while limited.
    pub longest_stall: Duration,
}

impl InPage {
    /// From readings that began `before` the link was limited for `limited_for`.
    pub fn of(samples: &[Sampled], before: Duration, limited_for: Duration) -> InPage {
        let at =
            |s: &Sampled| Duration::from_secs_f64(s.at_ms.max(0.0) / 1000.0).saturating_sub(before);
        let samples: Vec<&Sampled> = samples
            .iter()
            .take_while(|s| at(s) <= limited_for)
            .collect();
        let down = samples
            .iter()
            .find(|s| s.width > 0 && s.width < TOP_WIDTH)
            .map(|s| at(s));
        let mut longest_stall = Duration::ZERO;
        let mut progress = samples.first().map(|s| (s.frames, at(s)));
        for sample in samples {
            let Some((frames, since)) = progress else {
                break;
            };
            longest_stall = longest_stall.max(at(sample).saturating_sub(since));
            if sample.frames > frames {
                progress = Some((sample.frames, at(sample)));
            }
        }
        InPage {
            down,
            longest_stall,
        }
    }
}

/// What a page decodes of the other side, once a frame of it is decoded.
pub async fn decoded(page: &Client) -> Option<Decoding> {
    browser::decoding(page).await.filter(|d| d.width > 0)
}

/// Until every page has shown the top width for [`SETTLED_FOR`] without a break; an error
/// saying what each decodes if that takes longer than `within`.
pub async fn settle(pages: [&Client; 2], within: Duration) -> Result<(), String> {
    let began = Instant::now();
    let mut top_since = Instant::now();
    while top_since.elapsed() < SETTLED_FOR {
        let mut widths = Vec::new();
        for page in pages {
            let width = decoded(page).await.map_or(0, |d| d.width);
            if width < TOP_WIDTH {
                top_since = Instant::now();
            }
            widths.push(width);
        }
        if began.elapsed() > within {
            return Err(format!(
                "the pages did not hold {TOP_WIDTH} px for {SETTLED_FOR:?} within {within:?}: they decode {widths:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The second page's media port limited to `rate` each way for `limited_for`, then freed: what
/// each page saw, and when the limit began (to be read beside the node's log).
pub async fn limit_then_free(
    pages: [&Client; 2],
    rate: &str,
    limited_for: Duration,
) -> ([Spell; 2], jiff::Timestamp) {
    let stats = browser::stats(pages[1]).await;
    let port = browser::media_port(&stats)
        .unwrap_or_else(|| panic!("the limited page's media port: {stats}"));
    let mut spells = [Spell::default(), Spell::default()];
    let mut sampling = [Instant::now(); 2];
    for (since, page) in sampling.iter_mut().zip(pages) {
        *since = Instant::now();
        browser::sample_decoding(page, IN_PAGE_EVERY).await;
    }
    let link = ShapedLink::new(port, rate);
    let limited = Instant::now();
    let limited_at = jiff::Timestamp::now();
    let mut progress = [(0u64, Instant::now()); 2];
    while limited.elapsed() < limited_for {
        for ((spell, page), progress) in spells.iter_mut().zip(pages).zip(&mut progress) {
            let Some(seen) = decoded(page).await else {
                continue;
            };
            if seen.width < TOP_WIDTH && spell.down.is_none() {
                spell.down = Some(limited.elapsed());
            }
            if seen.frames > progress.0 {
                *progress = (seen.frames, Instant::now());
            }
            spell.longest_stall = spell.longest_stall.max(progress.1.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    link.free();
    let freed = Instant::now();
    for ((spell, page), since) in spells.iter_mut().zip(pages).zip(sampling) {
        spell.sampled_before = limited.saturating_duration_since(since);
        spell.samples = browser::decoding_samples(page).await;
        spell.in_page = InPage::of(&spell.samples, spell.sampled_before, limited_for);
    }
    while spells.iter().any(|s| s.back.is_none()) && freed.elapsed() < BACK_WITHIN {
        for (i, (spell, page)) in spells.iter_mut().zip(pages).enumerate() {
            if spell.back.is_some() {
                continue;
            }
            // A browser short of CPU scales every layer down, and the node can forward no more;
            // one short of bandwidth drops its higher layers, and the way back is theirs to
            // come back (the clinician's view of the patient's limited uplink).
            let sent = match top_sent(pages[1 - i]).await {
                (width, reason) if reason == "cpu" && width > 0 => width.min(TOP_WIDTH),
                _ => TOP_WIDTH,
            };
            if decoded(page).await.is_some_and(|d| d.width >= sent) {
                spell.back = Some(freed.elapsed());
                spell.back_sent = sent;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (spells, limited_at)
}

/// The largest layer a page's encoder sends, and why its browser limits the encoder
/// (`none`, `cpu`, `bandwidth`): the node forwards at most this.
pub async fn top_sent(page: &Client) -> (u64, String) {
    top_sent_in(&browser::stats(page).await)
}

/// [`top_sent`] from one reading of the page's stats.
pub fn top_sent_in(stats: &serde_json::Value) -> (u64, String) {
    let layers = stats["outbound"].as_array().cloned().unwrap_or_default();
    let width = layers
        .iter()
        .filter(|l| l["active"] != false && l["framesEncoded"].as_u64().unwrap_or(0) > 0)
        .filter_map(|l| l["frameWidth"].as_u64())
        .max()
        .unwrap_or(0);
    let reason = layers
        .first()
        .and_then(|l| l["qualityLimitationReason"].as_str())
        .unwrap_or("not sending")
        .to_string();
    (width, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: f64, width: u64, frames: u64) -> Sampled {
        Sampled {
            at_ms,
            width,
            frames,
        }
    }

    #[test]
    fn the_spell_counts_from_the_limit_and_ends_when_the_link_is_freed() {
        // Sampling began 1 s before the limit; the limit lasted 2 s.
        let samples = [
            sample(500.0, 1280, 10),
            sample(1000.0, 1280, 20),
            sample(1200.0, 1280, 20),
            sample(1900.0, 1280, 20),
            sample(2100.0, 640, 25),
            sample(2600.0, 640, 35),
            // After the link was freed: a long gap here is not the spell's.
            sample(5000.0, 640, 35),
        ];
        let seen = InPage::of(&samples, Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(seen.down, Some(Duration::from_millis(1100)));
        assert_eq!(seen.longest_stall, Duration::from_millis(1100));
    }

    #[test]
    fn a_page_that_never_drops_its_width_did_not_step_down() {
        let samples = [
            sample(0.0, 1280, 1),
            sample(100.0, 1280, 2),
            sample(200.0, 0, 2),
        ];
        let seen = InPage::of(&samples, Duration::ZERO, Duration::from_secs(1));
        assert_eq!(seen.down, None);
        assert_eq!(seen.longest_stall, Duration::from_millis(100));
    }
}
