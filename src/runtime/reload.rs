//! Hot reload: on SIGHUP (or, with `--watch-config`, when the config file changes) the daemon
//! reads the config file and the environment again and applies the difference, source by
//! source, without a restart:
//!
//! - a source that was added starts (from its stored position, if any);
//! - a source that was removed stops cleanly: its records are acknowledged (at most
//!   `kafka.flush_timeout`) and its position is committed;
//! - a source whose settings changed (its table, a secret it references, or the content of
//!   its `transform_file` or `schema` file) stops the same way and starts again from its
//!   stored position;
//! - every other source keeps running, connection and all.
//!
//! What cannot change while the daemon runs needs a restart: `[kafka]`, `[checkpoint]`,
//! `[server]` (the listen addresses), `[rate_limits]`, `[cluster]`, the webhook sources (their
//! routes are part of the HTTP server) and, in cluster mode, the sources (the replicas must
//! roll, the book's "Rolling updates in a cluster"). A reload that would change one of them
//! changes nothing and says which. An invalid file changes nothing either: every error is
//! logged as `check` prints it. Each reload is counted in
//! `tributary_config_reloads_total{outcome}`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use prometheus::{IntCounterVec, Opts};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{self, Config},
    runtime::source_runner::{RunningSource, SourceRunner},
    sources::SourceConfig,
};

/// How long file events are gathered into one reload (a ConfigMap update swaps several
/// links; an editor writes, renames and changes modes).
const WATCH_DEBOUNCE: Duration = Duration::from_millis(500);

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// Sources were started, stopped or restarted (names, in order).
    Applied {
        /// Sources added.
        started: Vec<String>,
        /// Sources removed.
        stopped: Vec<String>,
        /// Sources whose settings changed.
        restarted: Vec<String>,
    },
    /// Nothing that matters changed.
    Unchanged,
    /// Settings changed that only a restart applies (named); nothing was changed.
    RestartRequired(Vec<String>),
    /// The file is not a valid config (every error logged); nothing was changed.
    Invalid,
}

impl ReloadOutcome {
    /// The `outcome` label.
    pub fn label(&self) -> &'static str {
        match self {
            ReloadOutcome::Applied { .. } => "applied",
            ReloadOutcome::Unchanged => "unchanged",
            ReloadOutcome::RestartRequired(_) => "restart_required",
            ReloadOutcome::Invalid => "invalid",
        }
    }
}

/// A hash (16 hex digits) of `text` and of the values of the secrets it references
/// (`${env:…}`, `${file:…}`), so that a changed secret changes it too; the values are never
/// kept or shown.
fn fingerprint(text: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(text.as_bytes());
    for value in crate::secret::reference_values(text) {
        hash.update([0]);
        hash.update(value.expose_secret().as_bytes());
    }
    hex::encode(&hash.finalize()[..8])
}

/// The fingerprint of one source's settings, including the content of the files they name
/// (`transform_file`, `schema`, the `tls` files): an edit to one of them restarts the source as
/// an edit to its table does.
pub fn source_fingerprint(config: &SourceConfig) -> String {
    fingerprint(&format!("{config:?}\n{}", source_files_digest(config)))
}

/// A hash (16 hex digits) of the content of the files a source reads when it starts: its
/// record stage's (`transform_file`, `schema`) and its `tls` files (a certificate renewed in
/// place); a file that cannot be read counts with its error. A changed file changes the
/// source's fingerprint. Empty when the source names no file.
pub fn source_files_digest(config: &SourceConfig) -> String {
    let stage = config.stage_config();
    let files: Vec<_> = [stage.transform_file, stage.schema]
        .into_iter()
        .flatten()
        .chain(
            config
                .tls()
                .into_iter()
                .flat_map(|tls| tls.files().map(Path::to_path_buf)),
        )
        .collect();
    if files.is_empty() {
        return String::new();
    }
    let mut hash = Sha256::new();
    for file in files {
        hash.update(file.as_os_str().as_encoded_bytes());
        hash.update([0]);
        match std::fs::read(&file) {
            Ok(content) => hash.update(&content),
            Err(error) => hash.update(format!("unreadable: {error}").as_bytes()),
        }
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..8])
}

/// The fingerprints of what only a restart applies, by what it is called in the log.
fn restart_settings(config: &Config) -> BTreeMap<&'static str, String> {
    let kafka = &config.kafka;
    let mut producer = String::new();
    for (key, value) in &kafka.properties {
        producer.push_str(key);
        producer.push('=');
        producer.push_str(value.expose_secret());
        producer.push('\n');
    }
    let webhooks: Vec<String> = config
        .source_configs
        .iter()
        .filter(|(_, source)| source.is_pushed())
        .map(|(name, source)| format!("{name}={}", source_fingerprint(source)))
        .collect();
    BTreeMap::from([
        (
            "[kafka]",
            fingerprint(&format!(
                "{}|{:?}|{producer}",
                kafka.brokers, kafka.flush_timeout
            )),
        ),
        (
            "[checkpoint]",
            fingerprint(&format!("{:?}", config.checkpoint)),
        ),
        ("[server]", fingerprint(&format!("{:?}", config.server))),
        ("[metrics]", fingerprint(&format!("{:?}", config.metrics))),
        (
            "[rate_limits]",
            fingerprint(&format!("{:?}", config.rate_limits)),
        ),
        ("[cluster]", fingerprint(&format!("{:?}", config.cluster))),
        ("webhook sources", webhooks.join(",")),
    ])
}

