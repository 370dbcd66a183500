//! Kafka clients that cannot authenticate: telling that from a broker that is merely down.
//!
//! librdkafka treats a refused SASL login or TLS handshake like any other connection failure:
//! it reports an error event (`ERR__AUTHENTICATION`, `ERR__SSL`) and tries again after
//! `reconnect.backoff.ms`, forever. A producer with a wrong password therefore never delivers
//! and never fails, and a metadata request waits out its timeout and ends in "broker transport
//! failure". Credentials do not mend themselves, so Tributary reads those error events
//! ([`AuthFailure::from_event`]) and stops the client's user with a message that names the
//! mechanism (`SASL authentication failed (SCRAM-SHA-512 over SASL_SSL)`) and the settings to
//! check, instead of retrying silently:
//!
//! - the producer's context ([`crate::sinks::kafka`]) raises it as a fatal producer error, so
//!   that `tributary run` exits with code 1 during start-up or at any later time;
//! - [`AuthWatch`] is the context of the short-lived clients (`check --connect`), which ask with
//!   [`AuthWatch::fetch_metadata`] and get the failure as soon as librdkafka reports it;
//! - [`check_credentials`] asks once before the clients whose contexts are librdkafka's
//!   defaults make their requests (the Kafka store at its opening, `topics create`).
//!
//! What counts as an authentication failure: every `ERR__AUTHENTICATION` and broker
//! `SASL_AUTHENTICATION_FAILED` (the broker refused the login), but an OAUTHBEARER token that
//! could not be fetched (its identity provider down: librdkafka fetches it again); and an
//! `ERR__SSL` (or, when the broker's alert arrives after the handshake, a transport failure)
//! whose reason is a refusal of a certificate (`certificate verify failed`, a TLS alert such as
//! `bad certificate` or `unknown ca`, a key that does not match). A TLS connection that was
//! merely cut during the handshake (a broker shutting down) is not one: librdkafka's
//! `Disconnected` reasons stay a connection failure and are retried. The messages never carry a secret: librdkafka's reasons do not contain the
//! password, and the settings are named, never their values.

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer, ConsumerContext},
    error::KafkaError,
    metadata::Metadata,
    types::RDKafkaErrorCode,
    ClientContext,
};

/// A Kafka client was refused by the brokers: wrong SASL credentials, or a certificate that
/// one side does not trust.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// The brokers refused the SASL login.
    #[error("SASL authentication failed ({mechanism} over {protocol}): {reason}; check `sasl.username` and `sasl.password` (and `sasl.mechanism`) in `[kafka.producer]`")]
    Sasl {
        /// `sasl.mechanism` (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`, `GSSAPI`, ...).
        mechanism: String,
        /// `security.protocol` (`SASL_PLAINTEXT` or `SASL_SSL`).
        protocol: String,
        /// librdkafka's reason (the broker's message, never the password).
        reason: String,
    },
    /// The TLS handshake failed on a certificate: the brokers refused the client's, or the
    /// client did not trust the brokers'.
    #[error("TLS authentication failed ({mechanism} over {protocol}): {reason}; check `ssl.ca.location` (the CA that signed the brokers' certificates) and, for a client certificate, `ssl.certificate.location` and `ssl.key.location` (signed by a CA the brokers trust) in `[kafka.producer]`")]
    Tls {
        /// What authenticates the client: `client certificate` with
        /// `ssl.certificate.location`, else the SASL mechanism on `SASL_SSL`, else `TLS`.
        mechanism: String,
        /// `security.protocol` (`SSL` or `SASL_SSL`).
        protocol: String,
        /// librdkafka's reason.
        reason: String,
    },
}

impl AuthFailure {
    /// The failure an error event of a client made from `config` reports, or `None` when the
    /// event is about something else (a broker down, a timeout, a connection cut during a
    /// TLS handshake).
    pub fn from_event(error: &KafkaError, reason: &str, config: &ClientConfig) -> Option<Self> {
        let protocol = setting(config, "security.protocol")
            .unwrap_or_else(|| "plaintext".to_owned())
            .to_ascii_uppercase();
        let sasl_mechanism = || {
            setting(config, "sasl.mechanism")
                .or_else(|| setting(config, "sasl.mechanisms"))
                .unwrap_or_else(|| "GSSAPI".to_owned())
                .to_ascii_uppercase()
        };
        let reason = reason.trim().to_owned();
        let tls = |reason: String| {
            let mechanism = if [
                "ssl.certificate.location",
                "ssl.certificate.pem",
                "ssl.keystore.location",
            ]
            .iter()
            .any(|key| setting(config, key).is_some())
            {
                "client certificate".to_owned()
            } else if protocol.starts_with("SASL") {
                sasl_mechanism()
            } else {
                "TLS".to_owned()
            };
            AuthFailure::Tls {
                mechanism,
                protocol: protocol.clone(),
                reason,
            }
        };
        let lowercase = reason.to_ascii_lowercase();
        match error.rdkafka_error_code()? {
            // OAUTHBEARER: the token could not be fetched (the identity provider is down or
            // slow), which librdkafka also reports as `ERR__AUTHENTICATION`; it fetches again.
            RDKafkaErrorCode::Authentication
                if lowercase.contains("failed to acquire sasl oauthbearer token") =>
            {
                None
            }
            RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed => {
                Some(AuthFailure::Sasl {
                    mechanism: sasl_mechanism(),
                    protocol: protocol.clone(),
                    reason,
                })
            }
            RDKafkaErrorCode::SSL if refuses_a_certificate(&lowercase) => Some(tls(reason)),
            // A broker that refuses the client's certificate may let the handshake end (TLS
            // 1.3) and send its alert on the first read: `Receive failed: … alert bad
            // certificate`.
            RDKafkaErrorCode::BrokerTransportFailure
                if lowercase.contains("ssl routines")
                    && lowercase.contains(" alert ")
                    && refuses_a_certificate(&lowercase) =>
            {
                Some(tls(reason))
            }
            _ => None,
        }
    }
}

