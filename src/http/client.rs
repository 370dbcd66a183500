//! The request loop every polled source uses: authentication, the host's budget, timeouts,
//! and retries of transient failures only, with capped exponential backoff and full jitter.
//!
//! One call of [`HttpPolicy::send`] is one logical request: it returns the first answer that is
//! not worth retrying (a success, a 304, or a permanent error), or the last failure once
//! `max_attempts` are spent. A 401 under OAuth2 forgets the token, fetches a new one and tries
//! once more before it counts as permanent. [`HttpPolicy::open`] is the same request loop for a
//! long-lived response (an `http_stream` source): the body is handed over unread, to be read
//! chunk by chunk under a per-read timeout instead of a whole-request one.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use secrecy::ExposeSecret;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::{
    auth::{Auth, TokenError},
    classify_status,
    host_limits::{HostLimiter, HostLimits},
    parse_retry_after, rate_limit_status, StatusClass,
};
use crate::{backoff::Backoff, metrics::SourceMetrics};

/// `[sources.<name>.retry]`: how often and how patiently a transient failure is retried.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per request, the first included. Default 5.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Ceiling of the first retry delay. Default `500ms`.
    #[serde(default = "default_initial_delay", with = "humantime_serde")]
    pub initial_delay: Duration,
    /// Largest delay between attempts. Default `30s`.
    #[serde(default = "default_max_delay", with = "humantime_serde")]
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: default_max_attempts(),
            initial_delay: default_initial_delay(),
            max_delay: default_max_delay(),
        }
    }
}

fn default_max_attempts() -> u32 {
    5
}
fn default_initial_delay() -> Duration {
    Duration::from_millis(500)
}
fn default_max_delay() -> Duration {
    Duration::from_secs(30)
}

/// One request to send: built again for every attempt.
#[derive(Clone, Debug)]
pub struct HttpRequest {
    /// `GET` or `POST`.
    pub method: Method,
    /// The full URL, secrets included (never logged; see `redacted`).
    pub url: url::Url,
    /// Extra headers (conditional request headers, `Content-Type`).
    pub headers: HeaderMap,
    /// The body, if any.
    pub body: Option<Bytes>,
}

/// An answer worth reading: a 2xx or a 304.
#[derive(Debug)]
pub struct HttpResponse {
    /// The URL that answered (after same-origin redirects), secrets included.
    pub url: url::Url,
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body (empty for a 304).
    pub body: Bytes,
}

/// A 2xx answer whose body is still to be read (see [`HttpPolicy::open`]).
#[derive(Debug)]
pub struct HttpStream {
    /// The URL that answered (after same-origin redirects), secrets included.
    pub url: url::Url,
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The response, its body unread: read it with [`reqwest::Response::chunk`].
    pub body: reqwest::Response,
}

/// Why a request gave no answer worth reading.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A status that retrying will not change (400, 401 after a token refresh, 403, 404, …,
    /// or a redirect to another origin, which is not followed).
    #[error("{url} answered HTTP {status}, which is not retried")]
    Permanent {
        /// The URL, secrets stripped.
        url: String,
        /// The status.
        status: u16,
    },
    /// A redirect to another origin (or the eleventh in a row), which is not followed so that
    /// credentials stay on the configured origin.
    #[error("{url} answered HTTP {status} to {location}, which is not followed; point the source's `url` at the final address")]
    Redirected {
        /// The URL, secrets stripped.
        url: String,
        /// The status.
        status: u16,
        /// Where it pointed, secrets stripped.
        location: String,
    },
    /// Every attempt failed transiently.
    #[error("{url} failed {attempts} times; the last failure: {last}")]
    Exhausted {
        /// The URL, secrets stripped.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure (a status or a transport error).
        last: String,
    },
    /// The response body passed the source's `max_body_bytes` (after decompression).
    #[error("{url} answered with a body larger than {max_body_bytes} bytes (after decompression); raise the source's `max_body_bytes` or ask for smaller pages")]
    TooLarge {
        /// The URL, secrets stripped.
        url: String,
        /// The configured cap, bytes.
        max_body_bytes: usize,
    },
    /// The OAuth2 token endpoint refused the credentials.
    #[error("{0}")]
    Token(String),
    /// Shutdown came first.
    #[error("shutdown")]
    Shutdown,
}

/// One source's HTTP policy.
pub struct HttpPolicy {
    client: reqwest::Client,
    max_body_bytes: usize,
    auth: Auth,
    retry: RetryConfig,
    limits: Arc<HostLimits>,
    metrics: SourceMetrics,
    redactor: crate::secret::UrlRedactor,
}