/// The fingerprints of the sources a reload may start, stop and restart (not webhooks).
fn assigned_sources(config: &Config) -> BTreeMap<String, String> {
    config
        .source_configs
        .iter()
        .filter(|(_, source)| !source.is_pushed())
        .map(|(name, source)| (name.clone(), source_fingerprint(source)))
        .collect()
}

struct State {
    settings: BTreeMap<&'static str, String>,
    fingerprints: BTreeMap<String, String>,
    /// The running sources a reload manages (single node; empty in cluster mode).
    running: BTreeMap<String, RunningSource>,
}

/// Registers `tributary_config_reloads_total{outcome}` on `registry`, every outcome at 0.
///
/// # Panics
/// When called twice on one registry (a bug: one reloader per daemon).
pub fn register_metrics(registry: &prometheus::Registry) -> IntCounterVec {
    let reloads = IntCounterVec::new(
        Opts::new(
            "tributary_config_reloads_total",
            "Config reloads (SIGHUP or --watch-config), by outcome: applied, unchanged, \
             restart_required (nothing changed), invalid (nothing changed).",
        ),
        &["outcome"],
    )
    .expect("static metric");
    for outcome in ["applied", "unchanged", "restart_required", "invalid"] {
        reloads.with_label_values(&[outcome]);
    }
    registry
        .register(Box::new(reloads.clone()))
        .expect("registered once");
    reloads
}

/// Applies new configs to a running daemon.
pub struct Reloader {
    runner: SourceRunner,
    cluster: bool,
    stop_timeout: Duration,
    state: tokio::sync::Mutex<State>,
    reloads: IntCounterVec,
}

impl Reloader {
    /// A reloader for a daemon started from `config`, whose sources (not webhooks) run as
    /// `running` (empty in cluster mode, where the group runs them).
    pub(crate) fn new(
        config: &Config,
        runner: SourceRunner,
        running: BTreeMap<String, RunningSource>,
    ) -> Self {
        let reloads = register_metrics(runner.metrics.registry());
        Reloader {
            cluster: config.cluster.is_some(),
            stop_timeout: config.kafka.flush_timeout,
            state: tokio::sync::Mutex::new(State {
                settings: restart_settings(config),
                fingerprints: assigned_sources(config),
                running,
            }),
            runner,
            reloads,
        }
    }

    /// Reads `path` (and the environment) again and applies it; see the module doc.
    pub async fn reload_file(&self, path: &Path) -> ReloadOutcome {
        tracing::info!(path = %path.display(), "reloading the config");
        match config::load(path).and_then(|raw| raw.validate()) {
            Ok(config) => self.reload(config).await,
            Err(errors) => {
                tracing::error!(
                    "config reload refused, the running config stays: {}: {errors}",
                    path.display()
                );
                self.count(ReloadOutcome::Invalid)
            }
        }
    }

