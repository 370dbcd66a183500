//! The SSE request and the HTTP transport it goes through.
//!
//! The request is a `GET` of the source's `url` with `Accept: text/event-stream`,
//! `Cache-Control: no-cache` and, when there is one, the `Last-Event-ID` (WHATWG HTML §9.2.4),
//! plus the source's credentials and headers; no redirect is followed (the caller sees the 3xx).
//!
//! The transport (hyper with rustls, through launchdarkly-sdk-transport, with connect and read
//! timeouts and the proxy) depends only on the network policy: it is built once per distinct
//! policy and shared by every connection of every source that has it, with its connection pool
//! and TLS session cache. It speaks HTTP/1.1 only, so that each stream has a connection of its
//! own. What is the source's own (headers, credentials, `Last-Event-ID`,
//! `max_event_bytes`) stays with each request.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue};
use launchdarkly_sdk_transport::{HttpTransport, HyperTransport, ResponseFuture};
use secrecy::ExposeSecret;

use super::config::SseSettings;

/// Sends a request through a transport whose type is not named here.
pub(super) trait Requester: Send + Sync {
    /// The response to `request`, as [`HttpTransport::request`] gives it.
    fn send(&self, request: http::Request<Option<Bytes>>) -> ResponseFuture;
}

impl<T: HttpTransport> Requester for T {
    fn send(&self, request: http::Request<Option<Bytes>>) -> ResponseFuture {
        self.request(request)
    }
}

/// A shared transport of SSE sources.
pub(super) type Transport = Arc<dyn Requester>;

/// What a transport depends on: the timeouts, the TLS settings (by identity: one `Arc` per
/// source `tls` table, one for every source without) and the proxy URL.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Policy {
    connect_timeout: Duration,
    read_timeout: Duration,
    tls: usize,
    proxy: Option<String>,
}

/// The transports built so far, with the TLS settings each keys by address (kept alive here so
/// that the address is not reused while the entry exists).
type Cache = HashMap<Policy, (Transport, Arc<rustls::ClientConfig>)>;

/// At most this many policies are kept; a hot reload that changes `tls` on and on starts the
/// cache over rather than growing it.
const MAX_POLICIES: usize = 64;

/// The shared transport for `settings`' network policy toward `url`.
///
/// # Errors
/// The transport cannot be built (an unusable proxy URL).
pub(super) fn transport(settings: &SseSettings, url: &url::Url) -> Result<Transport, String> {
    static CACHE: Mutex<Option<Cache>> = Mutex::new(None);
    let tls = settings.network.rustls();
    let policy = Policy {
        connect_timeout: settings.connect_timeout,
        read_timeout: settings.read_timeout,
        tls: Arc::as_ptr(&tls) as usize,
        proxy: settings.network.proxy_for_stream(url),
    };
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some((transport, _)) = cache.get(&policy) {
        return Ok(Arc::clone(transport));
    }
    let transport = build(&policy, &tls)?;
    if cache.len() >= MAX_POLICIES {
        cache.clear();
    }
    cache.insert(policy, (Arc::clone(&transport), tls));
    Ok(transport)
}

/// A new transport for `policy`: TLS from the source's rustls settings, and the proxy set
/// explicitly (the transport would otherwise read the proxy variables by rules of its own).
///
/// HTTP/1.1 only: each stream has a connection of its own. Over a shared HTTP/2 connection, a
/// source that stops reading while its channel is full (backpressure) would hold flow-control
/// window that other sources' streams on the same connection need.
fn build(policy: &Policy, tls: &rustls::ClientConfig) -> Result<Transport, String> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .enable_http1()
        .build();
    let transport = HyperTransport::builder()
        .connect_timeout(policy.connect_timeout)
        .read_timeout(policy.read_timeout);
    match &policy.proxy {
        Some(proxy) => transport.proxy_url(proxy.clone()),
        None => transport.disable_proxy(),
    }
    .build_with_connector(https)
    .map(|transport| Arc::new(transport) as Transport)
    .map_err(|e| format!("cannot build the HTTPS client: {e}"))
}

