//! The HTTP policy shared by every HTTP-speaking source: which statuses are retried, the delay a
//! server asks for (`Retry-After`), and the rate budget it reports (`X-RateLimit-*`,
//! `RateLimit-*`).

mod rate_limit;
mod retry;
mod retry_after;

pub use rate_limit::{rate_limit_status, RateLimitStatus};
pub use retry::{classify_status, StatusClass};
pub use retry_after::{parse_retry_after, MAX_RETRY_AFTER};
