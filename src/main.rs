//! The `tributary` command: `run`, `check`, `positions`, `schema infer`, `dev-broker`, `demo`.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 invalid configuration. `check --connect` adds
//! 3 (the Kafka brokers do not answer, a topic is missing, or the positions topic is not
//! compacted) and 4 (a source's URL does not answer as it should); when both happen, 3 wins:
//! without Kafka no source can deliver anything.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tributary::{
    cli::check_connect, cli::demo, cli::dev_broker, cli::positions, cli::schema_infer, config,
    runtime::daemon, runtime::logging, runtime::shutdown, runtime::systemd,
};

/// Turns API feeds (Server-Sent Events, WebSocket, webhooks, polled REST and GraphQL) into Kafka topics, resuming after any restart.
#[derive(Parser)]
#[command(
    version,
    about = "Turns API feeds (Server-Sent Events, WebSocket, webhooks, polled REST and GraphQL) into Kafka topics, resuming after any restart"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Log level or filter (`debug`, `warn,tributary=debug`: tracing's EnvFilter syntax);
    /// takes precedence over `RUST_LOG`. Default: `info` for `run`, `warn` for `check`,
    /// `positions`, `schema` and `dev-broker`, `error` for `demo`.
    #[arg(long, global = true, value_name = "FILTER", value_parser = logging::parse_level)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon until SIGTERM or SIGINT.
    Run {
        /// The TOML config file. SIGHUP reloads it (and the environment).
        #[arg(long, short)]
        config: PathBuf,
        /// Also reload when the file changes (debounced; in Kubernetes, when the mounted
        /// ConfigMap is updated).
        #[arg(long)]
        watch_config: bool,
    },
    /// Validate a config file and print every error; exit code 2 when invalid.
    ///
    /// With `--connect`, also check (one request each, nothing consumed or produced) that the
    /// Kafka brokers answer, that each source's topic and dead-letter topic exist, that each
    /// source's URL answers with its headers and auth, and with `checkpoint.store = "kafka"`
    /// whether the positions topic exists and is compacted, and each source's control topic;
    /// print one line per check.
    /// Exit codes: 0 all ok; 2 invalid config; 3 Kafka unreachable, a topic missing or the
    /// positions topic not compacted; 4 a source URL failing (3 wins when both fail).
    Check {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Also connect to Kafka and to each source's URL (see above).
        #[arg(long)]
        connect: bool,
    },
    /// Read or change the stored positions of a config's sources (`set`, `reset` and `copy`
    /// refuse while a daemon runs on the store they write).
    Positions {
        /// The TOML config file.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: PositionsCommand,
    },
    /// Show what each source of a running daemon is doing: its state, replica, records per
    /// second over the last minute, the age of its last events and of its stored position,
    /// dead letters, reconnects and last error. Reads the daemon's `GET /api/v1/sources`.
    ///
    /// With `--config` of a cluster (`checkpoint.store = "kafka"` and `[cluster]`), shows the
    /// whole cluster instead, from the brokers alone: the group's members (replica id, config
    /// fingerprint, the sources each owns) and each source's owner and position in the Kafka
    /// store. `--url` always asks one daemon.
    /// Exit code 1 when the daemon (or, for a cluster, the brokers) cannot be asked.
    Status {
        /// The daemon's config file: the daemon is asked at its `server.listen` address, or,
        /// with `[cluster]`, the brokers are asked about the whole cluster.
        #[arg(long, short, conflicts_with = "url")]
        config: Option<PathBuf>,
        /// The daemon's metrics listener, e.g. `http://127.0.0.1:9090`.
        #[arg(long, required_unless_present = "config")]
        url: Option<String>,
        /// Print the report as JSON (every field, long values whole).
        #[arg(long)]
        json: bool,
    },
    /// Create the Kafka topics a config names (Tributary's producer never creates topics).
    Topics {
        #[command(subcommand)]
        action: TopicsCommand,
    },
    /// Work with the JSON Schemas of the record stage (`schema = "…"`).
    Schema {
        #[command(subcommand)]
        action: SchemaCommand,
    },
    /// Run librdkafka's mock Kafka cluster on 127.0.0.1 until Ctrl-C, to try a config without
    /// installing Kafka. Development only: memory only, no durability.
    DevBroker {
        /// Brokers in the mock cluster.
        #[arg(long, default_value_t = 1)]
        brokers: i32,
        /// A topic to create, `NAME` or `NAME:PARTITIONS` (repeatable).
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Create every topic this config needs (sources, dead-letter topics, and with the
        /// Kafka store the positions and control topics).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the pipeline on recorded Wikimedia events against an in-process Kafka broker.
    Demo {
        /// Print a machine-readable JSON report.
        #[arg(long)]
        json: bool,
        /// Events to replay (cycling through the 100 recorded ones).
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Keep serving /metrics after the report until Ctrl-C.
        #[arg(long)]
        keep_running: bool,
    },
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create every source's topic and dead-letter topic (a templated `topic` is listed, not
    /// created); existing topics are left as they are. The positions and control topics of
    /// the Kafka store are `run`'s own. Exit code 1 when the brokers refuse a topic or do not
    /// answer.
    Create {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Partitions of each new topic.
        #[arg(long, default_value_t = 8)]
        partitions: i32,
        /// Replicas of each new topic (at most the number of brokers).
        #[arg(long, default_value_t = 1)]
        replication_factor: i32,
    },
}

#[derive(Subcommand)]
enum PositionsCommand {
    /// Every configured source and its stored position (`-` when none).
    List,
    /// The stored position of SOURCE.
    Get { source: String },
    /// Store POSITION for SOURCE (an SSE event id, a WebSocket sequence, a polled source's
    /// JSON position).
    Set { source: String, position: String },
    /// Forget the position of SOURCE: it starts again as a new source would.
    Reset { source: String },
    /// Copy every stored position from one store to the other (`checkpoint.dir` and
    /// `checkpoint.topic`): moves an install from the file store to the Kafka store.
    Copy {
        /// The store to read.
        #[arg(long, value_enum)]
        from: StoreArg,
        /// The store to write.
        #[arg(long, value_enum)]
        to: StoreArg,
    },
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Write a starting JSON Schema (draft 2020-12) for SOURCE's records, inferred from
    /// `--sample` records of its live feed (nothing is produced, no position is stored) or of a
    /// recorded file; each event goes through the source's `transform` first. Review the
    /// schema before use: what the samples always showed is required.
    Infer {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// The source whose records to read.
        #[arg(long)]
        source: String,
        /// Events to read.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        sample: u32,
        /// Read recorded events from this file (one JSON event per line) instead of the feed.
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// Write the schema to this file instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Seconds to wait for the live feed's records; the schema is then inferred from those
        /// read so far.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum StoreArg {
    File,
    Kafka,
}

impl From<StoreArg> for config::StoreKind {
    fn from(store: StoreArg) -> Self {
        match store {
            StoreArg::File => config::StoreKind::File,
            StoreArg::Kafka => config::StoreKind::Kafka,
        }
    }
}

/// Reads and validates the config file at `path`; on errors, prints every one and gives exit
/// code 2.
fn load_valid(path: &std::path::Path) -> Result<config::Config, ExitCode> {
    config::load(path)
        .and_then(|raw| raw.validate())
        .map_err(|errors| {
            eprintln!("{}: {errors}", path.display());
            ExitCode::from(2)
        })
}

#[tokio::main]
async fn main() -> ExitCode {
    let Cli {
        log_format,
        log_level,
        command,
    } = Cli::parse();
    let init_logging = |default_level: &str| {
        let format = match log_format {
            LogFormat::Text => logging::LogFormat::Text,
            LogFormat::Json => logging::LogFormat::Json,
        };
        logging::init(format, log_level.as_deref(), default_level);
    };
    match command {
        Command::Check { config, connect } => {
            init_logging("warn");
            match config::load(&config).and_then(|raw| raw.validate()) {
                Ok(valid) => {
                    println!(
                        "{}: valid ({} source(s))",
                        config.display(),
                        valid.sources.len()
                    );
                    if !connect {
                        return ExitCode::SUCCESS;
                    }
                    let report = check_connect::run(&valid).await;
                    print!("{report}");
                    let failures = report.failures();
                    if failures > 0 {
                        eprintln!("{}: {failures} check(s) FAILED", config.display());
                    }
                    ExitCode::from(report.exit_code())
                }
                Err(errors) => {
                    eprintln!("{}: {errors}", config.display());
                    ExitCode::from(2)
                }
            }
        }
        Command::Status { config, url, json } => {
            init_logging("warn");
            let base = match (url, config) {
                (Some(url), _) => url,
                (None, Some(path)) => {
                    // `[cluster]` (which needs the Kafka store) selects the cluster view; the
                    // Kafka store alone runs a cluster of one, whose daemon is asked as before.
                    let raw = match config::load(&path) {
                        Ok(raw) => raw,
                        Err(errors) => {
                            eprintln!("{}: {errors}", path.display());
                            return ExitCode::from(2);
                        }
                    };
                    let clustered = raw.cluster.is_some();
                    let valid = match raw.validate() {
                        Ok(valid) => valid,
                        Err(errors) => {
                            eprintln!("{}: {errors}", path.display());
                            return ExitCode::from(2);
                        }
                    };
                    if !clustered {
                        tributary::status::table::base_url(valid.server.listen)
                    } else {
                        use tributary::status::cluster::{cluster_report, render_cluster};
                        return match cluster_report(&valid).await {
                            Ok(report) if json => {
                                println!(
                                    "{}",
                                    serde_json::to_string_pretty(&report)
                                        .expect("a report serializes")
                                );
                                ExitCode::SUCCESS
                            }
                            Ok(report) => {
                                print!("{}", render_cluster(&report));
                                ExitCode::SUCCESS
                            }
                            Err(error) => {
                                eprintln!("tributary status: {error}");
                                ExitCode::FAILURE
                            }
                        };
                    }
                }
                (None, None) => unreachable!("clap requires --config or --url"),
            };
            match tributary::status::table::fetch(&base).await {
                Ok(report) if json => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).expect("a report serializes")
                    );
                    ExitCode::SUCCESS
                }
                Ok(report) => {
                    print!("{}", tributary::status::table::render(&report));
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("tributary status: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Topics {
            action:
                TopicsCommand::Create {
                    config,
                    partitions,
                    replication_factor,
                },
        } => {
            init_logging("warn");
            let valid = match load_valid(&config) {
                Ok(valid) => valid,
                Err(code) => return code,
            };
            match tributary::cli::topics::create(&valid, partitions, replication_factor).await {
                Ok(report) => {
                    print!("{}", report.render());
                    if report.ok() {
                        ExitCode::SUCCESS
                    } else {
                        eprintln!("tributary topics create: the brokers refused a topic (above)");
                        ExitCode::FAILURE
                    }
                }
                Err(error) => {
                    eprintln!("tributary topics create: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Positions { config, action } => {
            init_logging("warn");
            let Some(config) = config else {
                eprintln!("tributary positions: --config <FILE> is required");
                return ExitCode::from(2);
            };
            let valid = match load_valid(&config) {
                Ok(valid) => valid,
                Err(code) => return code,
            };
            let action = match action {
                PositionsCommand::List => positions::Action::List,
                PositionsCommand::Get { source } => positions::Action::Get(source),
                PositionsCommand::Set { source, position } => {
                    positions::Action::Set(source, position)
                }
                PositionsCommand::Reset { source } => positions::Action::Reset(source),
                PositionsCommand::Copy { from, to } => positions::Action::Copy {
                    from: from.into(),
                    to: to.into(),
                },
            };
            match positions::run(&valid, action, &mut std::io::stdout()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("tributary positions: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Schema {
            action:
                SchemaCommand::Infer {
                    config,
                    source,
                    sample,
                    input,
                    output,
                    timeout,
                },
        } => {
            init_logging("warn");
            let valid = match load_valid(&config) {
                Ok(valid) => valid,
                Err(code) => return code,
            };
            let request = schema_infer::Request {
                source,
                sample: sample as usize,
                input,
                timeout: std::time::Duration::from_secs(timeout),
            };
            match schema_infer::infer(valid, &request).await {
                Ok(inferred) => schema_infer::write(&inferred, &request, output.as_deref()),
                Err(error) => {
                    eprintln!("tributary schema infer: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            config,
            watch_config,
        } => {
            init_logging("info");
            let valid = match load_valid(&config) {
                Ok(valid) => valid,
                Err(code) => return code,
            };
            // Resolved against the working directory when the config was validated.
            tracing::info!(dir = %valid.checkpoint.dir.display(), "positions are stored in this checkpoint.dir");
            let token = CancellationToken::new();
            shutdown::cancel_on_signal(token.clone());
            match daemon::start(valid, token.clone()).await {
                Ok(running) => {
                    tracing::info!(address = %running.metrics_address(), "serving /metrics, /healthz, /readyz");
                    if let Err(error) = tributary::runtime::reload::spawn_triggers(
                        running.reloader(),
                        config.clone(),
                        watch_config,
                        token,
                    ) {
                        tracing::error!(%error, path = %config.display(), "--watch-config: cannot watch the config file; SIGHUP still reloads it");
                    }
                    systemd::start(&running);
                    if running.wait().await.fatal {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "cannot start");
                    ExitCode::FAILURE
                }
            }
        }
        Command::DevBroker {
            brokers,
            topics,
            config,
        } => {
            init_logging("warn");
            let mut wanted = std::collections::BTreeMap::new();
            if let Some(config) = config {
                match load_valid(&config) {
                    Ok(valid) => wanted.extend(dev_broker::topics_of(&valid)),
                    Err(code) => return code,
                }
            }
            for topic in &topics {
                match dev_broker::parse_topic(topic) {
                    Ok((name, partitions)) => {
                        wanted.insert(name, partitions);
                    }
                    Err(error) => {
                        eprintln!("{error}");
                        return ExitCode::from(2);
                    }
                }
            }
            let broker = match dev_broker::DevBroker::start(brokers, &wanted) {
                Ok(broker) => broker,
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::FAILURE;
                }
            };
            eprintln!("!! {}", dev_broker::WARNING);
            for (topic, partitions) in &wanted {
                eprintln!("created topic {topic} ({partitions} partitions)");
            }
            println!("bootstrap.servers={}", broker.bootstrap_servers());
            let token = CancellationToken::new();
            shutdown::cancel_on_signal(token.clone());
            token.cancelled().await;
            ExitCode::SUCCESS
        }
        Command::Demo {
            json,
            events,
            keep_running,
        } => {
            // The feed drop and the restart are part of the demo: log only errors.
            init_logging("error");
            match demo::run(demo::DemoOptions {
                events,
                json,
                keep_running,
            })
            .await
            {
                Ok(report) => {
                    if !keep_running {
                        demo::print_report(&report, json);
                    }
                    if report.lost == 0 && report.duplicates == 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(error) => {
                    eprintln!("demo failed: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
