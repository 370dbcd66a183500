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

use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::Config,
    metrics::Metrics,
    runtime::health::Health,
    runtime::server::{self, ServerState},
    runtime::source_runner::SourceRunner,
    runtime::supervise::Supervisor,
    sinks::kafka::KafkaProducer,
    state::checkpoint::{CheckpointStore, Committer, FileStore, KafkaStore},
};

/// How often broker reachability is probed for `/readyz`.
const BROKER_PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// How long the first probe, which makes the producer connect at start-up, may wait for an
/// answer (the process waits for it when the start-up fails, so it is short; the probes every
/// [`BROKER_PROBE_INTERVAL`] take over).
const FIRST_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

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
    Cluster(#[from] crate::state::cluster::ClusterError),
    /// The producer failed fatally before the daemon had started: the brokers refused its
    /// credentials (a [`crate::kafka_auth::AuthFailure`]: the message names the mechanism), or
    /// librdkafka's own fatal error.
    #[error("kafka: {0}")]
    ProducerFailed(String),
    /// The HTTP server's address cannot be bound.
    #[error("server: cannot listen on `{0}`: {1}; choose a free address in `server.listen`")]
    Listen(SocketAddr, std::io::Error),
}

/// A started daemon.
pub struct RunningDaemon {
    shutdown: CancellationToken,
    reloader: Arc<crate::runtime::reload::Reloader>,
    metrics_address: SocketAddr,
    webhook_address: SocketAddr,
    metrics: Arc<Metrics>,
    health: Health,
    liveness: crate::runtime::liveness::Liveness,
    finished: tokio::task::JoinHandle<ShutdownReport>,
}