/// `key` of `config`, unless empty.
fn setting(config: &ClientConfig, key: &str) -> Option<String> {
    config
        .get(key)
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}

/// Whether a TLS error's reason (lowercase) is a refusal of a certificate or key rather than
/// a connection cut during the handshake (see the module docs).
fn refuses_a_certificate(reason: &str) -> bool {
    if reason.contains("disconnected") && !reason.contains("alert") {
        return false;
    }
    [
        "certificate",
        "alert",
        "verify",
        "private key",
        "key values mismatch",
        "unknown ca",
        "handshake failure",
    ]
    .iter()
    .any(|word| reason.contains(word))
}

/// A client context that keeps the first [`AuthFailure`] its client reports (and logs the
/// other error events at debug: a short-lived client reports its outcome itself).
#[derive(Clone)]
pub struct AuthWatch {
    config: Arc<ClientConfig>,
    failure: Arc<OnceLock<AuthFailure>>,
}

impl AuthWatch {
    /// A watch for a client made from `config`.
    pub fn new(config: &ClientConfig) -> Self {
        AuthWatch {
            config: Arc::new(config.clone()),
            failure: Arc::default(),
        }
    }

    /// The first authentication failure reported, if any.
    pub fn failure(&self) -> Option<AuthFailure> {
        self.failure.get().cloned()
    }

    /// Asks `consumer` (made with this watch as its context) for the cluster's metadata
    /// (`topic`: one topic's, else all), within `timeout`. While it waits, librdkafka's error
    /// events are served every 100 ms, so that a refused login ends the wait at once.
    ///
    /// # Errors
    /// [`MetadataError::Auth`] when the brokers refuse the client; [`MetadataError::Kafka`]
    /// when no broker answers within `timeout`.
    pub fn fetch_metadata(
        &self,
        consumer: &BaseConsumer<AuthWatch>,
        topic: Option<&str>,
        timeout: Duration,
    ) -> Result<Metadata, MetadataError> {
        const STEP: Duration = Duration::from_millis(100);
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let result = consumer.fetch_metadata(topic, left.min(STEP));
            // Serves the error events queued meanwhile (the context records a failure).
            let _ = consumer.poll(Duration::ZERO);
            if let Some(failure) = self.failure() {
                return Err(MetadataError::Auth(failure));
            }
            match result {
                Ok(metadata) => return Ok(metadata),
                Err(error) if Instant::now() >= deadline => {
                    return Err(MetadataError::Kafka(error))
                }
                Err(_) => {}
            }
        }
    }
}

/// Whether the brokers of `config` refuse its credentials: asks for metadata with an
/// [`AuthWatch`] for at most `timeout`. Blocking. Only a refusal is an answer: brokers that
/// are down or slow are not this check's business (the caller's own requests time out and
/// say so), so they count as `Ok`.
///
/// # Errors
/// The [`AuthFailure`] librdkafka reported.
pub fn check_credentials(config: &ClientConfig, timeout: Duration) -> Result<(), AuthFailure> {
    let watch = AuthWatch::new(config);
    // A client librdkafka refuses to create fails the caller's own clients the same way.
    let Ok(consumer) = config.create_with_context::<_, BaseConsumer<AuthWatch>>(watch.clone())
    else {
        return Ok(());
    };
    match watch.fetch_metadata(&consumer, None, timeout) {
        Err(MetadataError::Auth(failure)) => Err(failure),
        Ok(_) | Err(MetadataError::Kafka(_)) => Ok(()),
    }
}

/// Why [`AuthWatch::fetch_metadata`] got no metadata.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The brokers refused the client.
    #[error(transparent)]
    Auth(AuthFailure),
    /// No broker answered.
    #[error("{0}")]
    Kafka(KafkaError),
}

