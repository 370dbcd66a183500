//! Request authentication shared by the polled sources: an API key (header or query
//! parameter), a bearer token, HTTP basic (RFC 7617), or OAuth2 client credentials
//! (RFC 6749 §4.4, through the `oauth2` crate) with the token cached until it expires.
//!
//! Secrets are [`SecretString`]s resolved from `${env:…}`/`${file:…}` at config time; they go
//! on the wire and nowhere else (not in logs, errors, metrics or lineage headers).

use std::{sync::Arc, time::Duration};

use oauth2::{
    basic::BasicClient, AuthType, ClientId, ClientSecret, HttpRequest, HttpResponse, Scope,
    TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::{sync::Mutex, time::Instant};

use super::network::Network;
use crate::sources::common::Checks;

/// `[sources.<name>.auth]`, chosen by `type`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// An API key sent in a header (`header = "X-Api-Key"`) or a query parameter
    /// (`query = "api_key"`).
    ApiKey {
        /// Header name to send the key in.
        header: Option<String>,
        /// Query parameter to send the key in (its value is redacted in `tributary.url`).
        query: Option<String>,
        /// The key, usually `${env:NAME}`.
        value: String,
    },
    /// `Authorization: Bearer <token>` (RFC 6750).
    Bearer {
        /// The token, usually `${env:NAME}`.
        token: String,
    },
    /// `Authorization: Basic …` (RFC 7617).
    Basic {
        /// The user name.
        username: String,
        /// The password, usually `${env:NAME}`.
        password: String,
    },
    /// OAuth2 client credentials grant (RFC 6749 §4.4).
    Oauth2ClientCredentials {
        /// The token endpoint.
        token_url: String,
        /// The client id.
        client_id: String,
        /// The client secret, usually `${env:NAME}`.
        client_secret: String,
        /// Scopes to ask for.
        #[serde(default)]
        scopes: Vec<String>,
        /// The `audience` parameter some providers (Auth0, Okta) require.
        audience: Option<String>,
        /// How the client authenticates to the token endpoint: `basic` (HTTP basic, the
        /// default) or `request_body` (`client_id`/`client_secret` form fields).
        #[serde(default)]
        client_auth: ClientAuth,
        /// A token is renewed this long before its `expires_in` runs out. Default `30s`.
        #[serde(default = "default_expiry_skew", with = "humantime_serde")]
        expiry_skew: Duration,
    },
    /// OAuth2 refresh-token grant (RFC 6749 §6): an access token from the configured refresh
    /// token, or from the rotated one stored with the source's position (see
    /// [`super::refresh_token`]).
    Oauth2RefreshToken {
        /// The token endpoint.
        token_url: String,
        /// The client id.
        client_id: String,
        /// The client secret, usually `${env:NAME}`; unset for a public client.
        #[serde(default)]
        client_secret: Option<String>,
        /// The refresh token the first run starts from, usually `${env:NAME}`.
        refresh_token: String,
        /// Scopes to ask for (default: those of the original grant).
        #[serde(default)]
        scopes: Vec<String>,
        /// How the client authenticates to the token endpoint: `basic` (default) or
        /// `request_body`.
        #[serde(default)]
        client_auth: ClientAuth,
        /// A token is renewed this long before its `expires_in` runs out. Default `30s`.
        #[serde(default = "default_expiry_skew", with = "humantime_serde")]
        expiry_skew: Duration,
    },
    /// AWS Signature Version 4 on every request (polled sources only), with credentials from
    /// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN` or a profile of the
    /// shared credentials file (see [`super::sigv4`]).
    AwsSigv4 {
        /// The signing name of the service, e.g. `execute-api` (API Gateway), `es`, `s3`.
        service: String,
        /// The region, e.g. `eu-west-1`.
        region: String,
        /// A profile of the shared credentials file. Default: the environment's keys, else
        /// `AWS_PROFILE`, else `default`.
        #[serde(default)]
        profile: Option<String>,
    },
}

