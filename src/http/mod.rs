//! The HTTP policy shared by every HTTP-speaking source: authentication, one request budget per
//! host, timeouts, which statuses are retried, the delay a server asks for (`Retry-After`), and
//! the rate budget it reports (`X-RateLimit-*`, `RateLimit-*`).

mod auth;
mod client;
mod host_limits;
mod network;
mod rate_limit;
pub mod refresh_token;
mod retry;
mod retry_after;
pub mod sigv4;

pub use auth::{basic_authorization, Auth, AuthConfig, ClientAuth, OAuth2Tokens, TokenError};
pub use client::{
    HttpError, HttpPolicy, HttpRequest, HttpResponse, HttpStream, RetryConfig, StreamTimeouts,
    Timeouts,
};
pub use host_limits::{host_key, HostLimiter, HostLimits, RateLimitConfig};
pub use network::{Network, NetworkError, TlsConfig};
pub use rate_limit::{rate_limit_status, RateLimitStatus};
pub use retry::{classify_status, StatusClass};
pub use retry_after::{parse_retry_after, MAX_RETRY_AFTER};

/// A transport error in one line, with its causes (reqwest's own text omits them), and without
/// the URL (which may carry secrets).
pub fn describe_reqwest_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "the body could not be read"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `error` and its causes in one line, `: `-separated, each cause left out when the text
/// before already says it (hyper's "client error (Connect)" hides the DNS or TCP cause in its
/// `source()`).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Replaces (or adds) query parameter `name` of `url`, keeping the other parameters in order.
pub fn set_query_param(url: &mut url::Url, name: &str, value: &str) {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(key, _)| key != name)
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair(name, value);
}

/// Removes the user info (`user:password@`) from `url` and returns it, percent-decoded, to be
/// sent as HTTP basic credentials (RFC 7617) instead, as reqwest does: handed to hyper in the
/// URL, it would be ignored, and logged by the connection pool at debug.
pub fn take_user_info(url: &mut url::Url) -> Option<(String, String)> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let credentials = (decode(url.username()), decode(url.password().unwrap_or("")));
    // Both fail only for URLs that cannot have user info, which have none to remove.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Some(credentials)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_chain_names_the_hidden_cause_once() {
        let dns = std::io::Error::other("failed to lookup address information");
        let connect = std::io::Error::new(std::io::ErrorKind::NotConnected, dns);
        // io::Error's Display repeats its inner error: the chain must not say it twice.
        assert_eq!(
            super::error_chain(&connect),
            "failed to lookup address information"
        );
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let hidden = Outer(std::io::Error::other("dns error: no such host"));
        assert_eq!(
            super::error_chain(&hidden),
            "client error (Connect): dns error: no such host"
        );
    }

    #[test]
    fn user_info_is_taken_out_of_the_url_and_decoded() {
        let mut url = url::Url::parse("http://us%20er:p%40ss@host:8080/s?q=1").unwrap();
        assert_eq!(
            super::take_user_info(&mut url),
            Some(("us er".to_owned(), "p@ss".to_owned()))
        );
        assert_eq!(url.as_str(), "http://host:8080/s?q=1");
        assert_eq!(super::take_user_info(&mut url), None);
    }
}