impl ClientContext for AuthWatch {
    fn error(&self, error: KafkaError, reason: &str) {
        match AuthFailure::from_event(&error, reason, &self.config) {
            Some(failure) => {
                let _ = self.failure.set(failure);
            }
            None => tracing::debug!(%error, reason, "kafka client error"),
        }
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!(target: "librdkafka", ?level, "librdkafka: {fac} {message}");
    }
}

impl ConsumerContext for AuthWatch {}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in pairs {
            config.set(*key, *value);
        }
        config
    }

    fn event(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::Global(code)
    }

    #[test]
    fn a_refused_sasl_login_names_the_mechanism_and_protocol() {
        let config = config(&[
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.password", "hunter2"),
        ]);
        let failure = AuthFailure::from_event(
            &event(RDKafkaErrorCode::Authentication),
            "SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512",
            &config,
        )
        .expect("an authentication failure");
        let text = failure.to_string();
        assert!(
            text.starts_with("SASL authentication failed (SCRAM-SHA-512 over SASL_SSL): "),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn sasl_mechanism_defaults_to_gssapi_and_reads_the_plural_alias() {
        let failure = |config: &ClientConfig| {
            AuthFailure::from_event(&event(RDKafkaErrorCode::Authentication), "refused", config)
        };
        assert!(matches!(
            failure(&config(&[("security.protocol", "SASL_PLAINTEXT")])),
            Some(AuthFailure::Sasl { mechanism, .. }) if mechanism == "GSSAPI"
        ));
        assert!(matches!(
            failure(&config(&[("security.protocol", "SASL_PLAINTEXT"), ("sasl.mechanisms", "plain")])),
            Some(AuthFailure::Sasl { mechanism, .. }) if mechanism == "PLAIN"
        ));
    }

    #[test]
    fn a_refused_certificate_is_an_authentication_failure_and_a_cut_handshake_is_not() {
        let mutual = config(&[
            ("security.protocol", "SSL"),
            ("ssl.certificate.location", "/etc/client.pem"),
        ]);
        let refused = AuthFailure::from_event(
            &event(RDKafkaErrorCode::SSL),
            "SSL handshake failed: ssl/record/rec_layer_s3.c:1605: error:0A000418:SSL routines::tlsv1 alert unknown ca",
            &mutual,
        );
        assert!(
            matches!(&refused, Some(AuthFailure::Tls { mechanism, protocol, .. }) if mechanism == "client certificate" && protocol == "SSL"),
            "{refused:?}"
        );
        let untrusted_broker = AuthFailure::from_event(
            &event(RDKafkaErrorCode::SSL),
            "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: broker certificate could not be verified",
            &config(&[("security.protocol", "SASL_SSL"), ("sasl.mechanism", "PLAIN")]),
        );
        assert!(
            matches!(&untrusted_broker, Some(AuthFailure::Tls { mechanism, .. }) if mechanism == "PLAIN"),
            "{untrusted_broker:?}"
        );
        let alert_on_read = AuthFailure::from_event(
            &event(RDKafkaErrorCode::BrokerTransportFailure),
            "ssl://127.0.0.1:9093/bootstrap: Receive failed: error:0A000412:SSL routines::sslv3 alert bad certificate: SSL alert number 42 (after 0ms in state APIVERSION_QUERY)",
            &mutual,
        );
        assert!(
            matches!(&alert_on_read, Some(AuthFailure::Tls { .. })),
            "{alert_on_read:?}"
        );
        assert_eq!(
            AuthFailure::from_event(
                &event(RDKafkaErrorCode::BrokerTransportFailure),
                "ssl://127.0.0.1:9093/bootstrap: Receive failed: Disconnected",
                &mutual
            ),
            None
        );
        assert_eq!(
            AuthFailure::from_event(
                &event(RDKafkaErrorCode::SSL),
                "SSL handshake failed: Disconnected: connecting to a PLAINTEXT broker listener?",
                &mutual
            ),
            None
        );
    }

    #[test]
    fn an_oauthbearer_token_that_could_not_be_fetched_is_retried_not_a_refusal() {
        let config = config(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "OAUTHBEARER"),
        ]);
        assert_eq!(
            AuthFailure::from_event(
                &event(RDKafkaErrorCode::Authentication),
                "Failed to acquire SASL OAUTHBEARER token: token endpoint answered 503",
                &config
            ),
            None
        );
        assert!(AuthFailure::from_event(
            &event(RDKafkaErrorCode::Authentication),
            "SASL authentication error: Authentication failed: Invalid JWT",
            &config
        )
        .is_some());
    }

    #[test]
    fn other_errors_are_not_authentication_failures() {
        let config = config(&[("security.protocol", "SASL_SSL")]);
        for code in [
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::Resolve,
        ] {
            assert_eq!(
                AuthFailure::from_event(&event(code), "Connection refused", &config),
                None
            );
        }
    }
}