/// How an OAuth2 client sends its credentials to the token endpoint (RFC 6749 §2.3.1).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP basic authentication.
    #[default]
    Basic,
    /// Form fields in the request body.
    RequestBody,
}

fn default_expiry_skew() -> Duration {
    Duration::from_secs(30)
}

/// Resolved authentication of one source.
#[derive(Clone, Debug, Default)]
pub enum Auth {
    /// No authentication.
    #[default]
    None,
    /// A header carrying a secret (`X-Api-Key: …`, `Authorization: Bearer …`).
    Header(http::HeaderName, SecretString),
    /// A query parameter carrying a secret.
    Query(String, SecretString),
    /// HTTP basic.
    Basic(String, SecretString),
    /// OAuth2 client credentials, with its token cache.
    OAuth2(Arc<OAuth2Tokens>),
    /// AWS SigV4: each request is signed as a whole (see [`Auth::header`]: no single header).
    AwsSigV4(Arc<super::sigv4::AwsSigner>),
}

impl AuthConfig {
    /// Checks the config and resolves its secrets; problems go to `checks`.
    pub(crate) fn resolve(&self, checks: &mut Checks, network: &Network) -> Option<Auth> {
        match self {
            AuthConfig::ApiKey {
                header,
                query,
                value,
            } => {
                let value = checks.secret("auth.value", value)?;
                match (header, query) {
                    (Some(header), None) => match http::HeaderName::from_bytes(header.as_bytes()) {
                        Ok(name) => Some(Auth::Header(name, value)),
                        Err(_) => {
                            checks.error(
                                "auth.header",
                                "not a valid HTTP header name",
                                "use letters, digits and `-`, e.g. `X-Api-Key`",
                            );
                            None
                        }
                    },
                    (None, Some(query)) if !query.is_empty() => {
                        Some(Auth::Query(query.clone(), value))
                    }
                    _ => {
                        checks.error(
                            "auth",
                            "an API key needs exactly one of `header` and `query`",
                            "set `header = \"X-Api-Key\"` or `query = \"api_key\"`",
                        );
                        None
                    }
                }
            }
            AuthConfig::Bearer { token } => {
                let token = checks.secret("auth.token", token)?;
                let value = SecretString::from(format!("Bearer {}", token.expose_secret()));
                Some(Auth::Header(http::header::AUTHORIZATION, value))
            }
            AuthConfig::Basic { username, password } => {
                let password = checks.secret("auth.password", password)?;
                Some(Auth::Basic(username.clone(), password))
            }
            AuthConfig::AwsSigv4 {
                service,
                region,
                profile,
            } => {
                for (field, value) in [("auth.service", service), ("auth.region", region)] {
                    if value.trim().is_empty() {
                        checks.error(
                            field,
                            "is empty",
                            "name the service's signing name (`execute-api`, `es`, `s3`, …) and its region (`eu-west-1`)",
                        );
                    }
                }
                match super::sigv4::AwsSigner::new(service, region, profile.as_deref()) {
                    Ok(signer) => Some(Auth::AwsSigV4(Arc::new(signer))),
                    Err(problem) => {
                        checks.error(
                            "auth",
                            problem,
                            "export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials), or set `auth.profile` to a profile of ~/.aws/credentials",
                        );
                        None
                    }
                }
            }
            AuthConfig::Oauth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scopes,
                audience,
                client_auth,
                expiry_skew,
            } => {
                // Both checked before giving up, so every problem is reported at once.
                let token_url = checks.url(
                    "auth.token_url",
                    token_url,
                    &["http", "https"],
                    "https://auth.example.com/oauth/token",
                );
                let client_secret = checks.secret("auth.client_secret", client_secret);
                let token_url = TokenUrl::new(token_url?.expose_secret().to_owned()).ok()?;
                let client_secret = client_secret?;
                Some(Auth::OAuth2(Arc::new(OAuth2Tokens {
                    token_url,
                    client_id: client_id.clone(),
                    client_secret: Some(client_secret),
                    grant: Grant::ClientCredentials,
                    scopes: scopes.clone(),
                    audience: audience.clone(),
                    client_auth: *client_auth,
                    expiry_skew: *expiry_skew,
                    cached: Mutex::new(None),
                    network: network.clone(),
                    client: std::sync::OnceLock::new(),
                })))
            }
            AuthConfig::Oauth2RefreshToken {
                token_url,
                client_id,
                client_secret,
                refresh_token,
                scopes,
                client_auth,
                expiry_skew,
            } => {
                let token_url = checks.url(
                    "auth.token_url",
                    token_url,
                    &["http", "https"],
                    "https://auth.example.com/oauth/token",
                );
                let client_secret = client_secret
                    .as_ref()
                    .map(|secret| checks.secret("auth.client_secret", secret));
                let refresh_token = checks.secret("auth.refresh_token", refresh_token);
                let token_url = TokenUrl::new(token_url?.expose_secret().to_owned()).ok()?;
                let client_secret = match client_secret {
                    Some(resolved) => Some(resolved?),
                    None => None,
                };
                Some(Auth::OAuth2(Arc::new(OAuth2Tokens {
                    token_url,
                    client_id: client_id.clone(),
                    client_secret,
                    grant: Grant::RefreshToken(super::refresh_token::RefreshTokens::new(
                        refresh_token?,
                    )),
                    scopes: scopes.clone(),
                    audience: None,
                    client_auth: *client_auth,
                    expiry_skew: *expiry_skew,
                    cached: Mutex::new(None),
                    network: network.clone(),
                    client: std::sync::OnceLock::new(),
                })))
            }
        }
    }

    /// The query parameter that carries a secret, if any (to redact it from URLs).
    pub fn secret_query_parameter(&self) -> Option<&str> {
        match self {
            AuthConfig::ApiKey { query, .. } => query.as_deref(),
            _ => None,
        }
    }
}

