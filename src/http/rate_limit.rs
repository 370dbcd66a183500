//! What a response says about the client's rate budget, so that a poller waits for the reset
//! instead of running into 429s.
//!
//! Three conventions are read:
//! - `X-RateLimit-Limit` / `-Remaining` / `-Reset` (GitHub, and many others): `Reset` is Unix
//!   seconds (GitHub) or, when it is a small number, seconds from now;
//! - `RateLimit-Limit` / `-Remaining` / `-Reset` (IETF draft-ietf-httpapi-ratelimit-headers up
//!   to draft 06): `Reset` is seconds from now;
//! - `RateLimit: "name";r=<remaining>;t=<seconds to reset>` with `RateLimit-Policy:
//!   "name";q=<quota>;w=<window seconds>` (the same draft from version 07 on, structured fields).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

/// A `Reset` value above this many seconds is a Unix time, not a delay (one year).
const RESET_IS_EPOCH_ABOVE: u64 = 365 * 24 * 3600;

/// The longest wait read from rate-limit headers: one hour, the same bound as `Retry-After`
/// ([`super::MAX_RETRY_AFTER`]). The numbers are the server's: a reset years away (or past
/// what the clock can hold, such as `17399999999990399099`) is a wrong header, and must not
/// stall a source for longer, nor overflow a time computed from it.
pub const MAX_RATE_LIMIT_WAIT: Duration = super::MAX_RETRY_AFTER;

/// The rate budget a response reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitStatus {
    /// Requests allowed in the window, when given.
    pub limit: Option<u64>,
    /// Requests left in the current window.
    pub remaining: u64,
    /// Time until the window resets (the budget is full again), at most
    /// [`MAX_RATE_LIMIT_WAIT`].
    pub reset_in: Duration,
}

impl RateLimitStatus {
    /// The wait before the next request: until the reset when the budget is spent, else none.
    pub fn wait(&self) -> Option<Duration> {
        (self.remaining == 0).then_some(self.reset_in)
    }
}

/// Reads the rate budget from `headers`, relative to `now`. `None` when the response carries
/// none of the conventions (or only part of one). Whatever the numbers, it never panics and
/// the reset is at most [`MAX_RATE_LIMIT_WAIT`] away.
pub fn rate_limit_status(headers: &HeaderMap, now: SystemTime) -> Option<RateLimitStatus> {
    structured(headers).or_else(|| {
        ["x-ratelimit-", "ratelimit-"]
            .into_iter()
            .find_map(|prefix| split_headers(headers, prefix, now))
    })
}

fn number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn split_headers(headers: &HeaderMap, prefix: &str, now: SystemTime) -> Option<RateLimitStatus> {
    let remaining = number(headers, &format!("{prefix}remaining"))?;
    let reset = number(headers, &format!("{prefix}reset"))?;
    let reset_in = if reset > RESET_IS_EPOCH_ABOVE {
        // A Unix time past what `SystemTime` holds is as far away as a wait can be.
        UNIX_EPOCH
            .checked_add(Duration::from_secs(reset))
            .map_or(MAX_RATE_LIMIT_WAIT, |at| {
                at.duration_since(now).unwrap_or(Duration::ZERO)
            })
    } else {
        Duration::from_secs(reset)
    };
    Some(RateLimitStatus {
        limit: number(headers, &format!("{prefix}limit")),
        remaining,
        reset_in: reset_in.min(MAX_RATE_LIMIT_WAIT),
    })
}