/// The request for one connection: the source's `url` (with the `auth` query parameter, its
/// user info taken out into `Authorization: Basic`), the SSE headers, `last_event_id` unless
/// empty, the proxy's credentials for a forwarded plain-HTTP request, the source's `headers`,
/// and `auth`'s header. A header of `headers` or `auth` replaces one set before it of the same
/// name (`Authorization` from user info, say).
///
/// # Errors
/// The URL or a header value is not valid (the message names which, without its value).
pub(super) fn request(
    settings: &SseSettings,
    last_event_id: Option<&str>,
    auth: Option<(HeaderName, HeaderValue)>,
) -> Result<(url::Url, http::Request<Option<Bytes>>), String> {
    let mut url: url::Url = settings
        .url
        .expose_secret()
        .parse()
        .map_err(|e| format!("invalid URL: {e}"))?;
    if let Some((name, value)) = settings.auth.query() {
        crate::http::set_query_param(&mut url, name, value.expose_secret());
    }
    let user_info = crate::http::take_user_info(&mut url);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // A forwarded plain-HTTP request names the proxy's credentials itself (the transport adds
    // them to `CONNECT` only).
    if let Some(value) = settings.network.forward_authorization(&url) {
        headers.insert(header::PROXY_AUTHORIZATION, value);
    }
    if let Some((user, password)) = user_info {
        let value = crate::http::basic_authorization(&user, &password)
            .map_err(|_| "the URL's user info is not valid header text".to_owned())?;
        headers.insert(header::AUTHORIZATION, value);
    }
    for (name, value) in &settings.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name `{name}`"))?;
        let mut value = HeaderValue::from_str(value.expose_secret())
            .map_err(|_| format!("invalid value for header `{name}`"))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    if let Some((name, mut value)) = auth {
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    if let Some(id) = last_event_id.filter(|id| !id.is_empty()) {
        let value = HeaderValue::from_str(id)
            .map_err(|_| "the last event id is not valid header text".to_owned())?;
        headers.append(HeaderName::from_static("last-event-id"), value);
    }
    let uri: http::Uri = url
        .as_str()
        .parse()
        .map_err(|e| format!("invalid URL: {e}"))?;
    let mut request = http::Request::new(None);
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok((url, request))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings of a source configured by `extra` (JSON, merged over a base).
    fn settings(extra: serde_json::Value) -> Arc<SseSettings> {
        let mut config = serde_json::json!({ "topic": "t", "proxy": "none" });
        for (key, value) in extra.as_object().unwrap() {
            config[key] = value.clone();
        }
        let config: super::super::SseConfig = serde_json::from_value(config).unwrap();
        let (_, source) = config.build("test").unwrap();
        source.settings()
    }

    fn transport_of(settings: &SseSettings) -> Transport {
        let url: url::Url = settings.url.expose_secret().parse().unwrap();
        transport(settings, &url).unwrap()
    }

    #[test]
    fn one_transport_per_network_policy() {
        use serde_json::json;
        let a = settings(json!({ "url": "http://127.0.0.1:1/a" }));
        let b = settings(json!({
            "url": "http://127.0.0.1:2/b", "max_event_bytes": 10, "headers": { "x-a": "1" },
        }));
        let slow = settings(json!({ "url": "http://127.0.0.1:1/a", "read_timeout": "7s" }));
        let proxied =
            settings(json!({ "url": "http://127.0.0.1:1/a", "proxy": "http://127.0.0.1:3" }));
        let shared = transport_of(&a);
        assert!(Arc::ptr_eq(&shared, &transport_of(&a)), "each connection");
        assert!(
            Arc::ptr_eq(&shared, &transport_of(&b)),
            "headers and caps are per request"
        );
        assert!(
            !Arc::ptr_eq(&shared, &transport_of(&slow)),
            "a read timeout is the policy's"
        );
        assert!(
            !Arc::ptr_eq(&shared, &transport_of(&proxied)),
            "a proxy is the policy's"
        );
    }

    #[test]
    fn the_request_carries_the_sse_headers_and_the_source_credentials() {
        let s = settings(serde_json::json!({
            "url": "http://user:p%40ss@127.0.0.1:1/a?x=1", "headers": { "x-api-key": "k" },
        }));
        let (url, sent) = request(&s, Some("42"), None).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:1/a?x=1");
        assert_eq!(sent.uri(), "http://127.0.0.1:1/a?x=1");
        assert_eq!(sent.method(), http::Method::GET);
        let h = sent.headers();
        assert_eq!(h["accept"], "text/event-stream");
        assert_eq!(h["cache-control"], "no-cache");
        assert_eq!(h["last-event-id"], "42");
        assert_eq!(h["x-api-key"], "k");
        // `user:p@ss` in Base64.
        assert_eq!(h["authorization"], "Basic dXNlcjpwQHNz");
        // No id, or an empty one: no header.
        for id in [None, Some("")] {
            let (_, sent) = request(&s, id, None).unwrap();
            assert!(!sent.headers().contains_key("last-event-id"));
        }
        // `auth`'s header replaces the user info's.
        let bearer = (header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        let (_, sent) = request(&s, None, Some(bearer)).unwrap();
        assert_eq!(sent.headers().get_all("authorization").iter().count(), 1);
        assert_eq!(sent.headers()["authorization"], "Bearer t");
    }
}