/// The value of `Authorization: Basic …` for `user` and `password` (RFC 7617), marked
/// sensitive so that `http` debug output hides it.
///
/// # Errors
/// The credentials make no valid header text (a control character in them).
pub fn basic_authorization(
    user: &str,
    password: &str,
) -> Result<http::HeaderValue, http::header::InvalidHeaderValue> {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = http::HeaderValue::from_str(&format!("Basic {encoded}"))?;
    value.set_sensitive(true);
    Ok(value)
}

impl Auth {
    /// The header that authenticates a request, if this kind sends one: the API key or bearer
    /// header, HTTP basic, or the current OAuth2 token (fetched when needed). The value is
    /// marked sensitive, so `http` debug output hides it.
    ///
    /// # Errors
    /// [`TokenError`] when an OAuth2 token cannot be had.
    pub async fn header(
        &self,
    ) -> Result<Option<(http::HeaderName, http::HeaderValue)>, TokenError> {
        let (name, text) = match self {
            Auth::None | Auth::Query(..) | Auth::AwsSigV4(_) => return Ok(None),
            Auth::Header(name, value) => (name.clone(), value.expose_secret().to_owned()),
            Auth::Basic(user, password) => {
                let value = basic_authorization(user, password.expose_secret()).map_err(|_| {
                    TokenError::Refused("the credential is not valid header text".into())
                })?;
                return Ok(Some((http::header::AUTHORIZATION, value)));
            }
            Auth::OAuth2(tokens) => {
                let token = tokens.token().await?;
                (
                    http::header::AUTHORIZATION,
                    format!("Bearer {}", token.expose_secret()),
                )
            }
        };
        let mut value = http::HeaderValue::from_str(&text)
            .map_err(|_| TokenError::Refused("the credential is not valid header text".into()))?;
        value.set_sensitive(true);
        Ok(Some((name, value)))
    }

    /// The token cache of an OAuth2 refresh-token grant, if this is one.
    pub fn refresh_token_grant(&self) -> Option<Arc<OAuth2Tokens>> {
        match self {
            Auth::OAuth2(tokens) if tokens.refresh_tokens().is_some() => Some(Arc::clone(tokens)),
            _ => None,
        }
    }

