//! Assembles and runs the pipeline: sources → bounded channels → pumps → producer → delivery
//! reports → AckTrackers → committer → checkpoint store, plus the HTTP server.
//!
//! Shutdown order (on the root token): sources stop reading and drop their channel senders;
//! pumps drain what is in the channels into the producer and exit; the producer is flushed.
//! Draining and flushing share one deadline, `kafka.flush_timeout` (pumps still blocked on a
//! full producer queue at the deadline give up their records); then the committer writes the final acknowledged positions; the
//! HTTP server stops last. Records still unacknowledged after the flush are not checkpointed,
//! so they are read again after a restart (at-least-once).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    checkpoint::{CheckpointStore, Committer, FileStore, KafkaStore},
    config::Config,
    health::Health,
    metrics::Metrics,
    server::{self, ServerState},
    sinks::kafka::KafkaProducer,
    source_runner::SourceRunner,
    supervise::Supervisor,
};

/// How often broker reachability is probed for `/readyz`.
const BROKER_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// librdkafka refused the producer configuration.
    #[error("kafka: cannot create the producer: {0}; check the `kafka.producer` properties")]
    Producer(#[from] rdkafka::error::KafkaError),
    /// The checkpoint store cannot be opened.
    #[error(transparent)]
    Checkpoint(#[from] crate::error::CheckpointError),
    /// The cluster's consumer group or control topic cannot be set up.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The HTTP server's address cannot be bound.
    #[error("server: cannot listen on `{0}`: {1}; choose a free address in `server.listen`")]
    Listen(SocketAddr, std::io::Error),
}

/// A started daemon.
pub struct RunningDaemon {
    shutdown: CancellationToken,
    reloader: Arc<crate::reload::Reloader>,
    metrics_address: SocketAddr,
    webhook_address: SocketAddr,
    metrics: Arc<Metrics>,
    health: Health,
    liveness: crate::liveness::Liveness,
    finished: tokio::task::JoinHandle<ShutdownReport>,
}

/// What shutdown left behind.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownReport {
    /// Records still unacknowledged after the flush timeout (read again after restart).
    pub abandoned_in_flight: i32,
    /// Set when a fatal producer error, or the death of a pump or of the committer (see
    /// [`crate::supervise`]), stopped the daemon (the process exits 1, so that the service
    /// manager restarts it from the stored positions).
    pub fatal: bool,
}

impl RunningDaemon {
    /// The bound address of `/metrics`, `/healthz` and `/readyz`.
    pub fn metrics_address(&self) -> SocketAddr {
        self.metrics_address
    }

    /// The bound address of the webhook routes (`server.webhook_listen`, else the metrics
    /// address).
    pub fn webhook_address(&self) -> SocketAddr {
        self.webhook_address
    }

    /// Every metric family.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Source states.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Whether the pumps and the committer make progress (systemd's watchdog asks).
    pub fn liveness(&self) -> &crate::liveness::Liveness {
        &self.liveness
    }

    /// Applies new configs to this daemon (SIGHUP, `--watch-config`); see [`crate::reload`].
    pub fn reloader(&self) -> Arc<crate::reload::Reloader> {
        Arc::clone(&self.reloader)
    }

