//! Wall-clock helpers. Messages carry Unix milliseconds so every tier agrees.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, 0 if the clock is before 1970.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 UTC time of a Unix-ms instant, to the millisecond
/// (`2023-11-14T22:13:20.000Z`), as Alertmanager and Kubernetes expect.
pub fn rfc3339(ts_ms: i64) -> String {
    let secs = ts_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let in_day = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60,
        ts_ms.rem_euclid(1000)
    )
}

/// Seconds since the Unix epoch of a `YYYY-MM-DD HH:MM:SS` time (or with
/// `T` between date and time), read as UTC; fractions of a second are
/// dropped. The inverse of [`rfc3339`]'s date arithmetic; `None` when the
/// text is not such a time.
pub fn unix_secs(ts: &str) -> Option<i64> {
    let (date, time) = ts.trim().split_once([' ', 'T'])?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.trim_end_matches('Z').split(':');
    let mut part = || -> Option<i64> { t.next()?.split('.').next()?.parse().ok() };
    let (hh, mm, ss) = (part()?, part()?, part().unwrap_or(0));
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // Days since 1970-01-01 from the civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    #[test]
    fn unix_secs_reads_utc_and_undoes_rfc3339() {
        use super::{rfc3339, unix_secs};
        assert_eq!(unix_secs("1970-01-01 00:00:00"), Some(0));
        assert_eq!(unix_secs("2020-01-01 00:00:00"), Some(1_577_836_800));
        assert_eq!(unix_secs("2014-02-28 23:59:59.000"), Some(1_393_631_999));
        assert_eq!(unix_secs("2016-02-29T12:00:00"), Some(1_456_747_200));
        for ms in [0, 951_782_400_000, 1_700_000_000_123, -86_400_000] {
            assert_eq!(unix_secs(&rfc3339(ms)), Some(ms.div_euclid(1000)));
        }
        assert_eq!(unix_secs("2020-13-01 00:00:00"), None);
        assert_eq!(unix_secs("yesterday"), None);
    }

    #[test]
    fn rfc3339_is_utc_civil() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(super::rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }
}
