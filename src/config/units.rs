//! Durations ("250ms", "5s", "2m", "1h") and sizes (bytes, "16KiB", "10MiB") as written in TOML.
//! Parsing only: no I/O, no defaults. A bare number other than 0 is not a duration (a unit is required).

use serde::{de, Deserialize, Deserializer};
use std::time::Duration;

/// Parses "250ms", "5s", "2m", "1h", "1d" or "0" into a Duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| {
            format!("expected a duration with a unit like \"250ms\" or \"5s\", got {s:?}")
        })?;
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("expected a duration like \"250ms\" or \"5s\", got {s:?}"))?;
    let secs = match unit {
        "us" | "µs" => value / 1_000_000.0,
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        _ => {
            return Err(format!(
                "unknown duration unit {unit:?} in {s:?} (use us, ms, s, m, h, d)"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a size: an integer number of bytes, or a string like "16KiB", "10MiB", "1GiB", "512B", "64KB".
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: u64 = num
        .parse()
        .map_err(|_| format!("expected a size like 65536 or \"16KiB\", got {s:?}"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (use B, KiB, MiB, GiB)"
            ))
        }
    };
    value
        .checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} out of range"))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Int(i64),
    UInt(u64),
    Str(String),
}

/// serde helper: `#[serde(deserialize_with = "units::duration")]`.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(de::Error::custom)
}

/// serde helper for `Option<Duration>`.
pub fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// serde helper for sizes given as an integer or a string with a unit.
pub fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match SizeRepr::deserialize(d)? {
        SizeRepr::Int(n) if n >= 0 => Ok(n as u64),
        SizeRepr::Int(n) => Err(de::Error::custom(format!("expected a size >= 0, got {n}"))),
        SizeRepr::UInt(n) => Ok(n),
        SizeRepr::Str(s) => parse_size(&s).map_err(de::Error::custom),
    }
}

/// serde helper for `Option<u64>` sizes.
pub fn opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    size(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("ms").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16KiB").unwrap(), 16384);
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }
}
