//! `tributary status`: asks a daemon's `GET /api/v1/sources` and prints the answer as a table
//! that fits 100 columns (the long values, positions and errors, are in `--json`; the table
//! shows each last error on a line of its own, cut to fit).

use std::{fmt::Write as _, time::Duration};

use super::{SourceStatus, StatusReport, API_PATH};

/// How long `tributary status` waits for the daemon's answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The widest line the table prints (characters).
pub const WIDTH: usize = 100;
/// The largest answer `tributary status` reads (bytes).
const MAX_BODY_BYTES: usize = 16 << 20;

/// Why `tributary status` could not get a report.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The daemon did not answer, or answered with an error.
    #[error("cannot read {url}: {reason}; is the daemon running, and is its `server.listen` this address?")]
    Request {
        /// The URL asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// The base URL of a daemon listening on `listen` (its `server.listen`), as seen from this
/// machine: an unspecified address (`0.0.0.0`, `::`) is asked on loopback.
pub fn base_url(listen: std::net::SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, listen.port()))
}

/// The endpoint's URL under `base` (`http://host:port`, with or without a trailing `/`).
pub fn endpoint(base: &str) -> String {
    format!("{}{API_PATH}", base.trim_end_matches('/'))
}

/// Asks the daemon at `base` (its metrics listener) for its report.
///
/// # Errors
/// [`StatusError::Request`]: no answer within [`REQUEST_TIMEOUT`], an HTTP error status, an
/// answer over 16 MiB, or a body that is not a report.
pub async fn fetch(base: &str) -> Result<StatusReport, StatusError> {
    let url = endpoint(base);
    let failed = |reason: String| StatusError::Request {
        url: url.clone(),
        reason,
    };
    crate::tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(failed(format!("HTTP {status}")));
    }
    if response
        .content_length()
        .is_some_and(|length| length > MAX_BODY_BYTES as u64)
    {
        return Err(failed(format!("the answer is over {MAX_BODY_BYTES} bytes")));
    }
    let body = response.bytes().await.map_err(|e| failed(e.to_string()))?;
    if body.len() > MAX_BODY_BYTES {
        return Err(failed(format!("the answer is over {MAX_BODY_BYTES} bytes")));
    }
    serde_json::from_slice(&body).map_err(|e| failed(format!("not a status report: {e}")))
}

/// A duration in seconds as a short age: `0.4s`, `12s`, `7m`, `3h`, `2d`; `-` for none.
pub(super) fn age(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) if s < 10.0 => format!("{s:.1}s"),
        Some(s) if s < 120.0 => format!("{s:.0}s"),
        Some(s) if s < 7200.0 => format!("{:.0}m", s / 60.0),
        Some(s) if s < 172_800.0 => format!("{:.0}h", s / 3600.0),
        Some(s) => format!("{:.0}d", s / 86400.0),
    }
}

/// `text` cut to `width` characters, with `…` when cut.
pub(super) fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The report as a table, one source per row, then the sources' last errors.
pub fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "replica {}; Kafka {}; {} source(s)",
        report.replica,
        if report.kafka_reachable {
            "reachable"
        } else {
            "NOT reachable"
        },
        report.sources.len()
    );
    let _ = writeln!(
        out,
        "{:<20} {:<9} {:<12} {:<16} {:>9} {:>7} {:>7} {:>6} {:>6}",
        "SOURCE", "KIND", "STATE", "REPLICA", "REC/S", "EVENT", "STORED", "DEAD", "RECONN"
    );
    for source in &report.sources {
        let _ = writeln!(out, "{}", row(source));
    }
    let errors: Vec<&SourceStatus> = report
        .sources
        .iter()
        .filter(|s| s.last_error.is_some())
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(out, "last errors:");
        for source in errors {
            let line = format!(
                "  {} ({}): {}",
                source.name,
                source.last_error_at.as_deref().unwrap_or("?"),
                source.last_error.as_deref().unwrap_or_default()
            );
            let _ = writeln!(out, "{}", fit(&line, WIDTH));
        }
    }
    out
}

/// One source's row (at most [`WIDTH`] characters).
fn row(source: &SourceStatus) -> String {
    format!(
        "{:<20} {:<9} {:<12} {:<16} {:>9} {:>7} {:>7} {:>6} {:>6}",
        fit(&source.name, 20),
        fit(&source.kind, 9),
        fit(&source.state, 12),
        fit(&source.replica, 16),
        fit(&format!("{:.1}", source.records_per_second), 9),
        age(source.last_event_age_seconds),
        age(source.position_age_seconds),
        fit(&source.dead_letters_total.to_string(), 6),
        fit(&source.reconnects_total.to_string(), 6),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(name: &str, error: Option<&str>) -> SourceStatus {
        SourceStatus {
            name: name.into(),
            kind: "websocket".into(),
            state: "reconnecting".into(),
            state_detail: None,
            replica: "replica-with-a-long-name-0".into(),
            position: Some("x".repeat(300)),
            position_committed_at: Some("2026-12-05T04:00:00Z".into()),
            position_age_seconds: Some(3.25),
            last_event_age_seconds: Some(86_400.0 * 400.0),
            records_per_second: 123_456_789.5,
            records_received_total: 1,
            dead_letters_total: 12_345_678,
            reconnects_total: 3,
            last_error: error.map(str::to_owned),
            last_error_at: error.map(|_| "2026-12-05T04:00:00Z".to_owned()),
        }
    }

    #[test]
    fn every_line_fits_100_columns_whatever_the_values() {
        let report = StatusReport {
            replica: "r".repeat(200),
            kafka_reachable: false,
            sources: vec![
                source(
                    &"a-very-long-source-name-".repeat(5),
                    Some(&"e".repeat(500)),
                ),
                source("wiki", None),
            ],
        };
        let table = render(&report);
        // The first line names the replica whole; the rest is the table.
        for line in table.lines().skip(1) {
            assert!(
                line.chars().count() <= WIDTH,
                "{} > {WIDTH}: {line}",
                line.len()
            );
        }
        assert!(table.contains("NOT reachable"));
        assert!(table.contains("last errors:"));
        assert!(table.contains("wiki"));
        assert!(table.contains("3.2s"), "{table}");
    }

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(None), "-");
        assert_eq!(age(Some(0.42)), "0.4s");
        assert_eq!(age(Some(42.0)), "42s");
        assert_eq!(age(Some(600.0)), "10m");
        assert_eq!(age(Some(10_800.0)), "3h");
        assert_eq!(age(Some(259_200.0)), "3d");
    }

    #[test]
    fn an_unspecified_listen_address_is_asked_on_loopback() {
        assert_eq!(
            base_url("0.0.0.0:9090".parse().unwrap()),
            "http://127.0.0.1:9090"
        );
        assert_eq!(base_url("[::]:9090".parse().unwrap()), "http://[::1]:9090");
        assert_eq!(
            base_url("10.1.2.3:9090".parse().unwrap()),
            "http://10.1.2.3:9090"
        );
    }

    #[test]
    fn the_endpoint_is_under_the_base_with_or_without_a_slash() {
        assert_eq!(
            endpoint("http://127.0.0.1:9090/"),
            "http://127.0.0.1:9090/api/v1/sources"
        );
        assert_eq!(
            endpoint("http://127.0.0.1:9090"),
            "http://127.0.0.1:9090/api/v1/sources"
        );
    }
}
