//! Reconnect delays: exponential backoff with full jitter, capped, with a server-given floor.
//!
//! Full jitter (a uniformly random delay between zero and the exponential ceiling) spreads
//! the reconnects of many clients after an outage, as described in "Exponential Backoff And
//! Jitter" (AWS Architecture Blog, 2015). A server may ask for a minimum delay (the SSE
//! `retry:` field, WHATWG HTML §9.2.6; `Retry-After`, RFC 9110 §10.2.3): the delay is never
//! shorter than that.

use std::time::Duration;

use rand::Rng;

/// The longest floor a server may set: one hour, as `Retry-After`
/// ([`crate::http::MAX_RETRY_AFTER`]). An SSE `retry:` field or a header asking for more is
/// held to it, so that a server's number can neither stall a source for days nor overflow
/// the time it is added to.
pub const MAX_SERVER_FLOOR: Duration = crate::http::MAX_RETRY_AFTER;

/// Backoff state for one connection.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays start at `initial` (the ceiling of the first attempt) and double per attempt up
    /// to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The ceiling of the current attempt: `min(max, initial × 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next attempt: uniformly random in `[0, ceiling]`, but at least
    /// `floor` (a server's number, held to [`MAX_SERVER_FLOOR`]). Advances the attempt
    /// counter.
    pub fn next_delay(&mut self, floor: Option<Duration>, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let ceiling_nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let jittered = Duration::from_nanos(rng.random_range(0..=ceiling_nanos));
        jittered.max(floor.unwrap_or(Duration::ZERO).min(MAX_SERVER_FLOOR))
    }

    /// Attempts made since the last [`Self::reset`].
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Starts over after a healthy connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut ceilings = Vec::new();
        for _ in 0..6 {
            ceilings.push(backoff.ceiling().as_millis());
            backoff.next_delay(None, &mut rng);
        }
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn a_server_floor_is_held_to_an_hour() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for floor in [
            Duration::MAX,
            Duration::from_secs(17_399_999_999_990_399_099 / 1000),
            Duration::from_secs(3601),
        ] {
            assert_eq!(backoff.next_delay(Some(floor), &mut rng), MAX_SERVER_FLOOR);
        }
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(90)), &mut rng),
            Duration::from_secs(90)
        );
        // A configured ceiling past what u64 nanoseconds hold does not wrap to a short one.
        let mut long = Backoff::new(Duration::MAX, Duration::MAX);
        let delay = long.next_delay(None, &mut rng);
        assert!(delay <= Duration::MAX);
    }

    proptest! {
        #[test]
        fn delays_stay_between_floor_and_ceiling(
            seed: u64,
            initial_ms in 1u64..10_000,
            max_ms in 1u64..600_000,
            floor_ms in proptest::option::of(0u64..20_000),
            attempts in 1usize..80,
        ) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut backoff = Backoff::new(Duration::from_millis(initial_ms), Duration::from_millis(max_ms));
            let floor = floor_ms.map(Duration::from_millis);
            for _ in 0..attempts {
                let ceiling = backoff.ceiling();
                prop_assert!(ceiling <= Duration::from_millis(max_ms.max(initial_ms)));
                let delay = backoff.next_delay(floor, &mut rng);
                prop_assert!(delay <= ceiling.max(floor.unwrap_or_default()));
                prop_assert!(delay >= floor.unwrap_or_default());
            }
        }
    }
}
