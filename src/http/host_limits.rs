//! One request budget per host, shared by every source that calls it.
//!
//! Each host has an optional token bucket (`[rate_limits."<host>"]`, a `governor` rate limiter)
//! and a pause: when a response says the budget is spent (`X-RateLimit-Remaining: 0`,
//! `RateLimit: …;r=0`) or a 429/503 carries `Retry-After`, every request to that host waits
//! until the reset instead of running into more 429s.

use std::{
    collections::{BTreeMap, HashMap},
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use tokio::time::Instant;

/// `[rate_limits."<host>"]`: the request budget of one host (`host` or `host:port`, as in
/// the URL).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second (may be fractional: `0.5` is one request every 2 s).
    pub requests_per_second: f64,
    /// Requests that may go at once after an idle spell. Default 1 (evenly spaced).
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_burst() -> u32 {
    1
}

impl RateLimitConfig {
    /// The `governor` quota, or `None` when the numbers are not positive.
    pub fn quota(&self) -> Option<Quota> {
        if !(self.requests_per_second.is_finite() && self.requests_per_second > 0.0) {
            return None;
        }
        let period = Duration::try_from_secs_f64(1.0 / self.requests_per_second).ok()?;
        let quota = Quota::with_period(period)?;
        Some(quota.allow_burst(NonZeroU32::new(self.burst)?))
    }
}

/// The budgets of every host, created on first use.
#[derive(Default)]
pub struct HostLimits {
    configured: BTreeMap<String, RateLimitConfig>,
    hosts: Mutex<HashMap<String, Arc<HostLimiter>>>,
}

impl HostLimits {
    /// Budgets from `[rate_limits]`; hosts not named there have no bucket, only pauses.
    pub fn new(configured: BTreeMap<String, RateLimitConfig>) -> Self {
        HostLimits {
            configured,
            hosts: Mutex::default(),
        }
    }

    /// The limiter of the host of `url` (`host[:port]`).
    pub fn for_url(&self, url: &url::Url) -> Arc<HostLimiter> {
        let host = host_key(url);
        let mut hosts = self.hosts.lock().expect("host limits lock is not poisoned");
        let limiter = hosts.entry(host.clone()).or_insert_with(|| {
            let bucket = self
                .configured
                .get(&host)
                .or_else(|| self.configured.get(url.host_str().unwrap_or_default()))
                .and_then(RateLimitConfig::quota)
                .map(RateLimiter::direct);
            Arc::new(HostLimiter {
                bucket,
                paused_until: Mutex::new(None),
            })
        });
        Arc::clone(limiter)
    }
}

/// `host` or `host:port` when the URL names a port.
pub fn host_key(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// The longest pause a server's answer may put on a host: one hour, as `Retry-After`
/// ([`super::MAX_RETRY_AFTER`]), whatever the caller asks.
pub const MAX_PAUSE: Duration = super::MAX_RETRY_AFTER;

/// One host's bucket and pause.
pub struct HostLimiter {
    bucket: Option<DefaultDirectRateLimiter>,
    paused_until: Mutex<Option<Instant>>,
}

impl HostLimiter {
    /// Waits until a request may go: past any pause, then for a token of the bucket. Returns
    /// the time waited.
    pub async fn acquire(&self) -> Duration {
        let waited = self.wait_pause().await;
        waited + self.spend().await
    }

    /// Waits past any pause only (a conditional request, whose 304 costs nothing; see
    /// [`Self::spend`]). Returns the time waited.
    pub async fn wait_pause(&self) -> Duration {
        let started = Instant::now();
        loop {
            let pause = *self
                .paused_until
                .lock()
                .expect("pause lock is not poisoned");
            match pause {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => break,
            }
        }
        started.elapsed()
    }

    /// Takes a token from the bucket, waiting for one. Returns the time waited.
    pub async fn spend(&self) -> Duration {
        let started = Instant::now();
        if let Some(bucket) = &self.bucket {
            bucket.until_ready().await;
        }
        started.elapsed()
    }

    /// Holds every request to this host for `delay` (extending, never shortening, a pause),
    /// at most [`MAX_PAUSE`]: the delay comes from a server's headers.
    pub fn pause_for(&self, delay: Duration) {
        let now = Instant::now();
        let until = now
            .checked_add(delay.min(MAX_PAUSE))
            .unwrap_or(now + MAX_PAUSE);
        let mut paused = self
            .paused_until
            .lock()
            .expect("pause lock is not poisoned");
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_need_positive_numbers() {
        let config = |requests_per_second, burst| RateLimitConfig {
            requests_per_second,
            burst,
        };
        assert!(config(100.0, 1).quota().is_some());
        assert!(config(0.5, 3).quota().is_some());
        for bad in [
            config(0.0, 1),
            config(-1.0, 1),
            config(f64::NAN, 1),
            config(5.0, 0),
        ] {
            assert!(bad.quota().is_none(), "{bad:?}");
        }
    }

    #[test]
    fn hosts_are_keyed_with_their_port_and_shared() {
        let limits = HostLimits::new(BTreeMap::new());
        let a = limits.for_url(&"http://127.0.0.1:8080/a".parse().unwrap());
        let b = limits.for_url(&"http://127.0.0.1:8080/b?x=1".parse().unwrap());
        let other = limits.for_url(&"http://127.0.0.1:8081/a".parse().unwrap());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(
            host_key(&"https://api.github.com/x".parse().unwrap()),
            "api.github.com"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_requests_until_it_ends() {
        let limits = HostLimits::new(BTreeMap::new());
        let limiter = limits.for_url(&"http://h/".parse().unwrap());
        limiter.pause_for(Duration::from_secs(30));
        limiter.pause_for(Duration::from_secs(5));
        let waited = limiter.acquire().await;
        assert!(waited >= Duration::from_secs(30), "{waited:?}");
        assert!(limiter.acquire().await < Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_from_any_server_number_lasts_at_most_an_hour() {
        let limits = HostLimits::new(BTreeMap::new());
        let limiter = limits.for_url(&"http://h/".parse().unwrap());
        // Before, `Instant::now() + delay` panicked ("overflow when adding duration to
        // instant").
        limiter.pause_for(Duration::MAX);
        limiter.pause_for(Duration::from_secs(
            17_399_999_999_990_399_099 / 1_000_000_000,
        ));
        let waited = limiter.acquire().await;
        assert!(waited >= MAX_PAUSE, "{waited:?}");
        assert!(waited < MAX_PAUSE + Duration::from_secs(1), "{waited:?}");
        assert_eq!(MAX_PAUSE, Duration::from_secs(3600));
    }
}
