//! Time at the edges: the wall clock in milliseconds, RFC 3339 rendering for people, and how
//! long ago a time was (pure: the current time is passed in).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `2026-11-28T08:46:20Z` for a millisecond timestamp; empty for 0 (never). RFC 3339 ends
/// with the year 9999: a later time (only a stored or reported value gone wrong) is shown as
/// `after 9999-12-31T23:59:59Z`, never a panic (humantime's formatter refuses it with a `fmt::Error`, which
/// `to_string` would turn into one).
pub fn rfc3339_ms(ms: i64) -> String {
    use std::fmt::Write;
    if ms <= 0 {
        return String::new();
    }
    let mut out = String::new();
    match UNIX_EPOCH.checked_add(Duration::from_millis(ms.unsigned_abs())) {
        Some(t) if write!(out, "{}", humantime::format_rfc3339_seconds(t)).is_ok() => out,
        _ => "after 9999-12-31T23:59:59Z".to_string(),
    }
}

/// How long before `now_ms` a time was, in the unit people read it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Age {
    /// Under a minute (or in the future, a clock ahead of ours).
    JustNow,
    Minutes(i64),
    /// Under two days.
    Hours(i64),
    Days(i64),
}

/// The [`Age`] of `ms` at `now_ms`.
pub fn age(now_ms: i64, ms: i64) -> Age {
    let s = now_ms.saturating_sub(ms) / 1000;
    if s < 60 {
        Age::JustNow
    } else if s < 3600 {
        Age::Minutes(s / 60)
    } else if s < 2 * 86400 {
        Age::Hours(s / 3600)
    } else {
        Age::Days(s / 86400)
    }
}

/// As of which report a judgement from a device's last report stands, for the command line:
/// `as of 2026-11-30T14:02:00Z (3 days ago)`, or `never reported` for 0.
pub fn as_of(now_ms: i64, reported_ms: i64) -> String {
    if reported_ms <= 0 {
        return "never reported".into();
    }
    let ago = match age(now_ms, reported_ms) {
        Age::JustNow => "just now".to_string(),
        Age::Minutes(n) => format!("{n} min ago"),
        Age::Hours(n) => format!("{n} h ago"),
        Age::Days(n) => format!("{n} days ago"),
    };
    format!("as of {} ({ago})", rfc3339_ms(reported_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_past_the_year_9999_are_said_not_panicked_on() {
        assert_eq!(rfc3339_ms(253_402_300_799_000), "9999-12-31T23:59:59Z");
        assert_eq!(
            rfc3339_ms(253_402_300_800_000),
            "after 9999-12-31T23:59:59Z"
        );
        assert_eq!(rfc3339_ms(i64::MAX), "after 9999-12-31T23:59:59Z");
        assert_eq!(rfc3339_ms(0), "");
    }

    #[test]
    fn as_of_says_when_and_how_long_ago() {
        let now = 1_764_600_000_000;
        assert_eq!(
            as_of(now, now - 3 * 86_400_000),
            "as of 2025-11-28T14:40:00Z (3 days ago)"
        );
        assert_eq!(
            as_of(now, now - 5 * 60_000),
            "as of 2025-12-01T14:35:00Z (5 min ago)"
        );
        assert_eq!(as_of(now, 0), "never reported");
        assert_eq!(age(now, now + 10_000), Age::JustNow);
    }
}