    /// Applies `config`; see the module doc.
    pub async fn reload(&self, mut config: Config) -> ReloadOutcome {
        let mut state = self.state.lock().await;
        let settings = restart_settings(&config);
        let mut changed: Vec<String> = settings
            .iter()
            .filter(|(part, value)| state.settings.get(*part) != Some(*value))
            .map(|(part, _)| (*part).to_owned())
            .collect();
        let fingerprints = assigned_sources(&config);
        if self.cluster && fingerprints != state.fingerprints {
            changed.push("sources (cluster mode: roll the replicas)".into());
        }
        if !changed.is_empty() {
            tracing::error!(changed = ?changed, "config reload refused: these settings need a restart; nothing was changed");
            return self.count(ReloadOutcome::RestartRequired(changed));
        }
        let stopping: Vec<String> = state
            .fingerprints
            .iter()
            .filter(|(name, old)| fingerprints.get(*name) != Some(*old))
            .map(|(name, _)| name.clone())
            .collect();
        let starting: Vec<String> = fingerprints
            .iter()
            .filter(|(name, new)| state.fingerprints.get(*name) != Some(*new))
            .map(|(name, _)| name.clone())
            .collect();
        if stopping.is_empty() && starting.is_empty() {
            tracing::info!("config reload: nothing changed");
            return self.count(ReloadOutcome::Unchanged);
        }
        let stops = stopping
            .iter()
            .filter_map(|name| state.running.remove(name))
            .map(|running| self.runner.hand_off(running, self.stop_timeout));
        for handoff in futures::future::join_all(stops).await {
            tracing::info!(
                unacknowledged = handoff.unacknowledged,
                took_ms = handoff.took.as_millis() as u64,
                "config reload: source stopped"
            );
        }
        // A removed source's series leave the scrape (a changed one keeps counting).
        for name in stopping
            .iter()
            .filter(|name| !fingerprints.contains_key(*name))
        {
            self.runner.metrics.remove_source(name);
        }
        let mut built: BTreeMap<String, _> = std::mem::take(&mut config.sources)
            .into_iter()
            .map(|(info, source)| (info.name.to_string(), (info, source)))
            .collect();
        for name in &starting {
            let Some((info, source)) = built.remove(name) else {
                continue;
            };
            match self.runner.start(info, source).await {
                Ok(running) => {
                    state.running.insert(name.clone(), running);
                }
                Err(error) => {
                    tracing::error!(source = %name, %error, "config reload: the source cannot start");
                    self.runner.health.set(
                        name,
                        crate::runtime::health::SourceState::Failed(format!(
                            "cannot read its position: {error}"
                        )),
                    );
                }
            }
        }
        state.fingerprints = fingerprints;
        let restarted: Vec<String> = starting
            .iter()
            .filter(|name| stopping.contains(name))
            .cloned()
            .collect();
        let outcome = ReloadOutcome::Applied {
            started: starting
                .into_iter()
                .filter(|name| !restarted.contains(name))
                .collect(),
            stopped: stopping
                .into_iter()
                .filter(|name| !restarted.contains(name))
                .collect(),
            restarted,
        };
        tracing::info!(?outcome, "config reloaded");
        self.count(outcome)
    }

    fn count(&self, outcome: ReloadOutcome) -> ReloadOutcome {
        self.reloads.with_label_values(&[outcome.label()]).inc();
        outcome
    }
}

/// Reloads `path` on every SIGHUP and, with `watch`, whenever the file (or, in Kubernetes,
/// the ConfigMap's `..data` link next to it) changes, debounced; until `stop`.
///
/// # Errors
/// The file's directory cannot be watched (with `watch`).
pub fn spawn_triggers(
    reloader: Arc<Reloader>,
    path: PathBuf,
    watch: bool,
    stop: CancellationToken,
) -> Result<(), notify::Error> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let watcher = if watch {
        Some(watch_file(&path, tx.clone())?)
    } else {
        None
    };
    #[cfg(unix)]
    {
        let tx = tx.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hangup) = signal(SignalKind::hangup())
                .inspect_err(|error| tracing::warn!(%error, "cannot listen for SIGHUP"))
            else {
                return;
            };
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    received = hangup.recv() => {
                        if received.is_none() || tx.send("SIGHUP").is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                trigger = rx.recv() => {
                    let Some(trigger) = trigger else { return };
                    tracing::info!(trigger, "config reload requested");
                    reloader.reload_file(&path).await;
                }
            }
        }
    });
    Ok(())
}

/// Watches the directory of `path` (a ConfigMap swaps a link in it rather than writing the
/// file) and sends a trigger when an event there touches the file or the `..data` link.
fn watch_file(
    path: &Path,
    tx: tokio::sync::mpsc::UnboundedSender<&'static str>,
) -> Result<notify_debouncer_mini::Debouncer<notify::RecommendedWatcher>, notify::Error> {
    let directory = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let name = path.file_name().map(ToOwned::to_owned);
    let mut debouncer = notify_debouncer_mini::new_debouncer(
        WATCH_DEBOUNCE,
        move |events: notify_debouncer_mini::DebounceEventResult| {
            let touched = match events {
                Ok(events) => events.iter().any(|event| {
                    let file = event.path.file_name();
                    file == name.as_deref() || file == Some(std::ffi::OsStr::new("..data"))
                }),
                Err(error) => {
                    tracing::warn!(%error, "watching the config file failed");
                    false
                }
            };
            if touched {
                let _ = tx.send("file changed");
            }
        },
    )?;
    debouncer
        .watcher()
        .watch(&directory, notify::RecursiveMode::NonRecursive)?;
    Ok(debouncer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_secret_value_changes_the_fingerprint_but_never_shows_in_it() {
        let text = r#"SseConfig { url: "https://x/?key=${env:TRIBUTARY_RELOAD_TEST_KEY}" }"#;
        std::env::set_var("TRIBUTARY_RELOAD_TEST_KEY", "first-secret");
        let first = fingerprint(text);
        std::env::set_var("TRIBUTARY_RELOAD_TEST_KEY", "second-secret");
        let second = fingerprint(text);
        assert_ne!(first, second);
        assert_eq!(first.len(), 16);
        assert!(!first.contains("secret"));
        assert_eq!(ReloadOutcome::Invalid.label(), "invalid");
    }
}
