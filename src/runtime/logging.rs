//! The log on stderr: text or JSON, the level from `RUST_LOG` (tracing's `EnvFilter` syntax),
//! and a ceiling on the dependencies whose detailed levels dump credentials, whatever
//! `RUST_LOG` asks for.

use tracing::level_filters::LevelFilter;
use tracing_subscriber::{
    filter::{FilterExt as _, Targets},
    layer::SubscriberExt as _,
    util::SubscriberInitExt as _,
    EnvFilter, Layer as _,
};

/// The format of log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// The most detailed level of each dependency whose lower levels write credentials:
/// tungstenite dumps the handshake request (URL and headers) and every frame (subscribe
/// messages) at trace.
pub const CEILINGS: &[(&str, LevelFilter)] = &[("tungstenite", LevelFilter::DEBUG)];

/// The ceilings as a filter: everything else passes.
pub fn ceilings() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(CEILINGS.iter().copied())
}

/// Sends log lines to stderr in `format`, at the level `level` (the `--log-level` flag) sets,
/// else `RUST_LOG`, else `default_level`, never past [`CEILINGS`]; `log` records (librdkafka's, tungstenite's) go
/// the same way. Colours only on a terminal, never in a file or the journal. A line that
/// cannot be written (stderr's reader is gone) is dropped: reporting the failure would write
/// to stderr again, and a panic there would take the daemon down.
///
/// # Panics
/// A global logger is already installed.
pub fn init(format: LogFormat, level: Option<&str>, default_level: &str) {
    let levels = match level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .log_internal_errors(false);
    let layer = match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(levels.and(ceilings())))
        .init();
}

/// Checks a `--log-level` value: a level (`error`, `warn`, `info`, `debug`, `trace`, `off`)
/// or a tracing `EnvFilter` directive list (`warn,tributary=debug`).
///
/// # Errors
/// The value is not valid `EnvFilter` syntax; the message says what is accepted.
pub fn parse_level(value: &str) -> Result<String, String> {
    EnvFilter::builder()
        .parse(value)
        .map(|_| value.to_owned())
        .map_err(|error| {
            format!("{error}; use a level (error, warn, info, debug, trace, off) or directives such as `warn,tributary=debug`")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn dependencies_that_dump_credentials_stay_under_their_ceiling() {
        let filter = ceilings();
        assert!(!filter.would_enable("tungstenite::handshake::client", &Level::TRACE));
        assert!(!filter.would_enable("tungstenite::protocol", &Level::TRACE));
        assert!(filter.would_enable("tungstenite::protocol", &Level::DEBUG));
        assert!(filter.would_enable("tributary::runtime::daemon", &Level::TRACE));
        assert!(filter.would_enable("hyper_util::client::legacy::pool", &Level::TRACE));
    }

    #[test]
    fn log_levels_are_checked() {
        assert_eq!(parse_level("debug").as_deref(), Ok("debug"));
        assert!(parse_level("warn,tributary=debug").is_ok());
        let error = parse_level("tributary=loud").unwrap_err();
        assert!(error.contains("use a level"), "{error}");
    }
}