    /// The query parameter that carries an API key, if this kind sends one.
    pub fn query(&self) -> Option<(&str, &SecretString)> {
        match self {
            Auth::Query(name, value) => Some((name, value)),
            _ => None,
        }
    }

    /// After a 401: forgets an OAuth2 token so the next request fetches a new one. True when
    /// that may cure the 401 (OAuth2 only).
    pub async fn forget_token(&self) -> bool {
        match self {
            Auth::OAuth2(tokens) => {
                tokens.invalidate().await;
                true
            }
            _ => false,
        }
    }
}

impl OAuth2Tokens {
    /// The refresh tokens of a refresh-token grant, which rotate and are kept in the position
    /// store; `None` for client credentials.
    pub fn refresh_tokens(&self) -> Option<&super::refresh_token::RefreshTokens> {
        match &self.grant {
            Grant::RefreshToken(tokens) => Some(tokens),
            Grant::ClientCredentials => None,
        }
    }
}

/// Why a token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token endpoint refused the credentials (a 4xx with an OAuth2 error): permanent.
    #[error("the OAuth2 token endpoint refused the client credentials: {0}")]
    Refused(String),
    /// The token endpoint could not be reached or answered a 5xx: transient.
    #[error("the OAuth2 token endpoint could not be reached: {0}")]
    Unreachable(String),
    /// An AWS SigV4 signature could not be made (the credentials file is gone): permanent.
    #[error("the request could not be signed (AWS SigV4): {0}")]
    Unsigned(String),
}

/// An OAuth2 client-credentials token cache: one token at a time, fetched on first use and
/// again when it is within `expiry_skew` of expiring or a 401 says it no longer works.
#[derive(Debug)]
pub struct OAuth2Tokens {
    token_url: TokenUrl,
    client_id: String,
    /// Unset for a public client (refresh-token grant only).
    client_secret: Option<SecretString>,
    grant: Grant,
    scopes: Vec<String>,
    audience: Option<String>,
    client_auth: ClientAuth,
    expiry_skew: Duration,
    cached: Mutex<Option<CachedToken>>,
    /// The source's proxy and TLS settings, which the token requests follow too.
    network: Network,
    /// The client for the token endpoint, built on the first fetch.
    client: std::sync::OnceLock<reqwest::Client>,
}

/// Which grant an [`OAuth2Tokens`] asks for its tokens with.
#[derive(Debug)]
enum Grant {
    /// Client credentials (RFC 6749 §4.4).
    ClientCredentials,
    /// A refresh token (RFC 6749 §6), rotated ones kept in the position store.
    RefreshToken(super::refresh_token::RefreshTokens),
}

#[derive(Debug)]
struct CachedToken {
    secret: SecretString,
    /// `None` when the endpoint gave no `expires_in`: kept until a 401.
    renew_at: Option<Instant>,
}

