//! Certificates made at test time and small HTTP, SSE and WebSocket servers on 127.0.0.1 that
//! speak plain TCP or TLS, the latter demanding a client certificate from a private CA.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use futures::SinkExt as _;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
};
use tokio_rustls::rustls::{
    self,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
};

/// A certificate authority: its certificate and key.
pub struct Authority {
    cert: Certificate,
    key: KeyPair,
}

impl Authority {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Authority { cert, key }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf certificate and its key (both PEM) for `names`, for servers or clients.
    pub fn issue(&self, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "tributary test");
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// PEM files in a directory: the CA, a client certificate it signed, and one a rogue CA signed.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub authority: Authority,
    pub ca_file: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

impl Pki {
    pub fn new() -> Self {
        tributary::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let authority = Authority::new("tributary test CA");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let ca_file = write("ca.pem", &authority.pem());
        let (cert, key) =
            authority.issue(&["tributary-client"], ExtendedKeyUsagePurpose::ClientAuth);
        let client_cert = write("client.pem", &cert);
        let client_key = write("client.key", &key);
        let rogue = Authority::new("someone else's CA");
        let (cert, key) = rogue.issue(&["tributary-client"], ExtendedKeyUsagePurpose::ClientAuth);
        let rogue_cert = write("rogue.pem", &cert);
        let rogue_key = write("rogue.key", &key);
        Pki {
            dir,
            authority,
            ca_file,
            client_cert,
            client_key,
            rogue_cert,
            rogue_key,
        }
    }

    /// A TLS server config for 127.0.0.1 that demands a client certificate signed by the CA.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let (cert, key) = self.authority.issue(
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.authority.pem().as_bytes()).unwrap())
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .unwrap();
        let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        Arc::new(
            rustls::ServerConfig::builder()
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)
                .unwrap(),
        )
    }

    /// The TOML inline table of a source's `tls` with the good client certificate.
    pub fn tls_table(&self) -> String {
        tls_table(&self.ca_file, &self.client_cert, &self.client_key)
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

pub fn tls_table(ca: &Path, cert: &Path, key: &Path) -> String {
    format!(
        r#"{{ ca_file = "{}", cert_file = "{}", key_file = "{}" }}"#,
        ca.display(),
        cert.display(),
        key.display()
    )
}

/// What a server sends on each connection.
#[derive(Clone, Copy, Debug)]
pub enum Serve {
    /// An SSE stream of `count` events (`id: n`, data `{"n":n}`), then held open.
    Sse(u64),
    /// One JSON page of `count` items `{"id":n}`, then the connection closes.
    Rest(u64),
    /// A WebSocket of `count` text frames `{"n":n}`, then held open.
    WebSocket(u64),
}

/// A server on 127.0.0.1: plain TCP, or TLS with a client certificate demanded.
pub struct Server {
    /// `http://` / `https://` / `ws://` / `wss://` with the port, no path.
    pub base: String,
    pub port: u16,
    /// Connections served, and TLS handshakes refused.
    pub served: Arc<AtomicUsize>,
    pub refused: Arc<AtomicUsize>,
}

impl Server {
    pub async fn start(serve: Serve, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let scheme = match (serve, tls.is_some()) {
            (Serve::WebSocket(_), false) => "ws",
            (Serve::WebSocket(_), true) => "wss",
            (_, false) => "http",
            (_, true) => "https",
        };
        let (served, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (served_count, refused_count) = (Arc::clone(&served), Arc::clone(&refused));
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (acceptor, served, refused) = (
                    acceptor.clone(),
                    Arc::clone(&served_count),
                    Arc::clone(&refused_count),
                );
                tokio::spawn(async move {
                    match acceptor {
                        None => respond(stream, serve, &served).await,
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(stream) => respond(stream, serve, &served).await,
                            Err(_) => {
                                refused.fetch_add(1, Ordering::SeqCst);
                            }
                        },
                    }
                });
            }
        });
        Server {
            base: format!("{scheme}://127.0.0.1:{port}"),
            port,
            served,
            refused,
        }
    }
}

async fn respond<S>(mut stream: S, serve: Serve, served: &AtomicUsize)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Serve::WebSocket(count) = serve {
        let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        served.fetch_add(1, Ordering::SeqCst);
        for n in 1..=count {
            let frame = tokio_tungstenite::tungstenite::Message::text(format!(r#"{{"n":{n}}}"#));
            if socket.send(frame).await.is_err() {
                return;
            }
        }
        // Held open; the daemon's stop closes it.
        while let Some(Ok(_)) = futures::StreamExt::next(&mut socket).await {}
        return;
    }
    // The request head, up to its blank line.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    served.fetch_add(1, Ordering::SeqCst);
    match serve {
        Serve::Sse(count) => {
            let mut body = String::from(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n",
            );
            for n in 1..=count {
                body.push_str(&format!("id: {n}\ndata: {{\"n\":{n}}}\n\n"));
            }
            if stream.write_all(body.as_bytes()).await.is_err() {
                return;
            }
            let _ = stream.flush().await;
            // Held open until the client goes.
            let mut rest = [0u8; 1024];
            while matches!(stream.read(&mut rest).await, Ok(n) if n > 0) {}
        }
        Serve::Rest(count) => {
            let items: Vec<String> = (1..=count).map(|n| format!(r#"{{"id":{n}}}"#)).collect();
            let body = format!("[{}]", items.join(","));
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        Serve::WebSocket(_) => unreachable!("answered above"),
    }
}

/// tinyproxy (Debian's `tinyproxy`) on a free port of 127.0.0.1 with Basic credentials,
/// logging each request it forwards or tunnels.
pub struct Proxy {
    pub port: u16,
    pub user: &'static str,
    pub password: &'static str,
    log: PathBuf,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Proxy {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let (user, password) = ("tributary", "proxy-secret-5b1e");
        let log = dir.path().join("tinyproxy.log");
        let config = dir.path().join("tinyproxy.conf");
        // No `ConnectPort` line: CONNECT to every port (the test servers' ports are random).
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 600\nAllow 127.0.0.1\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 200\nBasicAuth {user} {password}\nDisableViaHeader Yes\n",
                log.display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start tinyproxy (Debian package `tinyproxy`; .ci/run installs it)");
        super::wait_until_async("tinyproxy to listen", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        Proxy {
            port,
            user,
            password,
            log,
            child,
            _dir: dir,
        }
    }

    /// `http://user:password@127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!(
            "http://{}:{}@127.0.0.1:{}",
            self.user, self.password, self.port
        )
    }

    /// The requests tinyproxy logged (`CONNECT 127.0.0.1:5000 HTTP/1.1`, `GET http://… HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split_once("): ").map(|(_, r)| r.to_owned()))
            .filter(|request| request.ends_with("HTTP/1.1") || request.ends_with("HTTP/1.0"))
            .collect()
    }

    /// Whether a request to `port` of 127.0.0.1 went through.
    pub fn saw(&self, port: u16) -> bool {
        let target = format!("127.0.0.1:{port}");
        self.requests()
            .iter()
            .any(|request| request.contains(&target))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
