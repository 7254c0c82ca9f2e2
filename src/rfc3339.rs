//! RFC 3339 timestamps in UTC, for logs and the API. Pure functions; no clock reads.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// The last instant RFC 3339 can write (four-digit years): 9999-12-31T23:59:59.999Z.
const LATEST_MS: u64 = 253_402_300_799_999;

/// Formats `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ`. Times before 1970 print as the epoch, times after
/// year 9999 (an ETA behind millions of batches at a day each) as its last millisecond.
pub fn format(t: SystemTime) -> String {
    let latest = UNIX_EPOCH + std::time::Duration::from_millis(LATEST_MS);
    let since_epoch = t.min(latest).duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    let mut out = String::with_capacity(24);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since_epoch.subsec_millis()
    );
    out
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[track_caller]
    fn check(unix_millis: u64, expected: &str) {
        assert_eq!(format(UNIX_EPOCH + Duration::from_millis(unix_millis)), expected);
    }

    #[test]
    fn known_instants() {
        check(0, "1970-01-01T00:00:00.000Z");
        check(LATEST_MS, "9999-12-31T23:59:59.999Z");
        check(LATEST_MS + 1, "9999-12-31T23:59:59.999Z");
        check(u64::MAX, "9999-12-31T23:59:59.999Z");
        check(951_782_400_000, "2000-02-29T00:00:00.000Z");
        check(1_709_251_199_999, "2024-02-29T23:59:59.999Z");
        check(1_798_761_600_123, "2027-01-01T00:00:00.123Z");
        check(4_107_542_400_000, "2100-03-01T00:00:00.000Z");
    }
}
