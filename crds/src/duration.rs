//! Go durations (`10m`, `1h30m`) read into kube's `Duration` without its parser's panic:
//! kube-core 5 multiplies each part into a `std::time::Duration` with `mul_f64`, which panics on
//! a value too large for one (`99999999999999999999h`), so a tenant or a node config holding one
//! would take the operator or the node down. Durations longer than [`LONGEST`] are refused as
//! errors before kube's parser sees them (found by the `node_config` fuzz target).

use kube::core::Duration;
use serde::{Deserialize, Deserializer};

/// Far beyond any setting bedside has (the longest is a day), far within what kube can hold.
pub const LONGEST: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses a Go duration, refusing one longer than [`LONGEST`].
pub fn parse(text: &str) -> Result<Duration, String> {
    if !fits(text) {
        return Err(format!(
            "duration {:?} is longer than {} years; write it in minutes or hours, e.g. 15m or 4h",
            shortened(text),
            LONGEST.as_secs() / (365 * 24 * 3600)
        ));
    }
    text.parse::<Duration>().map_err(|e| {
        format!(
            "{:?} is not a duration like 15m or 4h: {e}",
            shortened(text)
        )
    })
}

/// For `#[serde(deserialize_with)]`.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// Whether the sum of the parts, each a number and a unit, stays within [`LONGEST`]. What is
/// not a number and a unit is left to kube's parser to refuse.
fn fits(text: &str) -> bool {
    let mut total = 0f64;
    let mut rest = text.trim_start_matches(['+', '-']);
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let Ok(value) = number.parse::<f64>() else {
            return true;
        };
        let seconds = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ns" => 1e-9,
            _ => return true,
        };
        total += value * seconds;
        rest = next;
    }
    total.is_finite() && total <= LONGEST.as_secs_f64()
}

fn shortened(text: &str) -> String {
    text.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_kube_reads_them_and_huge_ones_are_refused_not_a_panic() {
        for (text, seconds) in [("15m", 900), ("1h30m", 5400), ("4h", 14400), ("90s", 90)] {
            let parsed = parse(text).expect(text);
            assert_eq!(
                std::time::Duration::from(parsed).as_secs(),
                seconds,
                "{text}"
            );
        }
        for huge in [
            "99999999999999999999999999h",
            "876000h1h",
            "3000000000000000000s",
        ] {
            let refused = parse(huge).expect_err(huge);
            assert!(refused.contains("longer than 100 years"), "{refused}");
        }
        assert!(parse("1e400h").is_err());
        assert!(parse("fifteen minutes").is_err());
        assert!(parse("15x").is_err());
    }
}
