//! Reconnect delays: exponential backoff with full jitter, capped, with a server-given floor.
//!
//! Full jitter (a uniformly random delay between zero and the exponential ceiling) spreads
//! the reconnects of many clients after an outage, as described in "Exponential Backoff And
//! Jitter" (AWS Architecture Blog, 2015). A server may ask for a minimum delay (the SSE
//! `retry:` field, WHATWG HTML §9.2.6; `Retry-After`, RFC 9110 §10.2.3): the delay is never
//! shorter than that.

use std::time::Duration;

use rand::Rng;

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
    /// `floor`. Advances the attempt counter.
    pub fn next_delay(&mut self, floor: Option<Duration>, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let jittered = Duration::from_nanos(rng.random_range(0..=ceiling.as_nanos() as u64));
        jittered.max(floor.unwrap_or(Duration::ZERO))
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