impl OAuth2Tokens {
    /// The current access token, fetching a new one when there is none or it is about to
    /// expire. Concurrent callers share one fetch.
    ///
    /// # Errors
    /// [`TokenError`] when the token endpoint refuses or cannot be reached.
    pub async fn token(&self) -> Result<SecretString, TokenError> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref() {
            if token.renew_at.is_none_or(|at| Instant::now() < at) {
                return Ok(token.secret.clone());
            }
        }
        let fresh = self.fetch().await?;
        let secret = fresh.secret.clone();
        *cached = Some(fresh);
        Ok(secret)
    }

    /// The token endpoint's own client (10 s to connect, 30 s a request, no redirects: the
    /// client secret goes to the configured token URL and nowhere else), built once.
    fn http_client(&self) -> Result<&reqwest::Client, TokenError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        crate::tls::install_crypto_provider();
        let client = self
            .network
            .apply(reqwest::Client::builder())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                TokenError::Unreachable(format!("the HTTP client could not be built: {e}"))
            })?;
        Ok(self.client.get_or_init(|| client))
    }

    /// Forgets the cached token (after a 401), so the next [`Self::token`] fetches one.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn fetch(&self) -> Result<CachedToken, TokenError> {
        let client = self.http_client()?;
        let mut oauth = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_token_uri(self.token_url.clone());
        if let Some(secret) = &self.client_secret {
            oauth = oauth.set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()));
        }
        if self.client_auth == ClientAuth::RequestBody {
            oauth = oauth.set_auth_type(AuthType::RequestBody);
        }
        let refused = |error: oauth2::RequestTokenError<
            TokenTransportError,
            oauth2::basic::BasicErrorResponse,
        >| {
            use oauth2::RequestTokenError as E;
            match error {
                E::ServerResponse(response) => TokenError::Refused(response.error().to_string()),
                E::Request(e) => TokenError::Unreachable(e.to_string()),
                E::Parse(e, _) => {
                    TokenError::Refused(format!("the token response is not valid: {e}"))
                }
                E::Other(e) => TokenError::Unreachable(e),
            }
        };
        let scopes = self.scopes.iter().cloned().map(Scope::new);
        let response = match &self.grant {
            Grant::ClientCredentials => {
                let mut request = oauth.exchange_client_credentials().add_scopes(scopes);
                if let Some(audience) = &self.audience {
                    request = request.add_extra_param("audience", audience.clone());
                }
                request
                    .request_async(&TokenClient(client))
                    .await
                    .map_err(refused)?
            }
            Grant::RefreshToken(tokens) => {
                let current =
                    oauth2::RefreshToken::new(tokens.current().expose_secret().to_owned());
                let response = oauth
                    .exchange_refresh_token(&current)
                    .add_scopes(scopes)
                    .request_async(&TokenClient(client))
                    .await
                    .map_err(refused)?;
                // A rotated refresh token is stored before the access token is used: the old
                // one may already be void.
                if let Some(fresh) = response.refresh_token() {
                    if let Err(error) = tokens
                        .rotate(SecretString::from(fresh.secret().clone()))
                        .await
                    {
                        tracing::error!(%error, "OAuth2: a restart will need a new refresh token unless the store is fixed before the next rotation");
                    }
                }
                response
            }
        };
        // Renewed `expiry_skew` early, but a short-lived token is used for at least half its
        // life, so that it is not fetched again on every request.
        let renew_at = response.expires_in().map(|lifetime| {
            Instant::now() + lifetime.saturating_sub(self.expiry_skew).max(lifetime / 2)
        });
        Ok(CachedToken {
            secret: SecretString::from(response.access_token().secret().clone()),
            renew_at,
        })
    }
}

/// The source's own `reqwest` client as the `oauth2` crate's HTTP client.
struct TokenClient<'a>(&'a reqwest::Client);

impl<'c> oauth2::AsyncHttpClient<'c> for TokenClient<'_> {
    type Error = TokenTransportError;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<HttpResponse, TokenTransportError>> + Send + 'c,
        >,
    >;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(send_token_request(self.0, request))
    }
}

/// The token request over the source's own `reqwest` client. A 5xx is an error here, so that
/// it is retried as a transient failure rather than read as a refusal.
async fn send_token_request(
    client: &reqwest::Client,
    request: HttpRequest,
) -> Result<HttpResponse, TokenTransportError> {
    let (parts, body) = request.into_parts();
    let response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| TokenTransportError(crate::http::describe_reqwest_error(&e)))?;
    if response.status().is_server_error() {
        return Err(TokenTransportError(format!(
            "HTTP {}",
            response.status().as_u16()
        )));
    }
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .map_err(|e| TokenTransportError(crate::http::describe_reqwest_error(&e)))?;
    let mut built = http::Response::new(body.to_vec());
    *built.status_mut() = status;
    *built.headers_mut() = headers;
    Ok(built)
}

/// A transport failure talking to the token endpoint.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenTransportError(String);
