//! UTC calendar arithmetic for the ledger's buckets: days since the Unix epoch to and from civil dates
//! (`limit::period`'s `days_from_civil` / `civil_from_days`), month indexes, and the RFC 3339 dates and times the admin API takes. Pure functions: the
//! caller passes `now`.

/// Seconds in a UTC day (no leap seconds, as Unix time).
pub const DAY_SECS: u64 = 86_400;

// One implementation of the civil-date arithmetic, shared with the quota periods workers use.
pub use crate::limit::period::{civil_from_days, days_from_civil};

/// Day number of a Unix time.
pub fn day_of(unix: u64) -> i64 {
    (unix / DAY_SECS) as i64
}

/// Month index (year * 12 + month - 1) of a day number.
pub fn month_of_day(day: i64) -> i64 {
    let (y, m, _) = civil_from_days(day);
    y * 12 + m as i64 - 1
}

/// First day number of a month index.
pub fn month_start_day(month: i64) -> i64 {
    days_from_civil(month.div_euclid(12), (month.rem_euclid(12) + 1) as u32, 1)
}

/// `2026-12-03`.
pub fn day_label(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `2026-12`.
pub fn month_label(month: i64) -> String {
    format!(
        "{:04}-{:02}",
        month.div_euclid(12),
        month.rem_euclid(12) + 1
    )
}

/// `2026-12-03T10:00:00Z`.
pub fn time_label(unix: u64) -> String {
    let s = unix % DAY_SECS;
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        day_label(day_of(unix)),
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn num(s: &str, lo: u32, hi: u32) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|v| (lo..=hi).contains(v))
}

/// Days in a month.
fn month_days(y: i64, m: u32) -> u32 {
    let next = if m == 12 {
        days_from_civil(y + 1, 1, 1)
    } else {
        days_from_civil(y, m + 1, 1)
    };
    (next - days_from_civil(y, m, 1)) as u32
}

/// `YYYY-MM-DD` as a day number.
pub fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.split('-');
    let (y, m, d) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let y = num(y, 1970, 9999)? as i64;
    let m = num(m, 1, 12)?;
    let d = num(d, 1, month_days(y, m))?;
    Some(days_from_civil(y, m, d))
}

/// `YYYY-MM` as a month index.
pub fn parse_month(s: &str) -> Option<i64> {
    let (y, m) = s.split_once('-')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    Some(num(y, 1970, 9999)? as i64 * 12 + num(m, 1, 12)? as i64 - 1)
}

/// A point in time as the admin API takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instant {
    /// A whole UTC date (`2026-12-03`): as `from`, its start; as `to`, its end (the day is included).
    Date(i64),
    /// An RFC 3339 time (`2026-12-03T10:00:00Z`, `...+02:00`, fractions ignored), as Unix seconds.
    Time(u64),
}

impl Instant {
    /// Unix seconds where a range starting here begins.
    pub fn as_from(self) -> u64 {
        match self {
            Instant::Date(d) => d.max(0) as u64 * DAY_SECS,
            Instant::Time(t) => t,
        }
    }

    /// Unix seconds where a range ending here ends (exclusive).
    pub fn as_to(self) -> u64 {
        match self {
            Instant::Date(d) => (d.max(-1) + 1) as u64 * DAY_SECS,
            Instant::Time(t) => t,
        }
    }
}

/// Parses an RFC 3339 date or date-time (RFC 3339 §5.6; `T`, `t` or a space between them).
pub fn parse_instant(s: &str) -> Option<Instant> {
    if s.len() == 10 {
        return parse_date(s).map(Instant::Date);
    }
    if s.len() < 20 {
        return None;
    }
    let day = parse_date(s.get(..10)?)?;
    if !matches!(s.as_bytes()[10], b'T' | b't' | b' ') {
        return None;
    }
    let rest = s.get(11..)?;
    // `get`, not `split_at`: a multi-byte character across byte 8 is a parse error, not a panic.
    let (hms, zone) = (rest.get(..8)?, rest.get(8..)?);
    let mut it = hms.split(':');
    let (h, mi, se) = (
        num(it.next()?, 0, 23)?,
        num(it.next()?, 0, 59)?,
        num(it.next()?, 0, 60)?,
    );
    let zone = match zone.strip_prefix('.') {
        Some(frac) => {
            let n = frac.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return None;
            }
            &frac[n..]
        }
        None => zone,
    };
    let offset: i64 = match zone {
        "Z" | "z" => 0,
        // Checked as bytes: a multi-byte character must not put a slice off a char boundary.
        z if z.len() == 6
            && z.is_ascii()
            && (z.starts_with('+') || z.starts_with('-'))
            && z.as_bytes()[3] == b':' =>
        {
            let mins = num(z.get(1..3)?, 0, 23)? as i64 * 60 + num(z.get(4..6)?, 0, 59)? as i64;
            if z.starts_with('-') {
                -mins * 60
            } else {
                mins * 60
            }
        }
        _ => return None,
    };
    let t = day * DAY_SECS as i64 + (h as i64 * 3600 + mi as i64 * 60 + se.min(59) as i64) - offset;
    u64::try_from(t).ok().map(Instant::Time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for z in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(day_label(days_from_civil(2026, 12, 3)), "2026-12-03");
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn months() {
        let d = days_from_civil(2026, 12, 31);
        let m = month_of_day(d);
        assert_eq!(month_label(m), "2026-12");
        assert_eq!(month_start_day(m), days_from_civil(2026, 12, 1));
        assert_eq!(month_start_day(m + 1), days_from_civil(2027, 1, 1));
        assert_eq!(parse_month("2026-12"), Some(m));
        assert_eq!(parse_month("2026-13"), None);
    }

    #[test]
    fn instants() {
        // Multi-byte characters where the zone's digits and colon go: refused, not a panic.
        assert_eq!(parse_instant("2026-12-03T10:00:00+0\u{e9}00"), None);
        assert_eq!(parse_instant("2026-12-03T10:00:00-0\u{20ac}0"), None);
        let d = days_from_civil(2026, 12, 3);
        assert_eq!(parse_instant("2026-12-03"), Some(Instant::Date(d)));
        assert_eq!(parse_instant("2026-02-30"), None);
        assert_eq!(parse_instant("2026-2-03"), None);
        let t = d as u64 * DAY_SECS + 10 * 3600;
        assert_eq!(
            parse_instant("2026-12-03T10:00:00Z"),
            Some(Instant::Time(t))
        );
        assert_eq!(
            parse_instant("2026-12-03T10:00:00.123Z"),
            Some(Instant::Time(t))
        );
        assert_eq!(
            parse_instant("2026-12-03T12:00:00+02:00"),
            Some(Instant::Time(t))
        );
        assert_eq!(
            parse_instant("2026-12-03T09:30:00-00:30"),
            Some(Instant::Time(t))
        );
        assert_eq!(parse_instant("2026-12-03T10:00:00"), None);
        assert_eq!(parse_instant("2026-12-03T25:00:00Z"), None);
        // A multi-byte character where the seconds end (an admin query can say anything).
        assert_eq!(parse_instant("2026-12-03T10:00:0\u{e9}Z"), None);
        assert_eq!(parse_instant("2026-12-03T10:00:00\u{e9}"), None);
        assert_eq!(parse_instant("2026-12-03\u{e9}0:00:00Z"), None);
        assert_eq!(Instant::Date(d).as_to(), (d as u64 + 1) * DAY_SECS);
        assert_eq!(time_label(t), "2026-12-03T10:00:00Z");
    }
}
