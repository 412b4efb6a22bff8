//! Go-style durations (`"1m"`, `"30s"`, `"1m30s"`, `"500ms"`, `"1.5h"`) as used by Flagger manifests,
//! and Go's `Duration.String()` formatting used in upstream's event texts (`1.515s`, `500ms`, `1m0s`).

use std::time::Duration;

/// Parses a Go duration string. Accepted units: `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`; each number may
/// have a fraction; `"0"` alone is zero. Negative durations are rejected (nothing in a Canary can use one).
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".to_owned());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(format!("negative duration {text:?}"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut total_nanos: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {text:?}"))?;
        if number_len == 0 {
            return Err(format!("invalid duration {text:?}"));
        }
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| format!("invalid number in duration {text:?}"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            other => return Err(format!("unknown unit {other:?} in duration {text:?}")),
        };
        rest = &rest[unit_len..];
        total_nanos += number * nanos_per_unit;
    }
    // Anything beyond a few centuries is a typo, not a schedule.
    if !total_nanos.is_finite() || total_nanos > 1e19 {
        return Err(format!("duration {text:?} is out of range"));
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

/// Formats like Go's `time.Duration.String()`: `0s`, `500ms`, `1.515s`, `1m0s`, `1h2m3.5s`.
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim_fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_fraction(nanos, 1_000_000));
    }
    let hours = nanos / 3_600_000_000_000;
    let rem = nanos % 3_600_000_000_000;
    let minutes = rem / 60_000_000_000;
    let secs_nanos = rem % 60_000_000_000;
    let seconds = trim_fraction(secs_nanos, 1_000_000_000);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// `value / unit` as a decimal without trailing zeros (`1515/1000` → `1.515`).
fn trim_fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_the_forms_flagger_manifests_use() {
        let cases = [
            ("1m", 60_000),
            ("30s", 30_000),
            ("1m30s", 90_000),
            ("500ms", 500),
            ("1.5h", 5_400_000),
            ("0", 0),
            ("10s", 10_000),
            ("2h45m", 9_900_000),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse_go_duration(text).unwrap(),
                Duration::from_millis(millis),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        for text in ["", "abc", "10", "1x", "-1s", "m", "1..2s", "s1"] {
            assert!(parse_go_duration(text).is_err(), "{text:?} should fail");
        }
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (0, "0s"),
            (500, "500ms"),
            (1515, "1.515s"),
            (60_000, "1m0s"),
            (90_500, "1m30.5s"),
            (3_723_000, "1h2m3s"),
            (1, "1ms"),
        ];
        for (millis, text) in cases {
            assert_eq!(format_go_duration(Duration::from_millis(millis)), text);
        }
        assert_eq!(format_go_duration(Duration::from_micros(1500)), "1.5ms");
    }
}
