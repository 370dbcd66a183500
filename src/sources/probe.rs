//! What one request to a source's feed says: the outcome `tributary check --connect` prints.

/// The outcome of probing a source's feed once (see [`super::Source::probe`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The feed answered as the source needs it to; what it said (e.g. `HTTP 200`).
    Ok(String),
    /// It did not; why, with secrets stripped.
    Failed(String),
    /// The kind has no URL to check (webhooks are pushed to the daemon).
    NotApplicable,
}
