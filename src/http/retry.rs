//! Which HTTP answers are worth another attempt: one place for every source kind.

/// What to do after an HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusClass {
    /// 1xx, 2xx, 3xx: not an error (304 Not Modified included).
    Success,
    /// May pass by itself: 408 Request Timeout, 425 Too Early, 429 Too Many Requests, and
    /// every 5xx but 501 Not Implemented and 505 HTTP Version Not Supported. Retry with backoff.
    Transient,
    /// Will not pass by retrying (400, 401, 403, 404, 410, 422, …, 501, 505): stop and say so.
    Permanent,
}

/// Classifies an HTTP status (RFC 9110 §15) for retrying.
pub fn classify_status(status: u16) -> StatusClass {
    match status {
        100..=399 => StatusClass::Success,
        408 | 425 | 429 => StatusClass::Transient,
        501 | 505 => StatusClass::Permanent,
        500..=599 => StatusClass::Transient,
        _ => StatusClass::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_lists() {
        for status in [408, 425, 429, 500, 502, 503, 504] {
            assert_eq!(classify_status(status), StatusClass::Transient, "{status}");
        }
        for status in [400, 401, 403, 404, 410, 422, 501, 505] {
            assert_eq!(classify_status(status), StatusClass::Permanent, "{status}");
        }
        for status in [200, 204, 304] {
            assert_eq!(classify_status(status), StatusClass::Success, "{status}");
        }
    }
}