/// What shutdown left behind.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownReport {
    /// Records still unacknowledged after the flush timeout (read again after restart).
    pub abandoned_in_flight: i32,
    /// Set when a fatal producer error, or the death of a pump or of the committer (see
    /// [`crate::runtime::supervise`]), stopped the daemon (the process exits 1, so that the service
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
    pub fn liveness(&self) -> &crate::runtime::liveness::Liveness {
        &self.liveness
    }

    /// Applies new configs to this daemon (SIGHUP, `--watch-config`); see [`crate::runtime::reload`].
    pub fn reloader(&self) -> Arc<crate::runtime::reload::Reloader> {
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

/// Starts every part of the daemon and returns once they run: the producer and the
/// checkpoint store, the listeners (bound before any source starts, so that a taken address
/// fails the start before data moves), the sources (or the cluster's share of them), the HTTP
/// server, the watchers, and the task that runs the shutdown (see the module doc).
///
/// # Errors
/// The producer cannot be created, the checkpoint store cannot be opened, the server's
/// address cannot be bound, or the cluster's group cannot be joined.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<RunningDaemon, StartError> {
    crate::tls::install_crypto_provider();
    let metrics = Metrics::with_options(config.metrics);
    let health = Health::default();
    let producer = KafkaProducer::new(&config.kafka)?;
    // The producer connects now (librdkafka connects when there is something to ask), so that
    // credentials the brokers refuse end the start-up below at once.
    tokio::spawn({
        let producer = producer.clone();
        async move { producer.probe_brokers(FIRST_PROBE_TIMEOUT).await }
    });
    let store = unless_producer_failed(&producer, open_store(&config)).await?;
    let committer = Committer::new(
        Arc::clone(&store),
        config.checkpoint.commit_interval,
        config.checkpoint.commit_every_records,
        health.clone(),
    );
    let sockets = Sockets::bind(&config.server).await?;
    let supervisor = Supervisor::new(health.clone(), shutdown.clone());
    let runner = SourceRunner {
        producer: producer.clone(),
        store,
        committer: committer.clone(),
        metrics: Arc::clone(&metrics),
        health: health.clone(),
        hosts: Arc::new(crate::http::HostLimits::new(config.rate_limits.clone())),
        supervisor: supervisor.clone(),
        abandon_pumps: CancellationToken::new(),
        shutdown: shutdown.clone(),
        sources: TaskTracker::new(),
        pumps: TaskTracker::new(),
        transactional_id_prefix: format!("tributary.{}.", cluster_name(&config)).into(),
        replica: config
            .cluster
            .as_ref()
            .map_or_else(|| "single".to_owned(), |c| c.replica_id())
            .into(),
        fenced: Default::default(),
    };
    let (config, started) =
        unless_producer_failed(&producer, start_sources(config, &runner)).await?;
    let reloader = Arc::new(crate::runtime::reload::Reloader::new(
        &config,
        runner.clone(),
        started.running,
    ));
    let membership = match &config.cluster {
        Some(cluster) => Some(
            unless_producer_failed(&producer, async {
                Ok(crate::state::cluster::join(
                    cluster,
                    &config.kafka,
                    started.assigned,
                    config.source_configs.clone(),
                    runner.clone(),
                )
                .await?)
            })
            .await?,
        ),
        None => None,
    };
    runner.sources.close();
    runner.pumps.close();

    let server_stop = CancellationToken::new();
    let endpoints = server::router(ServerState {
        metrics: Arc::clone(&metrics),
        health: health.clone(),
        producer: producer.clone(),
        replica: Arc::clone(&runner.replica),
        rates: crate::status::RateSampler::start(Arc::clone(&metrics)),
    });
    let (metrics_address, webhook_address) = (sockets.metrics_address, sockets.webhook_address);
    let servers = sockets.serve(&config, &metrics, endpoints, started.routes, &server_stop);
    probe_brokers(producer.clone(), shutdown.clone());
    let fatal_watch = watch_fatal_error(producer.clone(), shutdown.clone());
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
        shut_down(Stopping {
            producer,
            runner,
            supervisor,
            committer: (committer_stop, committer_task),
            membership,
            servers: (server_stop, servers),
            fatal_watch,
        })
        .await
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

/// Runs `step` of the start-up, unless the producer fails fatally first. The brokers refusing
/// the credentials is the case that matters: librdkafka retries a refused login forever, so
/// the Kafka store's reads would wait out their own timeouts and end in a vaguer error (and
/// the group consumer would wait for ever), while the producer's context names the mechanism
/// at once.
///
/// # Errors
/// `step`'s error, or [`StartError::ProducerFailed`].
async fn unless_producer_failed<T>(
    producer: &KafkaProducer,
    step: impl std::future::Future<Output = Result<T, StartError>>,
) -> Result<T, StartError> {
    tokio::select! {
        biased;
        reason = producer.fatal_error() => Err(StartError::ProducerFailed(reason)),
        result = step => result,
    }
}

/// The cluster's name (`cluster.name`), `default` without `[cluster]`: it prefixes the
/// transactional ids of exactly-once sources.
fn cluster_name(config: &Config) -> &str {
    config
        .cluster
        .as_ref()
        .map_or("default", |c| c.name.as_str())
}

/// Opens the checkpoint store: the directory (locked for this process) or, in cluster mode,
/// the Kafka store.
///
/// # Errors
/// The directory is locked or unreadable, or the Kafka store's topic cannot be read.
async fn open_store(config: &Config) -> Result<Arc<dyn CheckpointStore>, StartError> {
    Ok(match &config.cluster {
        None => {
            let dir = config.checkpoint.dir.clone();
            let store = tokio::task::spawn_blocking(move || FileStore::open_exclusive(dir))
                .await
                .expect("opening the store does not panic")?;
            Arc::new(Arc::new(store))
        }
        Some(cluster) => Arc::new(
            KafkaStore::open(crate::state::cluster::store_config(
                &config.kafka,
                &config.checkpoint,
                cluster,
            ))
            .await?,
        ),
    })
}

/// The listeners, bound.
struct Sockets {
    /// `server.listen`: `/metrics`, the probes, the API, and the webhook routes unless they
    /// have a listener of their own.
    listen: TcpListener,
    metrics_address: SocketAddr,
    /// `server.webhook_listen`, when set.
    webhook: Option<TcpListener>,
    webhook_address: SocketAddr,
}

impl Sockets {
    /// Binds `server.listen` and `server.webhook_listen`.
    ///
    /// # Errors
    /// [`StartError::Listen`]: an address is taken or not this host's.
    async fn bind(server: &crate::config::ServerSection) -> Result<Sockets, StartError> {
        let bound = |address| async move {
            let socket = server::bind(address)
                .await
                .map_err(|e| StartError::Listen(address, e))?;
            let local = socket
                .local_addr()
                .map_err(|e| StartError::Listen(address, e))?;
            Ok::<_, StartError>((socket, local))
        };
        let (listen, metrics_address) = bound(server.listen).await?;
        let (webhook, webhook_address) = match server.webhook_listen {
            Some(address) => {
                let (socket, local) = bound(address).await?;
                (Some(socket), local)
            }
            None => (None, metrics_address),
        };
        Ok(Sockets {
            listen,
            metrics_address,
            webhook,
            webhook_address,
        })
    }

    /// Serves the `endpoints` and the webhook `routes` until `stop`: on one listener, or on
    /// two when `server.webhook_listen` is set.
    fn serve(
        self,
        config: &Config,
        metrics: &Metrics,
        endpoints: axum::Router,
        routes: axum::Router,
        stop: &CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let limits = config.server.limits();
        let serve = |name: &'static str, socket, router| {
            tokio::spawn(server::listener::serve(
                server::listener::Listener {
                    name,
                    socket,
                    limits,
                    metrics: metrics.listener(name),
                },
                router,
                stop.clone(),
            ))
        };
        match self.webhook {
            Some(webhook) => vec![
                serve("webhook_listen", webhook, routes),
                serve("listen", self.listen, endpoints),
            ],
            None => vec![serve("listen", self.listen, endpoints.merge(routes))],
        }
    }
}

