//! What every source kind's config shares: the keys of every `[sources.<name>]` table
//! ([`source_table`]), the reconnect policy and the checks of URLs, headers, topics, durations
//! and channel bounds, each reporting a [`ConfigError`] that names the source, the field and the
//! fix.
//!
//! # Why the shared keys are a macro, not a flattened struct
//!
//! Every kind's table has the record stage's keys (`transform`, `timestamp`, `schema`, …, see
//! [`crate::stage::StageConfig`]) and the output keys (`delivery`, `topic`,
//! `dead_letter_topic`, the channel bounds). With those in a `#[serde(flatten)]` struct, serde
//! (which does not support `deny_unknown_fields` beside `flatten`) still refuses
//! `read_timout = "30s"`, but only as ``unknown field `read_timout` `` at the table itself: the
//! error loses the key's path (`sources.wiki.read_timout`) and the list of known keys. Parsing
//! the shared keys out of the table first would need both rebuilt by hand.
//!
//! So [`source_table`] declares the kind's struct with the shared keys written into it: each
//! key is declared once (the stage's in [`crate::stage::with_stage_keys`], the output keys
//! here), each kind is still one flat struct, and serde's own `deny_unknown_fields` names the
//! path of an unknown key and every known key, the shared ones included. Nothing changes at run
//! time.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{error::ConfigError, secret};

/// How the data of each event or frame is interpreted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// Each event's or frame's data must be one JSON value; anything else goes to the dead-letter topic.
    #[default]
    Json,
    /// Data is produced as is.
    Text,
}

/// Reconnect policy: exponential backoff with full jitter (see [`crate::backoff`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconnectConfig {
    /// Ceiling of the first reconnect delay. Default `1s`.
    #[serde(default = "default_initial_delay", with = "humantime_serde")]
    pub initial_delay: Duration,
    /// Largest delay between attempts. Default `60s`.
    #[serde(default = "default_max_delay", with = "humantime_serde")]
    pub max_delay: Duration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            initial_delay: default_initial_delay(),
            max_delay: default_max_delay(),
        }
    }
}

fn default_initial_delay() -> Duration {
    Duration::from_secs(1)
}
fn default_max_delay() -> Duration {
    Duration::from_secs(60)
}

