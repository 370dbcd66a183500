//! One connection to an SSE feed, for `tributary check --connect`: the response's status and
//! content type are checked, then the connection is closed before any event is read.

use super::{
    client::{request, transport},
    config::SseSettings,
    source::{content_type, is_event_stream, redacted_location},
};
use crate::sources::Probe;

/// Opens the stream with the source's headers, authentication and timeouts, and no
/// `Last-Event-ID` (no replay is asked for). A 2xx other than 204 with content type
/// `text/event-stream` (WHATWG HTML §9.2) is [`Probe::Ok`]; the connection is dropped at once.
/// A 401 under OAuth2 is answered as the source answers it: one new token, one more try
/// (a cached token the provider revoked is not a failure of the source's settings).
pub(super) async fn connect_once(settings: &SseSettings) -> Probe {
    match attempt(settings).await {
        Attempt::Unauthorized if settings.auth.forget_token().await => {
            match attempt(settings).await {
                Attempt::Unauthorized => {
                    Probe::Failed("HTTP 401, also with a new OAuth2 token".to_owned())
                }
                Attempt::Answered(probe) => probe,
            }
        }
        Attempt::Unauthorized => Probe::Failed("HTTP 401".to_owned()),
        Attempt::Answered(probe) => probe,
    }
}

/// What one connection attempt of the probe found.
enum Attempt {
    /// HTTP 401.
    Unauthorized,
    /// Any other outcome.
    Answered(Probe),
}

async fn attempt(settings: &SseSettings) -> Attempt {
    let answered = Attempt::Answered;
    let auth = match settings.auth.header().await {
        Ok(auth) => auth,
        Err(error) => return answered(Probe::Failed(error.to_string())),
    };
    let (url, request) = match request(settings, None, auth) {
        Ok(request) => request,
        Err(message) => return answered(Probe::Failed(message)),
    };
    let transport = match transport(settings, &url) {
        Ok(transport) => transport,
        Err(message) => return answered(Probe::Failed(message)),
    };
    let response = match transport.send(request).await {
        Ok(response) => response,
        Err(error) => {
            return answered(Probe::Failed(format!(
                "transport error: {}",
                crate::http::error_chain(error.inner())
            )))
        }
    };
    // The body is dropped unread: the connection closes.
    let status = response.status().as_u16();
    let headers = response.headers();
    answered(if response.status().is_success() {
        let content_type = content_type(headers);
        if status == 204 {
            Probe::Failed("HTTP 204 No Content: the server asks not to connect".into())
        } else if !is_event_stream(content_type) {
            Probe::Failed(format!(
                "HTTP {status} with content type `{content_type}`, not `text/event-stream`"
            ))
        } else {
            Probe::Ok(format!("HTTP {status}, text/event-stream"))
        }
    } else if (300..400).contains(&status) {
        let location = redacted_location(settings, headers);
        Probe::Failed(format!(
            "HTTP {status} to `{location}`, which is not followed"
        ))
    } else if status == 401 {
        return Attempt::Unauthorized;
    } else {
        Probe::Failed(format!("HTTP {status}"))
    })
}
