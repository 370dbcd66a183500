//! One connection to the stream, for `tributary check --connect`: the answer's status is
//! checked, then the connection is closed before any record is read.

use std::{collections::BTreeMap, sync::Arc};

use tokio_util::sync::CancellationToken;

use super::{config::StreamSettings, preset::Preset, source::stream_request};
use crate::{
    http::{HostLimits, HttpError, HttpPolicy, RetryConfig},
    metrics::{Metrics, SourceKind},
    sources::Probe,
};

/// Opens the stream as a new source would (from `start_from`, else from nothing; a Kubernetes
/// source without `start_from` asks for its list instead, which it would read first) under
/// the source's HTTP policy with a single attempt. A 2xx is [`Probe::Ok`]; the body is not
/// read.
pub(super) async fn connect_once(settings: &StreamSettings) -> Probe {
    let once = RetryConfig {
        max_attempts: 1,
        ..settings.retry.clone()
    };
    // Its own request budget and metrics: the probe waits for no configured rate limit and
    // counts nowhere.
    let metrics = Metrics::new().source("check", SourceKind::HttpStream);
    let policy = match HttpPolicy::streaming(
        settings.auth.clone(),
        once,
        settings.timeouts,
        Arc::new(HostLimits::new(BTreeMap::new())),
        metrics,
        settings.redactor.clone(),
        &settings.network,
    ) {
        Ok(policy) => policy,
        Err(error) => return Probe::Failed(error),
    };
    let mut request = stream_request(settings, settings.start_from.as_deref());
    if settings.preset == Preset::Kubernetes && settings.start_from.is_none() {
        request.url = settings.url.clone();
    }
    match policy.open(&request, &CancellationToken::new()).await {
        Ok(stream) => Probe::Ok(format!("HTTP {}", stream.status.as_u16())),
        Err(HttpError::Permanent { status, .. }) => Probe::Failed(format!("HTTP {status}")),
        Err(HttpError::Exhausted { last, .. }) => Probe::Failed(last),
        Err(other) => Probe::Failed(other.to_string()),
    }
}
