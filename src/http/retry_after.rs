//! The `Retry-After` response header (RFC 9110 §10.2.3): either a number of seconds or an
//! HTTP-date, sent with 429, 503 and redirects to say how long a client should wait.

use std::time::{Duration, SystemTime};

/// The longest wait taken from a `Retry-After` header: one hour. A larger value (or a date
/// further away) is clamped to it, so a wrong header cannot stall a source for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The delay a `Retry-After` header value asks for, relative to `now`, at most
/// [`MAX_RETRY_AFTER`]. A date in the past means no wait (`Duration::ZERO`).
///
/// Returns `None` when the value is neither delay-seconds (ASCII digits) nor an HTTP-date
/// (RFC 9110 §5.6.7, all three historic formats): the caller then falls back to its own backoff.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tributary::http::parse_retry_after;
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_747);
/// assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
/// assert_eq!(
///     parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
///     Some(Duration::from_secs(30))
/// );
/// assert_eq!(parse_retry_after("soon", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is still "a very long time".
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let date = httpdate::parse_http_date(value).ok()?;
        date.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn delay_seconds() {
        assert_eq!(
            parse_retry_after("120", at(0)),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", at(0)), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", at(0)),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn http_dates_in_every_format() {
        // 1994-11-06T08:49:37Z, the RFC's example, in IMF-fixdate, RFC 850 and asctime form.
        let now = at(784_111_777 - 30);
        for value in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_retry_after(value, now),
                Some(Duration::from_secs(30)),
                "{value}"
            );
        }
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at(784_111_777 + 5)),
            Some(Duration::ZERO),
            "a date in the past means retry now"
        );
    }

    #[test]
    fn far_away_values_wait_at_most_an_hour() {
        for value in [
            "17399999999990399099",
            "18446744073709551615",
            "18446744073709551616",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            assert_eq!(
                parse_retry_after(value, at(0)),
                Some(MAX_RETRY_AFTER),
                "{value}"
            );
        }
        let end_of_time = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::MAX / 4);
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", end_of_time),
            Some(Duration::ZERO)
        );
    }

    proptest::proptest! {
        #[test]
        fn any_value_never_panics_and_waits_at_most_an_hour(
            value in "\\PC{0,40}|[0-9]{1,30}|[A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
            now in 0u64..=u64::MAX / 4,
        ) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now);
            if let Some(delay) = parse_retry_after(&value, now) {
                proptest::prop_assert!(delay <= MAX_RETRY_AFTER);
            }
        }
    }

    #[test]
    fn anything_else_is_not_a_retry_after() {
        for value in ["", "soon", "-5", "1.5", "Sun, 06 Nov 1994"] {
            assert_eq!(parse_retry_after(value, at(0)), None, "{value}");
        }
    }
}