/// Timeouts of one source's requests.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// The whole request, body included.
    pub total: Duration,
    /// The largest response body, in bytes, after decompression: a gzip bomb is refused as it
    /// expands, never buffered whole.
    pub max_body_bytes: usize,
}

/// Timeouts of a streaming source's requests (see [`HttpPolicy::streaming`]).
#[derive(Clone, Copy, Debug)]
pub struct StreamTimeouts {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// The longest silence on one read of a response (headers or body).
    pub read: Duration,
    /// The largest body [`HttpPolicy::send`] reads whole, in bytes, after decompression.
    pub max_body_bytes: usize,
}

impl HttpPolicy {
    /// The policy of one source.
    ///
    /// # Errors
    /// The TLS backend cannot be set up.
    pub fn new(
        auth: Auth,
        retry: RetryConfig,
        timeouts: Timeouts,
        limits: Arc<HostLimits>,
        metrics: SourceMetrics,
        redactor: crate::secret::UrlRedactor,
        network: &super::Network,
    ) -> Result<Self, String> {
        let client = Self::client_builder(timeouts.connect, network).timeout(timeouts.total);
        Self::with_client(
            client,
            auth,
            retry,
            timeouts.max_body_bytes,
            limits,
            metrics,
            redactor,
        )
    }

    /// The policy of a source that reads long-lived responses ([`HttpPolicy::open`]): no
    /// whole-request timeout (a stream may stay open for days), only `connect_timeout` and, on
    /// each read of the body, `read_timeout` (seconds of silence, heartbeats included, before a
    /// read fails). `max_body_bytes` caps what [`HttpPolicy::send`] reads whole.
    ///
    /// Responses are asked for uncompressed (`Accept-Encoding: identity`): a server that
    /// compresses a long-lived response holds each line, heartbeats included, in its
    /// compressor until a block fills (Express's `compression` middleware in front of
    /// PouchDB's changes feed does), so the stream would stall and look dead.
    ///
    /// # Errors
    /// The TLS backend cannot be set up.
    pub fn streaming(
        auth: Auth,
        retry: RetryConfig,
        timeouts: StreamTimeouts,
        limits: Arc<HostLimits>,
        metrics: SourceMetrics,
        redactor: crate::secret::UrlRedactor,
        network: &super::Network,
    ) -> Result<Self, String> {
        let client = Self::client_builder(timeouts.connect, network)
            .read_timeout(timeouts.read)
            .no_gzip();
        Self::with_client(
            client,
            auth,
            retry,
            timeouts.max_body_bytes,
            limits,
            metrics,
            redactor,
        )
    }

