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

/// The rate budget a response reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitStatus {
    /// Requests allowed in the window, when given.
    pub limit: Option<u64>,
    /// Requests left in the current window.
    pub remaining: u64,
    /// Time until the window resets (the budget is full again).
    pub reset_in: Duration,
}

impl RateLimitStatus {
    /// The wait before the next request: until the reset when the budget is spent, else none.
    pub fn wait(&self) -> Option<Duration> {
        (self.remaining == 0).then_some(self.reset_in)
    }
}

/// Reads the rate budget from `headers`, relative to `now`. `None` when the response carries
/// none of the conventions (or only part of one).
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
        let at = UNIX_EPOCH + Duration::from_secs(reset);
        at.duration_since(now).unwrap_or(Duration::ZERO)
    } else {
        Duration::from_secs(reset)
    };
    Some(RateLimitStatus {
        limit: number(headers, &format!("{prefix}limit")),
        remaining,
        reset_in,
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
        reset_in: Duration::from_secs(reset?),
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