    /// The root token: cancelling it starts the shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Starts the shutdown and waits for it to finish.
    pub async fn shutdown(self) -> ShutdownReport {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the root token is cancelled (by a signal or [`Self::shutdown_token`]) and
    /// the shutdown has finished.
    pub async fn wait(self) -> ShutdownReport {
        self.finished.await.unwrap_or(ShutdownReport {
            abandoned_in_flight: -1,
            fatal: true,
        })
    }
}

/// Starts every part of the daemon and returns once they run.
///
/// # Errors
/// The producer cannot be created, the checkpoint store cannot be opened, or the server's
/// address cannot be bound.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<RunningDaemon, StartError> {
    crate::tls::install_crypto_provider();
    let metrics = Metrics::new();
    let health = Health::default();
    let producer = KafkaProducer::new(&config.kafka)?;
    let store: Arc<dyn CheckpointStore> = match &config.cluster {
        None => {
            let dir = config.checkpoint.dir.clone();
            let store = tokio::task::spawn_blocking(move || FileStore::open_exclusive(dir))
                .await
                .expect("opening the store does not panic")?;
            Arc::new(Arc::new(store))
        }
        Some(cluster) => Arc::new(
            KafkaStore::open(crate::cluster::store_config(
                &config.kafka,
                &config.checkpoint,
                cluster,
            ))
            .await?,
        ),
    };
    let committer = Committer::new(
        Arc::clone(&store),
        config.checkpoint.commit_interval,
        config.checkpoint.commit_every_records,
        health.clone(),
    );
    // Bind before any source starts, so a taken address fails the start before data moves.
    let listen_socket = server::bind(config.server.listen)
        .await
        .map_err(|e| StartError::Listen(config.server.listen, e))?;
    let metrics_address = listen_socket
        .local_addr()
        .map_err(|e| StartError::Listen(config.server.listen, e))?;
    let webhook_listener = match config.server.webhook_listen {
        Some(address) => Some(
            server::bind(address)
                .await
                .map_err(|e| StartError::Listen(address, e))?,
        ),
        None => None,
    };
    let webhook_address = match &webhook_listener {
        Some(listener) => {
            let configured = config.server.webhook_listen.unwrap_or(config.server.listen);
            listener
                .local_addr()
                .map_err(|e| StartError::Listen(configured, e))?
        }
        None => metrics_address,
    };
    let sources = TaskTracker::new();
    let pumps = TaskTracker::new();
    let abandon_pumps = CancellationToken::new();
    let supervisor = Supervisor::new(health.clone(), shutdown.clone());
    let runner = SourceRunner {
        producer: producer.clone(),
        store,
        committer: committer.clone(),
        metrics: Arc::clone(&metrics),
        health: health.clone(),
        hosts: Arc::new(crate::http::HostLimits::new(config.rate_limits.clone())),
        supervisor: supervisor.clone(),
        abandon_pumps: abandon_pumps.clone(),
        shutdown: shutdown.clone(),
        sources: sources.clone(),
        pumps: pumps.clone(),
        transactional_id_prefix: format!(
            "tributary.{}.",
            config
                .cluster
                .as_ref()
                .map_or("default", |c| c.name.as_str())
        )
        .into(),
        replica: config
            .cluster
            .as_ref()
            .map_or_else(|| "single".to_owned(), |c| c.replica_id())
            .into(),
        fenced: Default::default(),
    };
    let mut routes = axum::Router::new();
    let mut assigned = Vec::new();
    let mut running = std::collections::BTreeMap::new();
    let mut config = config;
    // The exactly-once sources this instance starts now (in cluster mode, only the push
    // sources: the group assigns the others) fence their earlier owners first, together.
    let clustered = config.cluster.is_some();
    runner
        .fence_exactly_once(
            config
                .sources
                .iter()
                .map(|(info, _)| info)
                .filter(|info| !clustered || info.kind.is_pushed()),
        )
        .await;
    for (info, source) in std::mem::take(&mut config.sources) {
        let webhook = info.kind.is_pushed();
        if let Some(source_routes) = source.http_routes() {
            routes = routes.merge(source_routes);
        }
        if !webhook && config.cluster.is_some() {
            // Cluster mode: the group assigns this source to one replica.
            assigned.push(info);
            continue;
        }
        // Webhook sources run on every replica; every source runs on a single node.
        let name = info.name.to_string();
        let started = runner.start(info, source).await?;
        if !webhook {
            running.insert(name, started);
        }
    }
    runner.discard_fenced();
    let reloader = Arc::new(crate::reload::Reloader::new(
        &config,
        runner.clone(),
        running,
    ));
    let membership = match &config.cluster {
        Some(cluster) => Some(
            crate::cluster::join(
                cluster,
                &config.kafka,
                assigned,
                config.source_configs.clone(),
                runner.clone(),
            )
            .await?,
        ),
        None => None,
    };
    sources.close();
    pumps.close();