/// `RateLimit: "default";r=0;t=30` (the first item), with the quota from `RateLimit-Policy`.
fn structured(headers: &HeaderMap) -> Option<RateLimitStatus> {
    let value = headers.get("ratelimit")?.to_str().ok()?;
    let item = value.split(',').next()?;
    let parameters = item.split(';').skip(1);
    let mut remaining = None;
    let mut reset = None;
    for parameter in parameters {
        match parameter.trim().split_once('=') {
            Some(("r", v)) => remaining = v.trim().parse().ok(),
            Some(("t", v)) => reset = v.trim().parse().ok(),
            _ => {}
        }
    }
    let limit = headers
        .get("ratelimit-policy")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|item| {
            item.split(';')
                .skip(1)
                .find_map(|p| p.trim().strip_prefix("q=")?.trim().parse().ok())
        });
    Some(RateLimitStatus {
        limit,
        remaining: remaining?,
        reset_in: Duration::from_secs(reset?).min(MAX_RATE_LIMIT_WAIT),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn github_headers_reset_at_a_unix_time() {
        // As in the recorded api.github.com responses.
        let status = rate_limit_status(
            &headers(&[
                ("x-ratelimit-limit", "60"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1700000030"),
            ]),
            at(1_700_000_000),
        )
        .unwrap();
        assert_eq!(status.limit, Some(60));
        assert_eq!(status.wait(), Some(Duration::from_secs(30)));
    }

    #[test]
    fn a_small_reset_is_seconds_from_now_and_a_past_reset_is_no_wait() {
        let relative = rate_limit_status(
            &headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "12")]),
            at(1_700_000_000),
        )
        .unwrap();
        assert_eq!(relative.wait(), Some(Duration::from_secs(12)));
        let past = rate_limit_status(
            &headers(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1600000000"),
            ]),
            at(1_700_000_000),
        )
        .unwrap();
        assert_eq!(past.wait(), Some(Duration::ZERO));
    }

    #[test]
    fn budget_left_means_no_wait() {
        let status = rate_limit_status(
            &headers(&[
                ("x-ratelimit-remaining", "42"),
                ("x-ratelimit-reset", "1700000030"),
            ]),
            at(1_700_000_000),
        )
        .unwrap();
        assert_eq!(status.wait(), None);
    }

    #[test]
    fn structured_fields_with_a_policy() {
        let status = rate_limit_status(
            &headers(&[
                ("ratelimit", "\"default\";r=0;t=7"),
                ("ratelimit-policy", "\"default\";q=100;w=60"),
            ]),
            at(0),
        )
        .unwrap();
        assert_eq!(
            status,
            RateLimitStatus {
                limit: Some(100),
                remaining: 0,
                reset_in: Duration::from_secs(7)
            }
        );
    }

    #[test]
    fn resets_beyond_the_clock_or_far_away_wait_at_most_an_hour() {
        // A REST API answered this; it panicked the source ("overflow when adding duration
        // to instant").
        for prefix in ["x-ratelimit-", "ratelimit-"] {
            let remaining = format!("{prefix}remaining");
            let reset = format!("{prefix}reset");
            for value in [
                "17399999999990399099",
                "18446744073709551615",
                "99999999999",
                "3600000",
            ] {
                let mut map = HeaderMap::new();
                map.insert(
                    http::HeaderName::from_bytes(remaining.as_bytes()).unwrap(),
                    "0".parse().unwrap(),
                );
                map.insert(
                    http::HeaderName::from_bytes(reset.as_bytes()).unwrap(),
                    value.parse().unwrap(),
                );
                let status = rate_limit_status(&map, at(1_700_000_000)).unwrap();
                assert_eq!(status.wait(), Some(MAX_RATE_LIMIT_WAIT), "{prefix} {value}");
            }
        }
        let status = rate_limit_status(
            &headers(&[("ratelimit", "\"default\";r=0;t=18446744073709551615")]),
            at(0),
        )
        .unwrap();
        assert_eq!(status.wait(), Some(MAX_RATE_LIMIT_WAIT));
        assert_eq!(MAX_RATE_LIMIT_WAIT, Duration::from_secs(3600));
    }

    proptest::proptest! {
        #[test]
        fn any_header_values_never_panic_and_wait_at_most_an_hour(
            remaining in "\\PC{0,24}|[0-9]{1,24}",
            reset in "\\PC{0,24}|[0-9]{1,24}",
            structured in "\\PC{0,40}|\"[a-z]{0,4}\";r=[0-9]{1,22};t=[0-9]{1,22}",
            now in 0u64..=u64::MAX,
        ) {
            let now = UNIX_EPOCH
                .checked_add(Duration::from_secs(now))
                .unwrap_or(UNIX_EPOCH);
            let mut map = HeaderMap::new();
            for (name, value) in [
                ("x-ratelimit-remaining", &remaining),
                ("x-ratelimit-reset", &reset),
                ("ratelimit-remaining", &remaining),
                ("ratelimit-reset", &reset),
            ] {
                if let Ok(value) = value.parse() {
                    map.insert(name, value);
                }
            }
            for with_structured in [false, true] {
                if with_structured {
                    if let Ok(value) = structured.parse() {
                        map.insert("ratelimit", value);
                    }
                }
                if let Some(status) = rate_limit_status(&map, now) {
                    proptest::prop_assert!(status.reset_in <= MAX_RATE_LIMIT_WAIT);
                }
            }
        }
    }

    #[test]
    fn partial_or_absent_headers_say_nothing() {
        for pairs in [
            &[][..],
            &[("x-ratelimit-remaining", "0")][..],
            &[("x-ratelimit-reset", "10")][..],
            &[
                ("x-ratelimit-remaining", "soon"),
                ("x-ratelimit-reset", "10"),
            ][..],
            &[("ratelimit", "\"default\";t=7")][..],
        ] {
            assert_eq!(rate_limit_status(&headers(pairs), at(0)), None, "{pairs:?}");
        }
    }
}
