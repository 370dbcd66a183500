//! How an HTTP-speaking source reaches its server: through which proxy (`proxy`), and with
//! which trust roots and client certificate (`tls`). One [`Network`] per source applies the
//! same rules to its three HTTP stacks: reqwest (REST, GraphQL, OAuth2 token requests), hyper
//! (SSE) and tungstenite (WebSocket).
//!
//! # Proxies
//! Without `proxy`, the environment decides, as curl reads it: `HTTPS_PROXY` for `https://` and
//! `wss://` URLs, `HTTP_PROXY` for `http://` and `ws://` URLs, `ALL_PROXY` for both when the
//! other is unset (each also lowercase, the uppercase name first), and `NO_PROXY` lists the hosts
//! reached directly (domains with their subdomains, IP addresses, CIDR ranges, `*`).
//! `proxy = "none"` ignores the environment; `proxy = "http://[user:password@]host:port"` sends
//! every request of the source through that proxy, `NO_PROXY` notwithstanding. Only HTTP
//! proxies (`http://`) are supported: HTTPS and WebSocket connections go through a `CONNECT`
//! tunnel (RFC 9110 §9.3.6), so TLS stays end to end; plain HTTP requests are forwarded. Proxy
//! credentials go in a `Proxy-Authorization: Basic` header and, like every secret, never in a
//! log.
//!
//! # TLS
//! `tls = { ca_file, cert_file, key_file }`, PEM files read when the source starts (and again
//! when a reload restarts it: a changed file changes the source's fingerprint):
//! - `ca_file`: certificates trusted beside the built-in roots (a private CA);
//! - `cert_file` and `key_file`: the client certificate (chain) and its private key (PKCS#8,
//!   PKCS#1 or SEC1), presented to servers that ask for one (mutual TLS).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use hyper_util::client::proxy::matcher::Matcher;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// `[sources.<name>].tls`: trust roots and the client certificate, as PEM files.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificates trusted beside the built-in roots (a private CA). Default: none.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The client certificate chain, PEM, leaf first; needs `key_file`. Default: none.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1). Default: none.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// The files this config names, for a reload's fingerprint.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        [&self.ca_file, &self.cert_file, &self.key_file]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }
}

