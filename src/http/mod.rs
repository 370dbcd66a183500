//! The HTTP policy shared by every HTTP-speaking source. Today: reading the delay a server
//! asks for (`Retry-After`).

mod retry_after;

pub use retry_after::{parse_retry_after, MAX_RETRY_AFTER};