    let server_stop = CancellationToken::new();
    let endpoints = server::router(ServerState {
        metrics: Arc::clone(&metrics),
        health: health.clone(),
        producer: producer.clone(),
        replica: Arc::clone(&runner.replica),
        rates: crate::status::RateSampler::start(Arc::clone(&metrics)),
    });
    let limits = config.server.limits();
    let listener = |name: &'static str, socket| server::listener::Listener {
        name,
        socket,
        limits,
        metrics: metrics.listener(name),
    };
    let mut servers = Vec::new();
    match webhook_listener {
        Some(webhook_listener) => {
            servers.push(tokio::spawn(server::listener::serve(
                listener("webhook_listen", webhook_listener),
                routes,
                server_stop.clone(),
            )));
            servers.push(tokio::spawn(server::listener::serve(
                listener("listen", listen_socket),
                endpoints,
                server_stop.clone(),
            )));
        }
        None => servers.push(tokio::spawn(server::listener::serve(
            listener("listen", listen_socket),
            endpoints.merge(routes),
            server_stop.clone(),
        ))),
    }
    let probe_stop = shutdown.clone();
    let probe_producer = producer.clone();
    tokio::spawn(async move {
        loop {
            probe_producer.probe_brokers(BROKER_PROBE_INTERVAL).await;
            tokio::select! {
                _ = probe_stop.cancelled() => break,
                _ = tokio::time::sleep(BROKER_PROBE_INTERVAL) => {}
            }
        }
    });
    // A fatal producer error ends the daemon: nothing more can be produced.
    let fatal_producer = producer.clone();
    let fatal_shutdown = shutdown.clone();
    let fatal_watch = tokio::spawn(async move {
        tokio::select! {
            reason = fatal_producer.fatal_error() => {
                tracing::error!(%reason, "fatal producer error: stopping; records not acknowledged will be read again after the restart");
                fatal_shutdown.cancel();
                true
            }
            _ = fatal_shutdown.cancelled() => fatal_producer.fatal_error_now().is_some(),
        }
    });
    let committer_stop = CancellationToken::new();
    let committer_task = tokio::spawn(supervisor.clone().committer(
        committer_stop.clone(),
        config.checkpoint.commit_interval,
        committer.run(committer_stop.clone()),
    ));

    let liveness = supervisor.liveness().clone();
    let root = shutdown.clone();
    let finished = tokio::spawn(async move {
        root.cancelled().await;
        // One deadline for draining the channels and flushing the producer together.
        let deadline = tokio::time::Instant::now() + producer.flush_timeout();
        tracing::info!(flush_timeout_seconds = producer.flush_timeout().as_secs_f64(), "shutting down: stopping sources; draining and flushing may take up to kafka.flush_timeout");
        sources.wait().await;
        tokio::select! {
            _ = pumps.wait() => {}
            _ = tokio::time::sleep_until(deadline) => {
                abandon_pumps.cancel();
                pumps.wait().await;
            }
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        tracing::info!(
            in_flight = producer.in_flight(),
            wait_at_most_seconds = remaining.as_secs_f64(),
            "flushing the producer: waiting for Kafka's acknowledgements"
        );
        let abandoned = producer.flush(remaining).await;
        if abandoned > 0 {
            tracing::warn!(abandoned, "records were not acknowledged before the flush timeout; they will be read again after restart");
        }
        committer_stop.cancel();
        let _ = committer_task.await;
        // The positions are stored: the group may now give this replica's sources to others.
        if let Some(membership) = membership {
            membership.leave().await;
        }
        server_stop.cancel();
        for server in servers {
            let _ = server.await;
        }
        let fatal = fatal_watch.await.unwrap_or(true)
            || producer.fatal_error_now().is_some()
            || supervisor.failed();
        tracing::info!("shutdown complete");
        ShutdownReport {
            abandoned_in_flight: abandoned,
            fatal,
        }
    });
    Ok(RunningDaemon {
        shutdown,
        reloader,
        metrics_address,
        webhook_address,
        metrics,
        health,
        liveness,
        finished,
    })
}