/// Declares a source kind's `[sources.<name>]` struct (`Clone`, `Debug`, `Deserialize`, unknown
/// keys refused) from the kind's own fields: the record stage's keys come first
/// ([`crate::stage::with_stage_keys`]), then `delivery`, `topic` and `dead_letter_topic`, the
/// kind's fields, and last the channel bounds. Also gives the struct `stage_config()` (the
/// record stage's settings) and `source_info()` (the [`SourceInfo`] of its output keys).
///
/// [`SourceInfo`]: crate::sources::SourceInfo
macro_rules! source_table {
    ($(#[$meta:meta])* pub struct $name:ident { $($fields:tt)* }) => {
        $crate::stage::with_stage_keys! {
            $(#[$meta])*
            #[derive(Clone, Debug, serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            pub struct $name {
                /// `"at_least_once"` (default) or `"exactly_once"` (Kafka transactions; needs
                /// `checkpoint.store = "kafka"`).
                #[serde(default)]
                pub delivery: $crate::sources::Delivery,
                /// The Kafka topic records go to: a name, or a template filled from each record
                /// such as `"github.{/type}"` (which needs `dead_letter_topic`).
                pub topic: String,
                /// The topic for records that cannot go to `topic`. Default: `<topic>.dlq`.
                #[serde(default)]
                pub dead_letter_topic: Option<String>,
                $($fields)*
                /// Channel bound in records between this source and the sink. Default 10000.
                #[serde(default = "crate::sources::common::default_channel_max_records")]
                pub channel_max_records: usize,
                /// Channel bound in bytes. Default 16 MiB.
                #[serde(default = "crate::sources::common::default_channel_max_bytes")]
                pub channel_max_bytes: u32,
            }
        }

        impl $name {
            /// The record stage's settings of this source (`transform`, `transform_file`,
            /// `timestamp`, `timestamp_unit`, `record_headers`, `schema`, `on_drift`).
            pub fn stage_config(&self) -> $crate::stage::StageConfig {
                $crate::stage::StageConfig {
                    transform: self.transform.clone(),
                    transform_file: self.transform_file.clone(),
                    timestamp: self.timestamp.clone(),
                    timestamp_unit: self.timestamp_unit,
                    record_headers: self.record_headers.clone(),
                    schema: self.schema.clone(),
                    on_drift: self.on_drift,
                }
            }

            /// The info of source `name` from its topics and channel bounds, with the feed's
            /// URL (secrets stripped).
            pub(crate) fn source_info(
                &self,
                name: &str,
                redacted_url: String,
            ) -> $crate::sources::SourceInfo {
                $crate::sources::SourceInfo::new(
                    name,
                    &self.topic,
                    self.dead_letter_topic.as_deref(),
                    redacted_url,
                    self.channel_max_records,
                    self.channel_max_bytes,
                )
            }
        }
    };
}
pub(crate) use source_table;

/// Default `channel_max_records` of every source kind: 10000 records.
pub(crate) fn default_channel_max_records() -> usize {
    10_000
}

/// Default `channel_max_bytes` of every source kind: 16 MiB.
pub(crate) fn default_channel_max_bytes() -> u32 {
    16 * 1024 * 1024
}

/// Collects the config errors of one source.
pub(crate) struct Checks {
    scope: String,
    name: String,
    /// Every problem found so far.
    pub errors: Vec<ConfigError>,
}

impl Checks {
    /// Checks for the source called `name`.
    pub fn new(name: &str) -> Self {
        Checks {
            scope: format!("source `{name}`"),
            name: name.to_owned(),
            errors: Vec::new(),
        }
    }

    /// The full path of `field` of this source (`sources.<name>.<field>`).
    pub fn field(&self, field: &str) -> String {
        format!("sources.{}.{field}", self.name)
    }

    /// Records a problem with `field`.
    pub fn error(&mut self, field: &str, problem: impl Into<String>, fix: impl Into<String>) {
        let field = self.field(field);
        self.errors
            .push(ConfigError::new(&self.scope, field, problem, fix));
    }

    /// Resolves the secrets in `raw` (`field`), reporting a failure.
    pub fn secret(&mut self, field: &str, raw: &str) -> Option<SecretString> {
        match secret::resolve(raw) {
            Ok(value) => Some(value),
            Err(e) => {
                self.error(field, e.to_string(), e.fix());
                None
            }
        }
    }

    /// Resolves and parses the URL in `field`, which must use one of `schemes`.
    pub fn url(
        &mut self,
        field: &str,
        raw: &str,
        schemes: &[&str],
        example: &str,
    ) -> Option<SecretString> {
        let url = self.secret(field, raw)?;
        match url::Url::parse(url.expose_secret()) {
            Ok(parsed) if schemes.contains(&parsed.scheme()) => return Some(url),
            Ok(parsed) => self.error(
                field,
                format!("scheme `{}` is not supported", parsed.scheme()),
                format!("use a URL with scheme {}", schemes.join(" or ")),
            ),
            Err(e) => self.error(
                field,
                format!("not a valid URL ({e})"),
                format!("write an absolute URL such as `{example}`"),
            ),
        }
        None
    }

    /// Resolves `proxy` (its secret references) and loads `tls`: the source's [`Network`].
    /// After an error, reported against `proxy` or the `tls` file concerned, a direct network
    /// without TLS settings stands in (the source does not start anyway).
    ///
    /// [`Network`]: crate::http::Network
    pub fn network(
        &mut self,
        proxy: Option<&str>,
        tls: Option<&crate::http::TlsConfig>,
    ) -> crate::http::Network {
        let proxy = match proxy {
            Some(raw) => match self.secret("proxy", raw) {
                Some(value) => Some(value),
                None => return crate::http::Network::default(),
            },
            None => None,
        };
        match crate::http::Network::new(proxy.as_ref(), tls) {
            Ok(network) => network,
            Err(errors) => {
                for error in errors {
                    self.error(error.field, error.problem, error.fix);
                }
                crate::http::Network::default()
            }
        }
    }

    /// Checks header names and resolves the secrets in their values.
    pub fn headers<'a>(
        &mut self,
        headers: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Vec<(String, SecretString)> {
        let mut resolved = Vec::new();
        for (header, value) in headers {
            let field = format!("headers.{header}");
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                self.error(
                    &field,
                    "not a valid HTTP header name",
                    "use letters, digits and `-`",
                );
            }
            if let Some(value) = self.secret(&field, value) {
                resolved.push((header.clone(), value));
            }
        }
        resolved
    }

    /// Checks the topic names. A `topic` template (`github.{/type}`, see
    /// [`crate::stage::Template`]) is checked by the record stage, and its fixed text here; it
    /// needs a `dead_letter_topic` (there is no `<topic>.dlq` to default to).
    pub fn topics(&mut self, topic: &str, dead_letter_topic: Option<&str>) {
        let field = self.field("topic");
        if crate::stage::Template::is_template(topic) {
            if let Ok(template) = crate::stage::Template::parse(topic) {
                let fixed = template.literal_text();
                if !fixed.is_empty() && !crate::config::legal_topic(&fixed) {
                    self.error(
                        "topic",
                        format!("the fixed text of the template `{topic}` holds characters a Kafka topic name cannot"),
                        "use characters from `a-z A-Z 0-9 . _ -` around the `{/pointer}` placeholders",
                    );
                }
            }
            if dead_letter_topic.is_none() {
                self.error(
                    "dead_letter_topic",
                    "a topic template needs a fixed dead-letter topic",
                    "set `dead_letter_topic`, e.g. `\"github.dlq\"`",
                );
            }
        } else {
            crate::config::check_topic(&mut self.errors, &self.scope, &field, topic);
        }
        if let Some(topic) = dead_letter_topic {
            let field = self.field("dead_letter_topic");
            crate::config::check_topic(&mut self.errors, &self.scope, &field, topic);
        }
    }

    /// Checks that every named duration is greater than zero.
    pub fn positive_durations(&mut self, durations: &[(&str, Duration)]) {
        for (field, value) in durations {
            if value.is_zero() {
                self.error(
                    field,
                    "must be greater than zero",
                    "use a duration such as `\"5s\"`",
                );
            }
        }
    }

    /// Checks the channel bounds.
    pub fn channel(&mut self, max_records: usize, max_bytes: u32) {
        if max_records == 0 || max_bytes == 0 {
            self.error(
                "channel_max_records",
                "channel bounds must be greater than zero",
                "set `channel_max_records` and `channel_max_bytes` to positive numbers",
            );
        }
    }

    /// The errors, if any.
    pub fn finish(self) -> Result<(), Vec<ConfigError>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }
}
