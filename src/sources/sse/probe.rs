//! One connection to an SSE feed, for `tributary check --connect`: the response's status and
//! content type are checked, then the connection is closed before any event is read.

use eventsource_client::{self as es, Client as _, SSE};
use futures::StreamExt;

use super::{
    config::SseSettings,
    source::{build_client, is_event_stream},
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
    let client = match build_client(settings, None, auth) {
        Ok(client) => client,
        Err(message) => return answered(Probe::Failed(message)),
    };
    let mut stream = client.stream();
    while let Some(item) = stream.next().await {
        return answered(match item {
            Ok(SSE::Connected(details)) => {
                let status = details.response().status();
                let content_type = details
                    .response()
                    .get_header_value("content-type")
                    .ok()
                    .flatten()
                    .unwrap_or("");
                if status == 204 {
                    Probe::Failed("HTTP 204 No Content: the server asks not to connect".into())
                } else if !is_event_stream(content_type) {
                    Probe::Failed(format!(
                        "HTTP {status} with content type `{content_type}`, not `text/event-stream`"
                    ))
                } else {
                    Probe::Ok(format!("HTTP {status}, text/event-stream"))
                }
            }
            Ok(SSE::Comment(_) | SSE::Event(_)) => continue,
            Err(es::Error::UnexpectedResponse(response, _body)) => {
                let status = response.status();
                if (300..400).contains(&status) {
                    let location = response
                        .get_header_value("location")
                        .ok()
                        .flatten()
                        .map(|target| settings.redactor.redact(target))
                        .unwrap_or_default();
                    Probe::Failed(format!(
                        "HTTP {status} to `{location}`, which is not followed"
                    ))
                } else if status == 401 {
                    return Attempt::Unauthorized;
                } else {
                    Probe::Failed(format!("HTTP {status}"))
                }
            }
            Err(es::Error::Transport(error)) => Probe::Failed(format!(
                "transport error: {}",
                crate::http::error_chain(error.inner())
            )),
            Err(es::Error::TimedOut) => Probe::Failed(format!(
                "no answer within {:?} (read_timeout)",
                settings.read_timeout
            )),
            Err(es::Error::MaxRedirectLimitReached(_)) => {
                Probe::Failed("redirected (HTTP 301 or 307), which is not followed".to_owned())
            }
            Err(error) => Probe::Failed(error.to_string()),
        });
    }
    answered(Probe::Failed(
        "the server closed the stream without an answer".to_owned(),
    ))
}
