//! Shutdown signals: the first SIGTERM or SIGINT cancels the daemon's root token (a clean
//! shutdown); a second one, while that shutdown runs, exits the process at once with code 1.
//! Records not acknowledged by then are not checkpointed, so they are read again after the
//! restart.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT, and exits the process on the second.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let mut signals = Signals::listen();
        signals.next().await;
        tracing::info!("shutdown signal received; a second one stops the daemon at once");
        token.cancel();
        signals.next().await;
        tracing::warn!("second shutdown signal: exiting now; records not yet acknowledged will be read again after the restart");
        std::process::exit(1);
    });
}

/// SIGTERM and SIGINT, listened to from the start so that none is missed between two waits.
struct Signals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |kind: SignalKind, name: &str| {
                signal(kind)
                    .inspect_err(|error| tracing::warn!(%error, "cannot listen for {name}"))
                    .ok()
            };
            Signals {
                terminate: listen(SignalKind::terminate(), "SIGTERM"),
                interrupt: listen(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Waits for the next SIGTERM or SIGINT (forever if neither can be listened to).
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = recv(&mut self.terminate) => {}
                _ = recv(&mut self.interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
