//! Quota periods in UTC: where the day or month holding a Unix second starts and ends.

use crate::config::limits::Period;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of a day number.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The Unix seconds where the period holding `unix` starts and where the next one starts.
pub fn bounds(period: Period, unix: u64) -> (u64, u64) {
    let day = (unix / 86_400) as i64;
    match period {
        Period::Day => (day as u64 * 86_400, (day as u64 + 1) * 86_400),
        Period::Month => {
            let (y, m, _) = civil_from_days(day);
            let start = days_from_civil(y, m, 1);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let end = days_from_civil(ny, nm, 1);
            (start as u64 * 86_400, end as u64 * 86_400)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_months_in_utc() {
        // 2026-12-04T13:00:00Z
        let t = 1_796_389_200;
        assert_eq!(civil_from_days(t as i64 / 86_400), (2026, 12, 4));
        assert_eq!(bounds(Period::Day, t), (1_796_342_400, 1_796_428_800));
        let (s, e) = bounds(Period::Month, t);
        assert_eq!(civil_from_days(s as i64 / 86_400), (2026, 12, 1));
        assert_eq!(civil_from_days(e as i64 / 86_400), (2027, 1, 1));
        // A leap February.
        let (s, e) = bounds(Period::Month, 1_709_251_199); // 2024-02-29T23:59:59Z
        assert_eq!((e - s) / 86_400, 29);
        for d in [0i64, 59, 365, 10_956, 20_000, 47_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }
}
