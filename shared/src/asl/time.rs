//! RFC 3339 timestamps: parsing `Wait` timestamps and formatting context-object times.
//!
//! The runner needs only UTC formatting and offset-aware parsing, which is a few lines of calendar
//! arithmetic; that is not worth a date-time dependency in every Lambda binary.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time as nanoseconds since the Unix epoch (negative before 1970).
pub(crate) type UnixNanos = i128;

/// Parses an RFC 3339 timestamp such as `2024-05-01T12:00:00Z` or
/// `2024-05-01T14:00:00.250+02:00`.
pub(crate) fn parse_rfc3339(text: &str) -> Option<UnixNanos> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        if part.bytes().all(|b| b.is_ascii_digit()) { part.parse().ok() } else { None }
    };
    let year = number(0..4)?;
    let month = number(5..7)?;
    let day = number(8..10)?;
    let hour = number(11..13)?;
    let minute = number(14..16)?;
    let second = number(17..19)?;
    let separators_ok = bytes[4] == b'-'
        && bytes[7] == b'-'
        && matches!(bytes[10], b'T' | b't' | b' ')
        && bytes[13] == b':'
        && bytes[16] == b':';
    if !separators_ok
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos: i128 = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        // Only nanosecond precision matters; further digits are ignored.
        let kept = &fraction[..digits.min(9)];
        nanos = kept.parse::<i128>().ok()? * 10i128.pow(9 - kept.len() as u32);
        rest = &fraction[digits..];
    }
    let offset_seconds: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let offset = &rest[1..];
            if offset.len() != 5 || !offset.is_ascii() || offset.as_bytes()[2] != b':' {
                return None;
            }
            let hours: i64 = offset[..2].parse().ok()?;
            let minutes: i64 = offset[3..].parse().ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Some(i128::from(seconds) * 1_000_000_000 + nanos)
}

/// Formats a time as `YYYY-MM-DDTHH:MM:SS.mmmZ`, the shape Step Functions uses in the context.
pub(crate) fn format_rfc3339(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let seconds = since_epoch.as_secs() as i64;
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let of_day = seconds.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since_epoch.subsec_millis()
    )
}

/// Now, as nanoseconds since the Unix epoch.
pub(crate) fn now_unix_nanos() -> UnixNanos {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// How long from `now` until `target`; zero if it has passed.
pub(crate) fn until(target: UnixNanos, now: UnixNanos) -> Duration {
    let nanos = (target - now).max(0);
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    Duration::new(secs, (nanos % 1_000_000_000) as u32)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_and_offset_timestamps_parse_to_the_same_instant() {
        let utc = parse_rfc3339("2024-02-29T12:00:00Z").unwrap();
        assert_eq!(parse_rfc3339("2024-02-29T14:00:00+02:00"), Some(utc));
        assert_eq!(parse_rfc3339("2024-02-29T11:30:00.000-00:30"), Some(utc));
        assert_eq!(utc, 1_709_208_000 * 1_000_000_000);
    }

    #[test]
    fn fractional_seconds_are_kept() {
        let base = parse_rfc3339("1970-01-01T00:00:00Z").unwrap();
        assert_eq!(base, 0);
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.25Z"), Some(1_250_000_000));
    }

    #[test]
    fn malformed_timestamps_are_refused() {
        for text in ["2024-02-30T00:00:00Z", "2024-13-01T00:00:00Z", "2024-01-01 00:00", "2024-01-01T00:00:00", "soon"]
        {
            assert_eq!(parse_rfc3339(text), None, "{text}");
        }
    }

    #[test]
    fn formatting_round_trips_through_parsing() {
        let time = UNIX_EPOCH + Duration::from_millis(1_709_208_000_123);
        let text = format_rfc3339(time);
        assert_eq!(text, "2024-02-29T12:00:00.123Z");
        assert_eq!(parse_rfc3339(&text), Some(1_709_208_000_123_000_000));
    }

    #[test]
    fn until_a_past_time_is_zero() {
        assert_eq!(until(5, 10), Duration::ZERO);
        assert_eq!(until(1_500_000_000, 0), Duration::from_millis(1500));
    }
}