/// What [`start_sources`] started, and what it left to others.
struct Started {
    /// Every webhook source's routes.
    routes: axum::Router,
    /// Cluster mode: the sources the group assigns to one replica each.
    assigned: Vec<crate::sources::SourceInfo>,
    /// The sources this instance runs alone (all but webhooks), for reloads.
    running: std::collections::BTreeMap<String, crate::runtime::source_runner::RunningSource>,
}

/// Starts the sources this instance runs: all of them on a single node; in cluster mode only
/// the pushed ones (webhooks run on every replica), the others left to the group. The
/// exactly-once sources among them fence their earlier owners first, together. Returns the
/// config without its sources (they are moved into the runner).
///
/// # Errors
/// A source cannot start (see [`SourceRunner::start`]).
async fn start_sources(
    mut config: Config,
    runner: &SourceRunner,
) -> Result<(Config, Started), StartError> {
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
    let mut started = Started {
        routes: axum::Router::new(),
        assigned: Vec::new(),
        running: Default::default(),
    };
    for (info, source) in std::mem::take(&mut config.sources) {
        let pushed = info.kind.is_pushed();
        if let Some(source_routes) = source.http_routes() {
            started.routes = started.routes.merge(source_routes);
        }
        if !pushed && clustered {
            started.assigned.push(info);
            continue;
        }
        let name = info.name.to_string();
        let source = runner.start(info, source).await?;
        if !pushed {
            started.running.insert(name, source);
        }
    }
    runner.discard_fenced();
    Ok((config, started))
}

/// Probes the brokers every [`BROKER_PROBE_INTERVAL`] for `/readyz`, until `stop`.
fn probe_brokers(producer: KafkaProducer, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            producer.probe_brokers(BROKER_PROBE_INTERVAL).await;
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(BROKER_PROBE_INTERVAL) => {}
            }
        }
    });
}

/// Ends the daemon on a fatal producer error (nothing more can be produced): cancels
/// `shutdown`. The task's result says whether the producer failed fatally.
fn watch_fatal_error(
    producer: KafkaProducer,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<bool> {
    tokio::spawn(async move {
        tokio::select! {
            reason = producer.fatal_error() => {
                tracing::error!(%reason, "fatal producer error: stopping; records not acknowledged will be read again after the restart");
                shutdown.cancel();
                true
            }
            _ = shutdown.cancelled() => producer.fatal_error_now().is_some(),
        }
    })
}

/// Everything the shutdown stops, in its order.
struct Stopping {
    producer: KafkaProducer,
    /// Its task trackers (sources, pumps) and the token that abandons the pumps.
    runner: SourceRunner,
    supervisor: Supervisor,
    committer: (CancellationToken, tokio::task::JoinHandle<()>),
    membership: Option<crate::state::cluster::Membership>,
    servers: (CancellationToken, Vec<tokio::task::JoinHandle<()>>),
    fatal_watch: tokio::task::JoinHandle<bool>,
}

/// The shutdown (see the module doc): sources stop; pumps drain their channels into the
/// producer, and the producer is flushed, within one `kafka.flush_timeout`; the committer
/// stores the last positions; the replica leaves the cluster's group; the server stops.
async fn shut_down(parts: Stopping) -> ShutdownReport {
    let Stopping {
        producer,
        runner,
        supervisor,
        committer: (committer_stop, committer_task),
        membership,
        servers: (server_stop, servers),
        fatal_watch,
    } = parts;
    let deadline = tokio::time::Instant::now() + producer.flush_timeout();
    tracing::info!(
        flush_timeout_seconds = producer.flush_timeout().as_secs_f64(),
        "shutting down: stopping sources; draining and flushing may take up to kafka.flush_timeout"
    );
    runner.sources.wait().await;
    tokio::select! {
        _ = runner.pumps.wait() => {}
        _ = tokio::time::sleep_until(deadline) => {
            runner.abandon_pumps.cancel();
            runner.pumps.wait().await;
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
}
