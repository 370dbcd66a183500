//! One request for the first page of a polled source, for `tributary check --connect`.

use std::{collections::BTreeMap, sync::Arc};

use tokio_util::sync::CancellationToken;

use super::{Endpoint, PollPosition, PollSettings};
use crate::{
    http::{HostLimits, HttpError, HttpPolicy, RetryConfig},
    metrics::{Metrics, SourceKind},
    sources::Probe,
};

/// Requests the first page (asking from the initial watermark, as a new source would) under
/// the source's HTTP policy with a single attempt: a 2xx (or a 304) is [`Probe::Ok`].
/// The response is read and dropped; no record is produced and no position moves.
pub(super) async fn first_page(endpoint: &dyn Endpoint, settings: &PollSettings) -> Probe {
    let once = RetryConfig {
        max_attempts: 1,
        ..settings.retry.clone()
    };
    // Its own request budget and metrics: the probe waits for no configured rate limit and
    // counts nowhere.
    let metrics = Metrics::new().source("check", SourceKind::Rest);
    let policy = match HttpPolicy::new(
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
    let position = PollPosition {
        watermark: settings
            .watermark
            .as_ref()
            .and_then(|w| w.initial.as_ref())
            .map(|initial| initial.to_string()),
        ..PollPosition::default()
    };
    let walk = position.start_walk();
    let request = endpoint.request(&walk.next, walk.since.as_deref());
    match policy.send(&request, &CancellationToken::new()).await {
        Ok(response) => Probe::Ok(format!("HTTP {}", response.status.as_u16())),
        Err(HttpError::Permanent { status, .. }) => Probe::Failed(format!("HTTP {status}")),
        Err(HttpError::Exhausted { last, .. }) => Probe::Failed(last),
        Err(other) => Probe::Failed(other.to_string()),
    }
}
