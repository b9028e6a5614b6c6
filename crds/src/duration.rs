//! Go durations (`10m`, `1h30m`) read into kube's `Duration` without its parser's panics:
//! kube-core 5 multiplies each part into a `std::time::Duration` with `mul_f64`, which panics on
//! a value too large for one (`99999999999999999999h`) and on a negative part after the first
//! (`1h-5m`), so a tenant, a node config or a command line holding one would take the operator
//! or the node down. Such durations are refused as errors before kube's parser sees them (found
//! by the `node_config` fuzz target).

use kube::core::Duration;
use serde::{Deserialize, Deserializer};

/// Far beyond any setting bedside has (the longest is a day), far within what kube can hold.
pub const LONGEST: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses a Go duration, refusing one longer than [`LONGEST`] or with a negative part.
pub fn parse(text: &str) -> Result<Duration, String> {
    check(text)?;
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

/// Walks the text part by part exactly as kube's parser does (a number is what comes before
/// the next letter, a unit is the run of letters) and refuses it where kube would multiply a
/// part that panics. Where kube would return an error first, the text is left to kube.
fn check(text: &str) -> Result<(), String> {
    let mut rest = text.trim_start_matches('+').trim_start_matches('-');
    let mut total = 0f64;
    while !rest.is_empty() && rest != "0" {
        let Some(unit_start) = rest.find(char::is_alphabetic) else {
            return Ok(());
        };
        let (number, after) = rest.split_at(unit_start);
        let unit_end = after
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let (Ok(value), Some(seconds)) = (number.parse::<f64>(), unit_seconds(unit)) else {
            return Ok(());
        };
        if value.is_sign_negative() && value != 0.0 {
            return Err(format!(
                "duration {:?} has a negative part; only the whole duration may have a sign, e.g. 1h30m",
                shortened(text)
            ));
        }
        total += value * seconds;
        if !(total.is_finite() && total <= LONGEST.as_secs_f64()) {
            return Err(format!(
                "duration {:?} is longer than {} years; write it in minutes or hours, e.g. 15m or 4h",
                shortened(text),
                LONGEST.as_secs() / (365 * 24 * 3600)
            ));
        }
        rest = next;
    }
    Ok(())
}

fn unit_seconds(unit: &str) -> Option<f64> {
    Some(match unit {
        "h" => 3600.0,
        "m" => 60.0,
        "s" => 1.0,
        "ms" => 1e-3,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
        "ns" => 1e-9,
        _ => return None,
    })
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
        // kube reads the unit as the run of letters, so the huge first part is multiplied
        // before the bad text after it is seen.
        let refused = parse("11111111111111111111111111111164m  auditHmac").expect_err("huge");
        assert!(refused.contains("longer than 100 years"), "{refused}");
        let refused = parse("1h-5m").expect_err("negative part");
        assert!(refused.contains("negative part"), "{refused}");
        assert!(parse("-0s").is_ok() && parse("1h-0m").is_ok());
        assert!(parse("fifteen minutes").is_err());
        assert!(parse("15x").is_err());
    }
}