    /// A client builder with the policy's redirects, connect timeout and user agent, and the
    /// source's proxy and TLS settings.
    fn client_builder(
        connect_timeout: Duration,
        network: &super::Network,
    ) -> reqwest::ClientBuilder {
        // Redirects are followed on the same origin only, so that credentials (which reqwest
        // strips from cross-host redirects only when they are `Authorization`) stay there.
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            let same_origin = attempt
                .previous()
                .first()
                .is_some_and(|first| first.origin() == attempt.url().origin());
            if !same_origin || attempt.previous().len() > 10 {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        crate::tls::install_crypto_provider();
        network
            .apply(reqwest::Client::builder())
            .redirect(redirects)
            .connect_timeout(connect_timeout)
            .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
    }

    fn with_client(
        client: reqwest::ClientBuilder,
        auth: Auth,
        retry: RetryConfig,
        max_body_bytes: usize,
        limits: Arc<HostLimits>,
        metrics: SourceMetrics,
        redactor: crate::secret::UrlRedactor,
    ) -> Result<Self, String> {
        let client = client
            .build()
            .map_err(|e| format!("the HTTP client could not be built: {e}"))?;
        Ok(HttpPolicy {
            client,
            max_body_bytes,
            auth,
            retry,
            limits,
            metrics,
            redactor,
        })
    }

    /// `url` with credentials, secret query values and the values of the config's secret
    /// references (a token in the path) replaced, for logs and headers.
    pub fn redact(&self, url: &url::Url) -> String {
        self.redactor.redact(url.as_str())
    }

    /// Sends `request` under the policy (see the module docs).
    ///
    /// # Errors
    /// [`HttpError`]: a permanent status, every attempt failed, the token endpoint refused, or
    /// shutdown.
    pub async fn send(
        &self,
        request: &HttpRequest,
        shutdown: &CancellationToken,
    ) -> Result<HttpResponse, HttpError> {
        self.exchange(request, shutdown, false)
            .await
            .map(|(response, _)| response)
    }

    /// Sends `request` under the policy, as [`HttpPolicy::send`] does, but hands over a 2xx
    /// answer with its body unread, for the caller to read as it arrives (a continuous feed).
    /// A 304 is not expected of a stream and comes back as a 2xx would, its body empty.
    ///
    /// # Errors
    /// As [`HttpPolicy::send`].
    pub async fn open(
        &self,
        request: &HttpRequest,
        shutdown: &CancellationToken,
    ) -> Result<HttpStream, HttpError> {
        let (response, body) = self.exchange(request, shutdown, true).await?;
        let body = body.ok_or_else(|| HttpError::Permanent {
            url: self.redact(&request.url),
            status: response.status.as_u16(),
        })?;
        Ok(HttpStream {
            url: response.url,
            status: response.status,
            headers: response.headers,
            body,
        })
    }

    /// The request loop of [`HttpPolicy::send`] and [`HttpPolicy::open`]: with `stream`, a
    /// successful answer's body is left unread and returned beside it.
    async fn exchange(
        &self,
        request: &HttpRequest,
        shutdown: &CancellationToken,
        stream: bool,
    ) -> Result<(HttpResponse, Option<reqwest::Response>), HttpError> {
        let limiter = self.limits.for_url(&request.url);
        let mut backoff = Backoff::new(self.retry.initial_delay, self.retry.max_delay);
        let mut refreshed = false;
        let mut attempts = 0;
        // A conditional request is not metered up front: as on GitHub, a 304 does not spend
        // the budget. Any other answer spends its token afterwards (the next request waits).
        let conditional = request.headers.contains_key(http::header::IF_NONE_MATCH)
            || request
                .headers
                .contains_key(http::header::IF_MODIFIED_SINCE);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Err(HttpError::Shutdown),
                _ = self.metrics.wait_for_budget(async {
                    if conditional {
                        limiter.wait_pause().await
                    } else {
                        limiter.acquire().await
                    }
                }) => {}
            };
            attempts += 1;
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return Err(HttpError::Shutdown),
                outcome = self.attempt(request, stream) => outcome,
            };
            let failure = match outcome {
                Ok((response, body)) => {
                    if conditional && response.status != StatusCode::NOT_MODIFIED {
                        tokio::select! {
                            _ = shutdown.cancelled() => return Err(HttpError::Shutdown),
                            _ = self.metrics.wait_for_budget(limiter.spend()) => {}
                        };
                    }
                    match self.judge(request, response, &limiter) {
                        Judged::Answer(response) => return Ok((response, body)),
                        Judged::Unauthorized if !refreshed && self.refresh_token().await => {
                            refreshed = true;
                            attempts -= 1;
                            continue;
                        }
                        Judged::Unauthorized => {
                            return Err(HttpError::Permanent {
                                url: self.redact(&request.url),
                                status: 401,
                            })
                        }
                        Judged::Fail(error) => return Err(error),
                        Judged::Retry(failure) => failure,
                    }
                }
                Err(Failure::Transport(error)) => {
                    self.metrics.http_request(None);
                    error
                }
                Err(Failure::Token(TokenError::Unsigned(reason))) => {
                    return Err(HttpError::Token(reason))
                }
                Err(Failure::Token(TokenError::Refused(reason))) => {
                    return Err(HttpError::Token(reason))
                }
                Err(Failure::Token(error @ TokenError::Unreachable(_))) => error.to_string(),
                Err(Failure::TooLarge(error)) => return Err(error),
            };
            if attempts >= self.retry.max_attempts {
                return Err(HttpError::Exhausted {
                    url: self.redact(&request.url),
                    attempts,
                    last: failure,
                });
            }
            let delay = backoff.next_delay(None, &mut rand::rng());
            tracing::warn!(source = %self.metrics.name(), url = %self.redact(&request.url), error = %failure, attempt = attempts, delay_ms = delay.as_millis() as u64, "request failed; retrying");
            self.metrics.retries.inc();
            tokio::select! {
                _ = shutdown.cancelled() => return Err(HttpError::Shutdown),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// What an answer means: counted, its rate budget and `Retry-After` applied to the host.
    fn judge(
        &self,
        request: &HttpRequest,
        response: HttpResponse,
        limiter: &HostLimiter,
    ) -> Judged {
        self.metrics.http_request(Some(response.status.as_u16()));
        let spent = rate_limit_status(&response.headers, SystemTime::now())
            .and_then(|status| status.wait());
        if let Some(wait) = spent {
            tracing::info!(source = %self.metrics.name(), url = %self.redact(&request.url), wait_ms = wait.as_millis() as u64, "the rate budget is spent; waiting for its reset");
            limiter.pause_for(wait.min(super::MAX_RETRY_AFTER));
        }
        let status = response.status.as_u16();
        match classify_status(status) {
            // A redirect that was not followed (another origin, or too many).
            StatusClass::Success
                if response.status.is_redirection()
                    && response.status != StatusCode::NOT_MODIFIED =>
            {
                let location = response
                    .headers
                    .get(http::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| response.url.join(v).ok())
                    .map_or_else(|| "an unknown place".to_owned(), |to| self.redact(&to));
                Judged::Fail(HttpError::Redirected {
                    url: self.redact(&request.url),
                    status,
                    location,
                })
            }
            StatusClass::Success => Judged::Answer(response),
            StatusClass::Permanent if status == 401 => Judged::Unauthorized,
            // GitHub answers a spent primary rate limit with 403 and `X-RateLimit-Remaining:
            // 0`: the pause above waits for the reset, then the request is tried again.
            StatusClass::Permanent if status == 403 && spent.is_some() => {
                Judged::Retry(format!("HTTP {status}"))
            }
            StatusClass::Permanent => Judged::Fail(HttpError::Permanent {
                url: self.redact(&request.url),
                status,
            }),
            StatusClass::Transient => {
                if let Some(delay) = response
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()))
                {
                    limiter.pause_for(delay);
                }
                Judged::Retry(format!("HTTP {status}"))
            }
        }
    }

    /// Forgets an OAuth2 token after a 401; true when a new token may cure it.
    async fn refresh_token(&self) -> bool {
        let refresh = self.auth.forget_token().await;
        if refresh {
            tracing::info!(source = %self.metrics.name(), "HTTP 401: fetching a new OAuth2 token and trying again");
        }
        refresh
    }

    /// One attempt; with `stream`, a successful answer's body is returned unread.
    async fn attempt(
        &self,
        request: &HttpRequest,
        stream: bool,
    ) -> Result<(HttpResponse, Option<reqwest::Response>), Failure> {
        let mut url = request.url.clone();
        if let Some((name, value)) = self.auth.query() {
            super::set_query_param(&mut url, name, value.expose_secret());
        }
        let mut builder = self
            .client
            .request(request.method.clone(), url)
            .headers(request.headers.clone());
        if let Some((name, value)) = self.auth.header().await.map_err(Failure::Token)? {
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let sent = match &self.auth {
            // Signed last, over the request as it goes (method, URL, headers, body).
            Auth::AwsSigV4(signer) => {
                let mut built = builder
                    .build()
                    .map_err(|e| Failure::Transport(super::describe_reqwest_error(&e)))?;
                signer
                    .sign(&mut built)
                    .map_err(|e| Failure::Token(TokenError::Unsigned(e)))?;
                self.client.execute(built).await
            }
            _ => builder.send().await,
        };
        let response = sent.map_err(|e| Failure::Transport(super::describe_reqwest_error(&e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let final_url = response.url().clone();
        let success = classify_status(status.as_u16()) == StatusClass::Success;
        let (body, unread) = match (success, stream) {
            (true, true) => (Bytes::new(), Some(response)),
            (true, false) => (self.read_body(response).await?, None),
            (false, _) => (Bytes::new(), None),
        };
        Ok((
            HttpResponse {
                url: final_url,
                status,
                headers,
                body,
            },
            unread,
        ))
    }
}

impl HttpPolicy {
    /// Reads a response body (decompressed) chunk by chunk, refusing it once it passes
    /// `max_body_bytes`.
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Bytes, Failure> {
        let url = self.redact(response.url());
        let declared = response.content_length().unwrap_or(0);
        let mut body = bytes::BytesMut::with_capacity(
            usize::try_from(declared).map_or(0, |n| n.min(self.max_body_bytes)),
        );
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| Failure::Transport(super::describe_reqwest_error(&e)))?
        {
            if body.len() + chunk.len() > self.max_body_bytes {
                return Err(Failure::TooLarge(HttpError::TooLarge {
                    url,
                    max_body_bytes: self.max_body_bytes,
                }));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}

/// What [`HttpPolicy::judge`] made of an answer.
enum Judged {
    /// A 2xx or 304: the answer.
    Answer(HttpResponse),
    /// A 401: permanent, unless a new OAuth2 token cures it.
    Unauthorized,
    /// Not worth retrying.
    Fail(HttpError),
    /// Worth another attempt; the failure, for the log.
    Retry(String),
}

enum Failure {
    Transport(String),
    Token(TokenError),
    /// The body passed `max_body_bytes`: retrying would read it again.
    TooLarge(HttpError),
}