/// A problem with `proxy` or `tls`: the key it concerns, what is wrong and the fix.
#[derive(Debug)]
pub struct NetworkError {
    /// `proxy`, `tls.ca_file`, `tls.cert_file` or `tls.key_file`.
    pub field: &'static str,
    /// What is wrong (no secret in it).
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl NetworkError {
    fn new(field: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        NetworkError {
            field,
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// The proxies that apply to a source, as configured or read from the environment.
#[derive(Clone)]
struct ProxyRules {
    /// Which URLs go through a proxy (hyper-util's curl-compatible rules, `NO_PROXY` included).
    matcher: Arc<Matcher>,
    /// The proxy for `http://` and `ws://` URLs, credentials included.
    http: Option<SecretString>,
    /// The proxy for `https://` and `wss://` URLs, credentials included.
    https: Option<SecretString>,
}

/// The validated `proxy` and `tls` settings of one source (cheap to clone).
#[derive(Clone, Default)]
pub struct Network {
    proxy: Option<ProxyRules>,
    tls: Option<Arc<ClientTls>>,
}

/// The loaded `tls` files.
struct ClientTls {
    /// For reqwest: the extra roots and the identity, as it takes them.
    roots_pem: Vec<reqwest::Certificate>,
    identity_pem: Option<reqwest::Identity>,
    /// For hyper and tungstenite.
    rustls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("proxy", &self.proxy.as_ref().map(|_| "…"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Environment variables a proxy is read from, in the order curl reads them.
const PROXY_VARIABLES: [(&str, &str); 4] = [
    ("ALL_PROXY", "all_proxy"),
    ("HTTP_PROXY", "http_proxy"),
    ("HTTPS_PROXY", "https_proxy"),
    ("NO_PROXY", "no_proxy"),
];

impl Network {
    /// Validates a source's `proxy` (the value with its secrets resolved; `None` when absent)
    /// and `tls`, reading the proxy environment variables when `proxy` is absent and the PEM
    /// files `tls` names.
    ///
    /// # Errors
    /// Every problem found: a proxy URL that is not `http://host:port` (the variable named when
    /// it came from the environment), a file that cannot be read or holds no PEM object of the
    /// expected kind, a certificate without its key.
    pub fn new(
        proxy: Option<&SecretString>,
        tls: Option<&TlsConfig>,
    ) -> Result<Network, Vec<NetworkError>> {
        let mut errors = Vec::new();
        let proxy = match proxy {
            Some(value) if value.expose_secret() == "none" => None,
            Some(value) => match check_proxy_url(value.expose_secret()) {
                Ok(()) => Some(ProxyRules::fixed(value.clone())),
                Err(problem) => {
                    errors.push(NetworkError::new(
                        "proxy",
                        problem,
                        "set `proxy` to \"http://host:port\" (credentials as \"http://user:${env:PROXY_PASSWORD}@host:port\"), or \"none\"",
                    ));
                    None
                }
            },
            None => {
                let read = |(upper, lower): (&'static str, &'static str)| {
                    std::env::var(upper)
                        .or_else(|_| std::env::var(lower))
                        .ok()
                        .filter(|value| !value.is_empty())
                        .map(|value| (upper, value))
                };
                let [all, http, https, no] = PROXY_VARIABLES.map(read);
                match ProxyRules::from_environment(all, http, https, no) {
                    Ok(rules) => rules,
                    Err((variable, problem)) => {
                        errors.push(NetworkError::new(
                            "proxy",
                            format!("the environment variable {variable}: {problem}"),
                            format!("set {variable} to \"http://host:port\", or set the source's `proxy` (\"none\" ignores the environment)"),
                        ));
                        None
                    }
                }
            }
        };
        let tls = match tls {
            Some(config) if config != &TlsConfig::default() => match ClientTls::load(config) {
                Ok(tls) => Some(Arc::new(tls)),
                Err(mut problems) => {
                    errors.append(&mut problems);
                    None
                }
            },
            _ => None,
        };
        if errors.is_empty() {
            Ok(Network { proxy, tls })
        } else {
            Err(errors)
        }
    }

    /// The proxy URL (credentials included) that a request to `url` goes through, or `None`
    /// for a direct connection. `ws://` and `wss://` URLs follow the `http://` and `https://`
    /// rules.
    pub fn proxy_for(&self, url: &url::Url) -> Option<&SecretString> {
        self.proxy.as_ref()?.for_url(url)
    }

    /// `builder` with this network's proxy rules and TLS settings, set explicitly: reqwest's
    /// own reading of the environment is turned off, and the rules read by [`Network::new`]
    /// take its place.
    pub fn apply(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        let mut builder = builder.no_proxy();
        if let Some(rules) = self.proxy.clone() {
            builder = builder.proxy(reqwest::Proxy::custom(move |url| {
                rules
                    .for_url(url)
                    .map(|proxy| proxy.expose_secret().to_owned())
            }));
        }
        if let Some(tls) = &self.tls {
            builder = builder.tls_certs_merge(tls.roots_pem.iter().cloned());
            if let Some(identity) = &tls.identity_pem {
                builder = builder.identity(identity.clone());
            }
        }
        builder
    }

    /// The rustls client settings for hyper and tungstenite: the built-in roots (webpki-roots)
    /// with `ca_file`'s certificates, and the client certificate if any. No ALPN is set here;
    /// each stack sets its own.
    pub fn rustls(&self) -> Arc<rustls::ClientConfig> {
        match &self.tls {
            Some(tls) => Arc::clone(&tls.rustls),
            None => default_rustls(),
        }
    }

    /// A TCP connection to `url`'s host and port, through this network's proxy (an HTTP
    /// `CONNECT` tunnel) when one applies: what a WebSocket handshake runs over.
    ///
    /// # Errors
    /// The proxy or the server cannot be reached, or the proxy refused the tunnel (its status,
    /// e.g. 407 when its credentials are wrong).
    pub async fn connect(&self, url: &url::Url) -> Result<tokio::net::TcpStream, String> {
        // An IPv6 address without its brackets, as the resolver takes it.
        let host = match url.host().ok_or("the URL has no host")? {
            url::Host::Ipv6(address) => address.to_string(),
            other => other.to_string(),
        };
        let port = url
            .port_or_known_default()
            .ok_or("the URL has no port and its scheme has no default port")?;
        let Some(proxy) = self.proxy_for(url) else {
            return tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| format!("cannot connect: {e}"));
        };
        let intercept = intercept(proxy).ok_or("the proxy URL is not valid")?;
        let mut tunnel = hyper_util::client::legacy::connect::proxy::Tunnel::new(
            intercept.uri().clone(),
            hyper_util::client::legacy::connect::HttpConnector::new(),
        );
        if let Some(auth) = intercept.basic_auth() {
            tunnel = tunnel.with_auth(auth.clone());
        }
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let target: http::Uri = format!("http://{host}:{port}/")
            .parse()
            .map_err(|e| format!("the URL's host cannot be tunnelled to: {e}"))?;
        use tower_service::Service;
        let stream = tunnel.call(target).await.map_err(|e| {
            format!(
                "the proxy did not open a tunnel: {}",
                super::error_chain(&e)
            )
        })?;
        Ok(stream.into_inner())
    }

    /// The `Proxy-Authorization` header a plain `http://` request to `url` carries when it is
    /// forwarded by a proxy with credentials (an `https://` request sends them in its `CONNECT`
    /// instead). Marked sensitive.
    pub fn forward_authorization(&self, url: &url::Url) -> Option<http::HeaderValue> {
        if url.scheme() != "http" {
            return None;
        }
        intercept(self.proxy_for(url)?)?.basic_auth().cloned()
    }

    /// The proxy URL for the SSE transport, which routes every request of the source through
    /// one proxy (or none): the one that applies to the source's `url`.
    pub fn proxy_for_stream(&self, url: &url::Url) -> Option<String> {
        self.proxy_for(url)
            .map(|proxy| proxy.expose_secret().to_owned())
    }
}

/// The proxy's address and credentials (a `Basic` header value), as hyper-util parses them.
fn intercept(proxy: &SecretString) -> Option<hyper_util::client::proxy::matcher::Intercept> {
    Matcher::builder()
        .all(proxy.expose_secret().to_owned())
        .build()
        .intercept(&http::Uri::from_static("http://proxy.invalid/"))
}

/// The rustls settings of a source without `tls`: built once for the process.
fn default_rustls() -> Arc<rustls::ClientConfig> {
    static DEFAULT: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    Arc::clone(
        DEFAULT.get_or_init(|| Arc::new(client_builder(root_store(&[])).with_no_client_auth())),
    )
}

/// webpki-roots' trust anchors with `extra` added.
fn root_store(extra: &[CertificateDer<'static>]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    roots.add_parsable_certificates(extra.iter().cloned());
    roots
}

fn client_builder(
    roots: rustls::RootCertStore,
) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
    crate::tls::install_crypto_provider();
    rustls::ClientConfig::builder().with_root_certificates(roots)
}

impl ProxyRules {
    /// One proxy for every URL.
    fn fixed(proxy: SecretString) -> ProxyRules {
        ProxyRules {
            matcher: Arc::new(
                Matcher::builder()
                    .all(proxy.expose_secret().to_owned())
                    .build(),
            ),
            http: Some(proxy.clone()),
            https: Some(proxy),
        }
    }

    /// The rules the environment sets (each argument: the variable's name and value), or
    /// `None` when it names no proxy.
    fn from_environment(
        all: Option<(&'static str, String)>,
        http: Option<(&'static str, String)>,
        https: Option<(&'static str, String)>,
        no: Option<(&'static str, String)>,
    ) -> Result<Option<ProxyRules>, (&'static str, String)> {
        for (variable, value) in [&all, &http, &https].into_iter().flatten() {
            check_proxy_url(value).map_err(|problem| (*variable, problem))?;
        }
        let pick = |own: &Option<(&str, String)>| {
            own.as_ref()
                .or(all.as_ref())
                .map(|(_, value)| SecretString::from(value.clone()))
        };
        let (http_proxy, https_proxy) = (pick(&http), pick(&https));
        if http_proxy.is_none() && https_proxy.is_none() {
            return Ok(None);
        }
        let mut builder = Matcher::builder();
        if let Some(proxy) = &http_proxy {
            builder = builder.http(proxy.expose_secret().to_owned());
        }
        if let Some(proxy) = &https_proxy {
            builder = builder.https(proxy.expose_secret().to_owned());
        }
        if let Some((_, no)) = no {
            builder = builder.no(no);
        }
        Ok(Some(ProxyRules {
            matcher: Arc::new(builder.build()),
            http: http_proxy,
            https: https_proxy,
        }))
    }

    fn for_url(&self, url: &url::Url) -> Option<&SecretString> {
        let (scheme, proxy) = match url.scheme() {
            "https" | "wss" => ("https", self.https.as_ref()?),
            "http" | "ws" => ("http", self.http.as_ref()?),
            _ => return None,
        };
        let host = url.host_str()?;
        let uri: http::Uri = format!("{scheme}://{host}/").parse().ok()?;
        self.matcher.intercept(&uri).map(|_| proxy)
    }
}

/// Whether `value` is a proxy URL Tributary can use: `http://host:port`, optionally with
/// credentials, and no path.
fn check_proxy_url(value: &str) -> Result<(), String> {
    let parsed = url::Url::parse(value).map_err(|e| format!("not a URL ({e})"))?;
    if parsed.scheme() != "http" {
        return Err(format!(
            "the proxy's scheme is `{}`; only HTTP proxies (`http://`) are supported",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the proxy URL has no host".to_owned());
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
        return Err("a proxy URL has no path or query".to_owned());
    }
    Ok(())
}

impl ClientTls {
    fn load(config: &TlsConfig) -> Result<ClientTls, Vec<NetworkError>> {
        let mut errors = Vec::new();
        let mut roots = Vec::new();
        let mut roots_pem = Vec::new();
        if let Some(path) = &config.ca_file {
            match read_certificates(path) {
                Ok((pem, certificates)) => {
                    roots = certificates;
                    match reqwest::Certificate::from_pem_bundle(&pem) {
                        Ok(bundle) => roots_pem = bundle,
                        Err(e) => errors.push(NetworkError::new(
                            "tls.ca_file",
                            format!("`{}`: {e}", path.display()),
                            "point `tls.ca_file` at PEM certificates",
                        )),
                    }
                }
                Err(problem) => errors.push(NetworkError::new(
                    "tls.ca_file",
                    problem,
                    "point `tls.ca_file` at a readable file of PEM certificates (-----BEGIN CERTIFICATE-----)",
                )),
            }
        }
        let identity = match (&config.cert_file, &config.key_file) {
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                errors.push(NetworkError::new(
                    if config.cert_file.is_some() {
                        "tls.key_file"
                    } else {
                        "tls.cert_file"
                    },
                    "a client certificate needs both `cert_file` and `key_file`",
                    "set both `tls.cert_file` and `tls.key_file`, or neither",
                ));
                None
            }
            (Some(cert_path), Some(key_path)) => {
                let chain = read_certificates(cert_path).map_err(|problem| {
                    NetworkError::new(
                        "tls.cert_file",
                        problem,
                        "point `tls.cert_file` at the client certificate, PEM, leaf first",
                    )
                });
                let key = read_key(key_path).map_err(|problem| {
                    NetworkError::new(
                        "tls.key_file",
                        problem,
                        "point `tls.key_file` at the client certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1), unencrypted",
                    )
                });
                match (chain, key) {
                    (Ok((cert_pem, chain)), Ok((key_pem, key))) => {
                        let mut pem = cert_pem;
                        pem.push(b'\n');
                        pem.extend_from_slice(&key_pem);
                        match reqwest::Identity::from_pem(&pem) {
                            Ok(identity) => Some((identity, chain, key)),
                            Err(e) => {
                                errors.push(NetworkError::new(
                                    "tls.cert_file",
                                    format!("the certificate and key cannot be used together: {e}"),
                                    "check that `tls.key_file` is the key of `tls.cert_file`",
                                ));
                                None
                            }
                        }
                    }
                    (chain, key) => {
                        errors.extend(chain.err());
                        errors.extend(key.err());
                        None
                    }
                }
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let builder = client_builder(root_store(&roots));
        let (rustls, identity_pem) = match identity {
            None => (builder.with_no_client_auth(), None),
            Some((identity, chain, key)) => match builder.with_client_auth_cert(chain, key) {
                Ok(config) => (config, Some(identity)),
                Err(e) => {
                    return Err(vec![NetworkError::new(
                        "tls.key_file",
                        format!("the certificate and key cannot be used together: {e}"),
                        "check that `tls.key_file` is the key of `tls.cert_file`",
                    )])
                }
            },
        };
        Ok(ClientTls {
            roots_pem,
            identity_pem,
            rustls: Arc::new(rustls),
        })
    }
}

/// The file's bytes and the certificates in it (at least one).
fn read_certificates(path: &Path) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("`{}` cannot be read: {e}", path.display()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{}` is not valid PEM: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("`{}` holds no PEM certificate", path.display()));
    }
    Ok((pem, certificates))
}

/// The file's bytes and the private key in it.
fn read_key(path: &Path) -> Result<(Vec<u8>, PrivateKeyDer<'static>), String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("`{}` cannot be read: {e}", path.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("`{}` holds no PEM private key", path.display())
        }
        other => format!("`{}` is not a usable private key: {other}", path.display()),
    })?;
    Ok((pem, key))
}

#[cfg(test)]
#[path = "network_tests.rs"]
mod tests;
