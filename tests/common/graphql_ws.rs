//! The `graphql-ws` test server (tests/servers/graphql-ws/): a node process on 127.0.0.1
//! speaking graphql-transport-ws (or subscriptions-transport-ws), whose subscription
//! `events(after: Int)` yields a numbered sequence; it reports each subscription's `after` and
//! each pong on stdout.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use super::free_port;

/// The `graphql-ws` test server, a node process on 127.0.0.1.
pub struct GraphqlWsServer {
    child: Child,
    /// `ws://127.0.0.1:<port>/graphql`.
    pub url: String,
    /// The `after` of each subscription, in order (`null` for none).
    subscribes: Arc<Mutex<Vec<String>>>,
    /// Pongs the clients sent to the server's pings.
    pub pongs: Arc<std::sync::atomic::AtomicUsize>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Drop for GraphqlWsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The installed `server.mjs`; fails the test, naming the install command, when it is missing.
pub fn server_script() -> PathBuf {
    let tools = std::env::var("TRIBUTARY_TOOLS_DIR").map_or_else(
        |_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tributary"),
        PathBuf::from,
    );
    let script = tools.join("graphql-ws/server.mjs");
    assert!(
        tools.join("graphql-ws/node_modules/graphql-ws").is_dir() && script.is_file(),
        "the graphql-ws test server is not installed in {}: run `bash tests/servers/graphql-ws/install.sh`",
        tools.display()
    );
    script
}

impl GraphqlWsServer {
    /// Starts the server with `args` (see server.mjs) and waits until it listens.
    pub async fn start(args: &[&str]) -> Self {
        Self::start_on(free_port(), args).await
    }

    /// Starts the server on `port`.
    pub async fn start_on(port: u16, args: &[&str]) -> Self {
        let script = server_script();
        let mut child = Command::new("node")
            .arg(&script)
            .args(["--port", &port.to_string()])
            .args(args)
            .current_dir(script.parent().unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node (Node.js 20 or newer) for the graphql-ws test server");
        let stdout = child.stdout.take().unwrap();
        let subscribes: Arc<Mutex<Vec<String>>> = Arc::default();
        let (listening_tx, listening_rx) = tokio::sync::oneshot::channel();
        let seen = Arc::clone(&subscribes);
        let pongs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let pongs_seen = Arc::clone(&pongs);
        std::thread::spawn(move || {
            let mut listening = Some(listening_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(after) = line.strip_prefix("subscribe after=") {
                    seen.lock().unwrap().push(after.to_owned());
                } else if line == "pong" {
                    pongs_seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                } else if line.starts_with("listening ") {
                    if let Some(tx) = listening.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), listening_rx)
            .await
            .expect("the graphql-ws server listens within 30 s")
            .expect("the graphql-ws server printed `listening`");
        GraphqlWsServer {
            child,
            url: format!("ws://127.0.0.1:{port}/graphql"),
            subscribes,
            pongs,
            port,
        }
    }

    /// Ends the server at once (SIGKILL): its connections drop without a close frame.
    pub fn kill(mut self) -> u16 {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.port
    }

    /// The `after` of each subscription so far.
    pub fn subscribes(&self) -> Vec<String> {
        self.subscribes.lock().unwrap().clone()
    }
}
