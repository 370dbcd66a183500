//! librdkafka's log lines and client errors, deduplicated and rate-limited.
//!
//! With the brokers down, librdkafka reports every failed connection attempt (several per
//! second per broker) as a log line *and* as an error event, and rdkafka 0.39 hands each error
//! event to the context's `error` callback twice (once in `Client::poll_event`, once more in
//! `BaseProducer::poll`). Unfiltered, that was 840 lines in 30 s, each printed twice.
//!
//! [`LogLimiter`] lets one line through per distinct message per [`WINDOW`] (a message is
//! compared without librdkafka's varying parts, the thread name and the `(after 0ms in state
//! CONNECT, …)` suffix), and at most [`MAX_LINES_PER_WINDOW`] lines in all per window. The
//! next line let through says how many were held back. Log lines and error events are told
//! apart ([`Origin`]): a failure shows once as librdkafka's line and once as the error event,
//! which names the error's kind (`Authentication`, `AllBrokersDown`).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// How long an identical message stays quiet after it was logged; also the period of the
/// overall budget.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Most librdkafka lines logged per [`WINDOW`], all messages together.
pub const MAX_LINES_PER_WINDOW: usize = 20;

/// Where a line comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// librdkafka's log callback.
    Log,
    /// An error event (the context's `error` callback).
    ErrorEvent,
}

#[derive(Default)]
struct State {
    /// Each message's last logged time.
    logged: HashMap<(Origin, String), Instant>,
    window_start: Option<Instant>,
    lines_in_window: usize,
    /// Lines held back since the last line let through.
    held_back: u64,
}

/// Decides which librdkafka lines are logged (see the module docs).
#[derive(Default)]
pub struct LogLimiter {
    state: Mutex<State>,
}

impl LogLimiter {
    /// Whether `message` from `origin`, arriving at `now`, is logged: `Some(n)` with the
    /// number of lines held back since the last one logged, or `None` to drop it.
    pub fn admit(&self, origin: Origin, message: &str, now: Instant) -> Option<u64> {
        let key = (origin, normalized(message).to_owned());
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let window_start = *state.window_start.get_or_insert(now);
        if now.duration_since(window_start) >= WINDOW {
            state.window_start = Some(now);
            state.lines_in_window = 0;
            state
                .logged
                .retain(|_, logged| now.duration_since(*logged) < WINDOW);
        }
        let repeated = state
            .logged
            .get(&key)
            .is_some_and(|logged| now.duration_since(*logged) < WINDOW);
        if repeated || state.lines_in_window >= MAX_LINES_PER_WINDOW {
            state.held_back += 1;
            return None;
        }
        state.logged.insert(key, now);
        state.lines_in_window += 1;
        Some(std::mem::take(&mut state.held_back))
    }
}

/// `message` without librdkafka's leading thread name (`[thrd:…]: `, which log lines carry
/// and error events do not) and trailing `(after …)` detail, which changes between otherwise
/// identical reports.
fn normalized(message: &str) -> &str {
    let message = message.trim();
    let message = match message.strip_prefix("[thrd:") {
        Some(rest) => rest.split_once("]: ").map_or(message, |(_, rest)| rest),
        None => message,
    };
    match message.rfind(" (after ") {
        Some(at) if message.ends_with(')') => &message[..at],
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_failures_are_logged_once_per_window_with_the_count_held_back() {
        let limiter = LogLimiter::default();
        let start = Instant::now();
        let line = |ms: u64| {
            format!("[thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after {ms}ms in state CONNECT)")
        };
        assert_eq!(limiter.admit(Origin::Log, &line(0), start), Some(0));
        for i in 1..100 {
            let at = start + Duration::from_millis(i * 100);
            assert_eq!(limiter.admit(Origin::Log, &line(i), at), None);
        }
        // The error event of the same failure shows once, though rdkafka hands it over twice.
        let event = "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)";
        let at = start + Duration::from_secs(20);
        assert_eq!(limiter.admit(Origin::ErrorEvent, event, at), Some(99));
        assert_eq!(limiter.admit(Origin::ErrorEvent, event, at), None);
        assert_eq!(
            limiter.admit(Origin::Log, &line(0), start + WINDOW),
            Some(1)
        );
    }

    #[test]
    fn distinct_messages_share_a_budget() {
        let limiter = LogLimiter::default();
        let now = Instant::now();
        let admitted = (0..100)
            .filter(|i| {
                limiter
                    .admit(Origin::Log, &format!("broker {i} down"), now)
                    .is_some()
            })
            .count();
        assert_eq!(admitted, MAX_LINES_PER_WINDOW);
        assert_eq!(
            limiter.admit(Origin::Log, "broker 0 down", now + WINDOW),
            Some(80),
            "the next window logs again and says how many were held back"
        );
    }
}
