//! Webhook signature verification over the raw request body.
//!
//! A webhook receiver must prove that a push came from the provider before any record is
//! produced. Each scheme is one [`SignatureScheme`] variant:
//!
//! - GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 of the body keyed with the secret
//!   text (docs.github.com, "Validating webhook deliveries").
//! - Stripe: `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=…]` over `"{t}.{body}"`, keyed
//!   with the endpoint secret (`whsec_…`) as-is (docs.stripe.com, "Verify webhook signatures
//!   manually"). Other schemes such as `v0` are ignored.
//! - Standard Webhooks: `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64>
//!   [v1,…]` over `"{id}.{timestamp}.{body}"`, keyed with the base64-decoded part after `whsec_`
//!   (standardwebhooks.com, `spec/standard-webhooks.md`, "Verifying webhooks"). Other versions
//!   are ignored.
//! - Generic: HMAC-SHA256 of the body in a configured header, hex or base64, optional prefix.
//!
//! Each scheme holds every active secret, so a secret can be rotated without losing deliveries.
//! MACs are compared in constant time, over the body bytes exactly as received. Where a
//! timestamp is signed, the signature is checked first: `rejected_timestamp` then counts only
//! authentic deliveries that came late or were replayed, and a forgery always counts as
//! `rejected_signature`.
//!
//! No I/O and no clock: the caller passes headers, body and `now`. A replay inside the
//! tolerance is not detected here; the receiver deduplicates on [`Verified::delivery_id`].

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How far a signed timestamp may be from `now`, either way, unless configured otherwise:
/// 300 s, the default of Stripe's and the Standard Webhooks libraries.
pub const DEFAULT_TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(300);

const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
const GITHUB_DELIVERY: &str = "x-github-delivery";
const STRIPE_SIGNATURE: &str = "stripe-signature";
const WEBHOOK_ID: &str = "webhook-id";
const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
const WEBHOOK_SIGNATURE: &str = "webhook-signature";
/// Standard-alphabet base64 with or without its `=` padding.
const BASE64_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A verified delivery: what the receiver needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The provider's id for the delivery, when the scheme has one: `webhook-id` (Standard
    /// Webhooks; the same on every retry of a message) or `X-GitHub-Delivery` (GitHub, when
    /// sent). The key for deduplication and the `tributary.event_id` record header.
    pub delivery_id: Option<String>,
    /// The signed timestamp (Stripe `t=`, `webhook-timestamp`), whole seconds, if any.
    pub signed_at: Option<SystemTime>,
    /// Position of the matching secret in the configured list (0 = first): shows when an old
    /// secret is no longer used and can be removed.
    pub secret_index: usize,
}

/// Why a delivery was refused. Messages name the header (in lowercase); they never contain a
/// secret or the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A header the scheme needs is absent.
    #[error("missing header `{header}`")]
    MissingHeader {
        /// The header's name.
        header: String,
    },
    /// A header cannot be read: wrong prefix, bad encoding, no supported signature version, a
    /// timestamp that is not a number, or the header sent twice.
    #[error("malformed header `{header}`: {problem}")]
    MalformedHeader {
        /// The header's name.
        header: String,
        /// What is wrong with it.
        problem: String,
    },
    /// No signature in the header matches the body under any active secret.
    #[error("header `{header}`: signature does not match any active secret")]
    SignatureMismatch {
        /// The signature header's name.
        header: String,
    },
    /// The signature is valid but the signed timestamp is further from `now` than the
    /// tolerance: a late delivery, a replay or a skewed clock.
    #[error("header `{header}`: timestamp `{timestamp}` is {}, beyond the tolerance of {tolerance_seconds} s", describe_age(*.age_seconds))]
    TimestampOutsideTolerance {
        /// The timestamp header's name.
        header: String,
        /// The signed timestamp, seconds since the Unix epoch.
        timestamp: u64,
        /// `now` minus `timestamp`, seconds; negative when the timestamp is in the future.
        age_seconds: i64,
        /// The configured tolerance, seconds.
        tolerance_seconds: u64,
    },
}

fn describe_age(age_seconds: i64) -> String {
    if age_seconds < 0 {
        format!("{} s in the future", age_seconds.unsigned_abs())
    } else {
        format!("{age_seconds} s old")
    }
}

impl Rejection {
    /// The metric outcome: `"rejected_timestamp"` for a timestamp outside the tolerance,
    /// `"rejected_signature"` for anything else (unreadable headers cannot authenticate).
    pub fn outcome(&self) -> &'static str {
        match self {
            Rejection::TimestampOutsideTolerance { .. } => "rejected_timestamp",
            _ => "rejected_signature",
        }
    }
}

/// How a generic HMAC signature is written in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureEncoding {
    /// Hexadecimal, either case.
    Hex,
    /// Standard-alphabet base64 (RFC 4648 §4), with or without `=` padding.
    Base64,
}

/// A validated signature scheme with its active secrets. `Debug` never shows the secrets.
#[derive(Debug, Clone)]
pub enum SignatureScheme {
    /// GitHub `X-Hub-Signature-256`.
    GitHub(GitHubScheme),
    /// Stripe `Stripe-Signature`.
    Stripe(StripeScheme),
    /// Standard Webhooks `webhook-signature`.
    StandardWebhooks(StandardWebhooksScheme),
    /// HMAC-SHA256 of the raw body in a configured header.
    GenericHmac(GenericHmacScheme),
}

impl SignatureScheme {
    /// Checks a delivery's signature from its `headers` (names matched case-insensitively) and
    /// raw `body`; signed timestamps are compared with `now`.
    ///
    /// # Errors
    /// A missing or malformed header, no matching signature, or a signed timestamp outside the
    /// tolerance.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Verified, Rejection> {
        match self {
            SignatureScheme::GitHub(scheme) => scheme.verify(headers, body),
            SignatureScheme::Stripe(scheme) => scheme.verify(headers, body, now),
            SignatureScheme::StandardWebhooks(scheme) => scheme.verify(headers, body, now),
            SignatureScheme::GenericHmac(scheme) => scheme.verify(headers, body),
        }
    }
}

/// GitHub: `X-Hub-Signature-256: sha256=<hex>` over the body; the secret text is the key.
#[derive(Debug, Clone)]
pub struct GitHubScheme(GenericHmacScheme);

impl GitHubScheme {
    /// Builds the scheme from the active secrets, oldest first.
    ///
    /// # Errors
    /// The list is empty or a secret is empty.
    pub fn try_new(secrets: &[SecretString]) -> Result<Self, String> {
        let hex = SignatureEncoding::Hex;
        GenericHmacScheme::try_new(secrets, GITHUB_SIGNATURE, hex, Some("sha256=")).map(Self)
    }

    /// The `X-Hub-Signature-256` value for `body` signed with `secret`. For tests and tools
    /// that need a valid delivery; the receiver never signs.
    pub fn sign(secret: &str, body: &[u8]) -> String {
        format!("sha256={}", hex::encode(mac(secret.as_bytes(), &[body])))
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Verified, Rejection> {
        let verified = self.0.verify(headers, body)?;
        let delivery_id = headers.get(GITHUB_DELIVERY).and_then(|v| v.to_str().ok());
        let delivery_id = delivery_id.map(str::to_owned);
        Ok(Verified {
            delivery_id,
            ..verified
        })
    }
}

/// Stripe: `Stripe-Signature: t=…,v1=…` over `"{t}.{body}"`; the `whsec_…` text is the key.
#[derive(Debug, Clone)]
pub struct StripeScheme {
    keys: Keys,
    tolerance: Duration,
}

impl StripeScheme {
    /// Builds the scheme from the endpoint's active signing secrets (`whsec_…`, oldest first)
    /// and the largest accepted distance between `t=` and `now`, at least 1 s (default
    /// [`DEFAULT_TIMESTAMP_TOLERANCE`]).
    ///
    /// # Errors
    /// The list is empty, a secret does not start with `whsec_`, or the tolerance is under 1 s.
    pub fn try_new(secrets: &[SecretString], tolerance: Duration) -> Result<Self, String> {
        let keys = Keys::try_new(secrets, |text| {
            if !text.starts_with("whsec_") {
                let problem = "does not start with `whsec_`; use the endpoint's signing secret";
                return Err(format!("{problem}, not an API key"));
            }
            Ok(text.as_bytes().to_vec())
        })?;
        let tolerance = validate_tolerance(tolerance)?;
        Ok(StripeScheme { keys, tolerance })
    }

    /// The `Stripe-Signature` value for `body` signed with `secret` at `timestamp` (seconds
    /// since the Unix epoch). For tests and tools that need a valid delivery; the receiver
    /// never signs.
    pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
        let tag = mac(
            secret.as_bytes(),
            &[timestamp.to_string().as_bytes(), b".", body],
        );
        format!("t={timestamp},v1={}", hex::encode(tag))
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Verified, Rejection> {
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for item in single_header(headers, STRIPE_SIGNATURE)?.split(',') {
            match item.trim().split_once('=') {
                Some(("t", _)) if timestamp.is_some() => {
                    return Err(malformed(STRIPE_SIGNATURE, "more than one `t=`"));
                }
                Some(("t", text)) => timestamp = Some(text),
                // A value that is not hex never matches, and does not spoil the others.
                Some(("v1", digits)) => signatures.push(hex::decode(digits).unwrap_or_default()),
                _ => {}
            }
        }
        let timestamp =
            timestamp.ok_or_else(|| malformed(STRIPE_SIGNATURE, "no `t=` timestamp"))?;
        let timestamp = parse_timestamp(STRIPE_SIGNATURE, timestamp)?;
        if signatures.is_empty() {
            let problem = "no `v1=` signature (other schemes such as `v0` are not accepted)";
            return Err(malformed(STRIPE_SIGNATURE, problem));
        }
        // Stripe's libraries sign the parsed number, so leading zeros would not count.
        let signed_timestamp = timestamp.to_string();
        let parts = [signed_timestamp.as_bytes(), b".", body];
        let secret_index = self.keys.matching(&parts, &signatures, STRIPE_SIGNATURE)?;
        let signed_at = check_timestamp(STRIPE_SIGNATURE, timestamp, self.tolerance, now)?;
        Ok(Verified {
            delivery_id: None,
            signed_at: Some(signed_at),
            secret_index,
        })
    }
}

/// Standard Webhooks: `webhook-signature: v1,<base64>` over `"{id}.{timestamp}.{body}"`; the
/// key is the base64 after `whsec_`.
#[derive(Debug, Clone)]
pub struct StandardWebhooksScheme {
    keys: Keys,
    tolerance: Duration,
}

impl StandardWebhooksScheme {
    /// Builds the scheme from the active secrets (`whsec_<base64>`, oldest first) and the
    /// largest accepted distance between `webhook-timestamp` and `now`, at least 1 s (default
    /// [`DEFAULT_TIMESTAMP_TOLERANCE`]).
    ///
    /// # Errors
    /// The list is empty, a secret lacks the `whsec_` prefix or its base64 is invalid or empty,
    /// or the tolerance is under 1 s.
    pub fn try_new(secrets: &[SecretString], tolerance: Duration) -> Result<Self, String> {
        let keys = Keys::try_new(secrets, standard_webhooks_key)?;
        let tolerance = validate_tolerance(tolerance)?;
        Ok(StandardWebhooksScheme { keys, tolerance })
    }

    /// The `webhook-signature` value (`v1,<base64>`) for message `id` with `body` at
    /// `timestamp` (seconds since the Unix epoch), signed with `secret` (`whsec_<base64>`). For
    /// tests and tools that need a valid delivery; the receiver never signs.
    ///
    /// # Errors
    /// `secret` is not a valid Standard Webhooks secret.
    pub fn sign(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> Result<String, String> {
        let timestamp = timestamp.to_string();
        let parts = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
        Ok(format!(
            "v1,{}",
            STANDARD.encode(mac(&standard_webhooks_key(secret)?, &parts))
        ))
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Verified, Rejection> {
        let id = single_header(headers, WEBHOOK_ID)?;
        if id.is_empty() {
            return Err(malformed(WEBHOOK_ID, "is empty"));
        }
        let timestamp = single_header(headers, WEBHOOK_TIMESTAMP)?;
        let timestamp = parse_timestamp(WEBHOOK_TIMESTAMP, timestamp)?;
        let signatures: Vec<Vec<u8>> = single_header(headers, WEBHOOK_SIGNATURE)?
            .split(' ')
            .filter_map(|entry| entry.strip_prefix("v1,"))
            // A value that is not base64 never matches, and does not spoil the others.
            .map(|encoded| STANDARD.decode(encoded).unwrap_or_default())
            .collect();
        if signatures.is_empty() {
            let problem = "no `v1,` signature (other versions are not accepted)";
            return Err(malformed(WEBHOOK_SIGNATURE, problem));
        }
        let signed_timestamp = timestamp.to_string();
        let parts = [id.as_bytes(), b".", signed_timestamp.as_bytes(), b".", body];
        let secret_index = self.keys.matching(&parts, &signatures, WEBHOOK_SIGNATURE)?;
        let signed_at = check_timestamp(WEBHOOK_TIMESTAMP, timestamp, self.tolerance, now)?;
        let delivery_id = Some(id.to_owned());
        Ok(Verified {
            delivery_id,
            signed_at: Some(signed_at),
            secret_index,
        })
    }
}

/// Generic: HMAC-SHA256 of the raw body in a configured header; the secret text is the key.
#[derive(Debug, Clone)]
pub struct GenericHmacScheme {
    keys: Keys,
    header: HeaderName,
    encoding: SignatureEncoding,
    /// Text before the signature, such as `sha256=`; empty when there is none.
    prefix: String,
}

impl GenericHmacScheme {
    /// Builds the scheme from the active secrets (oldest first), the signature header's name,
    /// the signature's encoding, and the text before it, if any (`Some("sha256=")`).
    ///
    /// # Errors
    /// The list is empty, a secret is empty, or `header` is not a valid header name.
    pub fn try_new(
        secrets: &[SecretString],
        header: &str,
        encoding: SignatureEncoding,
        prefix: Option<&str>,
    ) -> Result<Self, String> {
        let keys = Keys::try_new(secrets, |text| Ok(text.as_bytes().to_vec()))?;
        let header = HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| format!("`{header}` is not a valid header name"))?;
        let prefix = prefix.unwrap_or_default().to_owned();
        Ok(GenericHmacScheme {
            keys,
            header,
            encoding,
            prefix,
        })
    }

    /// The header value this scheme expects for `body` signed with `secret`. For tests and
    /// tools that need a valid delivery; the receiver never signs.
    pub fn sign(&self, secret: &str, body: &[u8]) -> String {
        let tag = mac(secret.as_bytes(), &[body]);
        match self.encoding {
            SignatureEncoding::Hex => format!("{}{}", self.prefix, hex::encode(tag)),
            SignatureEncoding::Base64 => format!("{}{}", self.prefix, STANDARD.encode(tag)),
        }
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Verified, Rejection> {
        let name = self.header.as_str();
        let value = single_header(headers, name)?;
        let Some(encoded) = value.strip_prefix(self.prefix.as_str()) else {
            return Err(malformed(
                name,
                &format!("does not start with `{}`", self.prefix),
            ));
        };
        let (decoded, expected) = match self.encoding {
            SignatureEncoding::Hex => (hex::decode(encoded).ok(), "64 hex digits"),
            SignatureEncoding::Base64 => (
                BASE64_ANY_PADDING.decode(encoded).ok(),
                "32 bytes of base64",
            ),
        };
        let signature = match decoded {
            Some(signature) if signature.len() == 32 => signature,
            _ => return Err(malformed(name, &format!("signature is not {expected}"))),
        };
        let secret_index = self.keys.matching(&[body], &[signature], name)?;
        Ok(Verified {
            delivery_id: None,
            signed_at: None,
            secret_index,
        })
    }
}

/// The active HMAC keys of one scheme, oldest first. `Debug` shows only how many there are.
#[derive(Clone)]
struct Keys(Vec<SecretSlice<u8>>);

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[REDACTED; {}]", self.0.len())
    }
}

impl Keys {
    /// Turns each secret into key bytes with `key_of`, whose error ends "secret N of M …".
    fn try_new(
        secrets: &[SecretString],
        key_of: impl Fn(&str) -> Result<Vec<u8>, String>,
    ) -> Result<Self, String> {
        if secrets.is_empty() {
            return Err("no secrets configured; give at least one (two while rotating)".into());
        }
        let count = secrets.len();
        let key = |(index, secret): (usize, &SecretString)| {
            let text = secret.expose_secret();
            let key = if text.is_empty() {
                Err("is empty".to_owned())
            } else {
                key_of(text)
            };
            key.map(SecretSlice::from)
                .map_err(|problem| format!("secret {} of {count} {problem}", index + 1))
        };
        Ok(Keys(
            secrets
                .iter()
                .enumerate()
                .map(key)
                .collect::<Result<_, _>>()?,
        ))
    }

    /// The index of the first key under which the MAC of `parts`, concatenated, equals one of
    /// `signatures` (compared in constant time).
    fn matching(
        &self,
        parts: &[&[u8]],
        signatures: &[Vec<u8>],
        header: &str,
    ) -> Result<usize, Rejection> {
        let matches = |key: &SecretSlice<u8>| {
            let tag = mac(key.expose_secret(), parts);
            signatures
                .iter()
                .any(|signature| bool::from(tag[..].ct_eq(&signature[..])))
        };
        let mismatch = || Rejection::SignatureMismatch {
            header: header.to_owned(),
        };
        self.0.iter().position(matches).ok_or_else(mismatch)
    }
}

/// HMAC-SHA256 of `parts`, concatenated, under `key`.
fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    parts.iter().for_each(|part| mac.update(part));
    mac.finalize().into_bytes().into()
}

fn standard_webhooks_key(secret: &str) -> Result<Vec<u8>, String> {
    let Some(encoded) = secret.strip_prefix("whsec_") else {
        return Err(
            "does not start with `whsec_`; copy the secret as the provider shows it".into(),
        );
    };
    match STANDARD.decode(encoded) {
        Ok(key) if !key.is_empty() => Ok(key),
        Ok(_) => Err("has nothing after `whsec_`".into()),
        Err(_) => Err("is not valid base64 after `whsec_`".into()),
    }
}

fn validate_tolerance(tolerance: Duration) -> Result<Duration, String> {
    if tolerance < Duration::from_secs(1) {
        return Err(format!(
            "timestamp tolerance {tolerance:?} is under 1 s; the default is 300 s"
        ));
    }
    Ok(tolerance)
}

fn malformed(header: &str, problem: &str) -> Rejection {
    Rejection::MalformedHeader {
        header: header.to_owned(),
        problem: problem.to_owned(),
    }
}

/// The value of header `name`, which must be sent exactly once and be visible ASCII.
fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, Rejection> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Err(Rejection::MissingHeader {
            header: name.to_owned(),
        });
    };
    if values.next().is_some() {
        return Err(malformed(name, "is sent more than once"));
    }
    value
        .to_str()
        .map_err(|_| malformed(name, "is not visible ASCII"))
}

/// Seconds since the Unix epoch, written as ASCII digits.
fn parse_timestamp(header: &str, text: &str) -> Result<u64, Rejection> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(
            header,
            "timestamp is not whole seconds since the Unix epoch",
        ));
    }
    text.parse()
        .map_err(|_| malformed(header, "timestamp is empty or too large"))
}

/// `timestamp` as a time, or a rejection when it is more than `tolerance` from `now` either way.
fn check_timestamp(
    header: &str,
    timestamp: u64,
    tolerance: Duration,
    now: SystemTime,
) -> Result<SystemTime, Rejection> {
    let now_seconds = match now.duration_since(UNIX_EPOCH) {
        Ok(since) => i128::from(since.as_secs()),
        Err(before) => -i128::from(before.duration().as_secs()),
    };
    let age = now_seconds - i128::from(timestamp);
    if age.unsigned_abs() > u128::from(tolerance.as_secs()) {
        return Err(Rejection::TimestampOutsideTolerance {
            header: header.to_owned(),
            timestamp,
            age_seconds: i64::try_from(age).unwrap_or(if age < 0 { i64::MIN } else { i64::MAX }),
            tolerance_seconds: tolerance.as_secs(),
        });
    }
    // Within the tolerance of `now`, so this cannot overflow.
    Ok(UNIX_EPOCH + Duration::from_secs(timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::Value;

    /// GitHub and Standard Webhooks vectors, checked with the providers' official libraries;
    /// origin and licences in `tests/data/webhook-signatures/SOURCE.txt`.
    const VECTORS: &str = include_str!("../../../tests/data/webhook-signatures/vectors.json");
    const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const STRIPE_SECRET: &str = "whsec_stripe_endpoint_secret";
    const NOW: u64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1","type":"invoice.paid"}"#;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn secrets(texts: &[&str]) -> Vec<SecretString> {
        texts.iter().map(|&text| text.into()).collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            map.append(name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn github(texts: &[&str]) -> SignatureScheme {
        SignatureScheme::GitHub(GitHubScheme::try_new(&secrets(texts)).unwrap())
    }

    fn stripe(texts: &[&str]) -> SignatureScheme {
        let tolerance = DEFAULT_TIMESTAMP_TOLERANCE;
        SignatureScheme::Stripe(StripeScheme::try_new(&secrets(texts), tolerance).unwrap())
    }

    fn standard(texts: &[&str]) -> SignatureScheme {
        let scheme = StandardWebhooksScheme::try_new(&secrets(texts), DEFAULT_TIMESTAMP_TOLERANCE);
        SignatureScheme::StandardWebhooks(scheme.unwrap())
    }

    fn standard_request(id: &str, timestamp: u64, signature: &str) -> HeaderMap {
        let timestamp = timestamp.to_string();
        let pairs = [(WEBHOOK_ID, id), (WEBHOOK_TIMESTAMP, &timestamp)];
        headers(&[pairs[0], pairs[1], (WEBHOOK_SIGNATURE, signature)])
    }

    fn mismatch(header: &str) -> Result<Verified, Rejection> {
        Err(Rejection::SignatureMismatch {
            header: header.into(),
        })
    }

    fn assert_malformed(result: Result<Verified, Rejection>, case: &str) {
        assert!(
            matches!(result, Err(Rejection::MalformedHeader { .. })),
            "{case}: {result:?}"
        );
    }

    #[test]
    fn every_vector_gives_its_verdict() {
        let all: Value = serde_json::from_str(VECTORS).unwrap();
        for kind in ["github_x_hub_signature_256", "standard_webhooks"] {
            let vectors = all[kind].as_array().expect(kind);
            assert!(!vectors.is_empty(), "vectors.json has no `{kind}` vectors");
            for vector in vectors {
                let text = |key: &str| vector[key].as_str().unwrap();
                let (name, secret, body) = (text("name"), text("secret"), text("body").as_bytes());
                let sent = vector["header"].as_object().unwrap();
                let header = |key: &str| sent[key].as_str().unwrap();
                let pairs: Vec<_> = sent.keys().map(|key| (key.as_str(), header(key))).collect();
                let (verdict, signed) = if kind == "standard_webhooks" {
                    // The vectors' timestamps are years old: verify at each vector's own time.
                    let (id, timestamp) = (header(WEBHOOK_ID), header(WEBHOOK_TIMESTAMP));
                    let timestamp: u64 = timestamp.parse().unwrap();
                    let verdict = standard(&[secret]).verify(&headers(&pairs), body, at(timestamp));
                    if let Ok(verified) = &verdict {
                        assert_eq!(verified.delivery_id.as_deref(), Some(id), "{name}");
                        assert_eq!(verified.signed_at, Some(at(timestamp)), "{name}");
                    }
                    let signed = StandardWebhooksScheme::sign(secret, id, timestamp, body);
                    (verdict, signed.unwrap())
                } else {
                    let verdict = github(&[secret]).verify(&headers(&pairs), body, at(NOW));
                    (verdict, GitHubScheme::sign(secret, body))
                };
                let valid = vector["valid"].as_bool().unwrap();
                assert_eq!(verdict.is_ok(), valid, "{name}: {verdict:?}");
                // `sign` reproduces a signature the provider's library accepted.
                let sent_signature = header(if kind == "standard_webhooks" {
                    WEBHOOK_SIGNATURE
                } else {
                    "X-Hub-Signature-256"
                });
                assert_eq!(
                    sent_signature.split(' ').any(|s| s == signed),
                    valid,
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn github_reads_the_delivery_id_and_rejects_bad_headers() {
        let scheme = github(&["s3cret"]);
        let signature = GitHubScheme::sign("s3cret", BODY);
        let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
        let request = headers(&[
            ("X-Hub-Signature-256", &signature),
            ("X-GitHub-Delivery", delivery),
        ]);
        let verified = scheme.verify(&request, BODY, at(NOW)).unwrap();
        assert_eq!(verified.delivery_id.as_deref(), Some(delivery));
        assert_eq!((verified.signed_at, verified.secret_index), (None, 0));
        let without_id = headers(&[("x-hub-SIGNATURE-256", &signature)]);
        assert_eq!(
            scheme
                .verify(&without_id, BODY, at(NOW))
                .unwrap()
                .delivery_id,
            None
        );
        assert_eq!(
            scheme.verify(&request, b"{}", at(NOW)),
            mismatch(GITHUB_SIGNATURE)
        );
        let missing = Rejection::MissingHeader {
            header: GITHUB_SIGNATURE.into(),
        };
        assert_eq!(
            scheme.verify(&HeaderMap::new(), BODY, at(NOW)),
            Err(missing)
        );
        let digits = &signature["sha256=".len()..];
        for bad in [
            digits.to_owned(),
            format!("sha1={digits}"),
            format!("sha256={}", &digits[2..]),
            format!("sha256=zz{}", &digits[2..]),
        ] {
            let result = scheme.verify(&headers(&[(GITHUB_SIGNATURE, &bad)]), BODY, at(NOW));
            assert_malformed(result, &bad);
        }
        let twice = headers(&[
            (GITHUB_SIGNATURE, &signature),
            (GITHUB_SIGNATURE, &signature),
        ]);
        assert_malformed(scheme.verify(&twice, BODY, at(NOW)), "sent twice");
    }

    #[test]
    fn stripe_signs_timestamp_dot_body_and_accepts_any_v1() {
        // Stripe's documented scheme, computed without `sign`.
        let mut expected = Hmac::<Sha256>::new_from_slice(STRIPE_SECRET.as_bytes()).unwrap();
        expected.update(format!("{NOW}.").as_bytes());
        expected.update(BODY);
        let digits = hex::encode(expected.finalize().into_bytes());
        let value = StripeScheme::sign(STRIPE_SECRET, NOW, BODY);
        assert_eq!(value, format!("t={NOW},v1={digits}"));

        let scheme = stripe(&[STRIPE_SECRET]);
        let verified = scheme.verify(&headers(&[("Stripe-Signature", &value)]), BODY, at(NOW));
        let verified = verified.unwrap();
        assert_eq!(
            (verified.signed_at, verified.delivery_id),
            (Some(at(NOW)), None)
        );
        let wrong = StripeScheme::sign("whsec_other", NOW, BODY);
        let wrong = &wrong[wrong.find("v1=").unwrap() + 3..];
        for value in [
            format!("t={NOW},v1={wrong},v1={digits}"),
            format!("t={NOW},v0={digits},v1=not-hex,v1={digits}"),
            format!("v1={digits}, t={NOW}, other=ignored"),
        ] {
            let request = headers(&[(STRIPE_SIGNATURE, &value)]);
            assert!(scheme.verify(&request, BODY, at(NOW)).is_ok(), "{value}");
        }
    }

    #[test]
    fn stripe_rejections() {
        let scheme = stripe(&[STRIPE_SECRET]);
        let verify = |value: &str, body: &[u8]| {
            scheme.verify(&headers(&[(STRIPE_SIGNATURE, value)]), body, at(NOW))
        };
        let good = StripeScheme::sign(STRIPE_SECRET, NOW, BODY);
        let digits = &good[good.find("v1=").unwrap() + 3..];
        let wrong_secret = StripeScheme::sign("whsec_wrong", NOW, BODY);
        assert_eq!(verify(&wrong_secret, BODY), mismatch(STRIPE_SIGNATURE));
        assert_eq!(verify(&good, b"{}"), mismatch(STRIPE_SIGNATURE));
        let moved = format!("t={},v1={digits}", NOW + 1);
        assert_eq!(
            verify(&moved, BODY),
            mismatch(STRIPE_SIGNATURE),
            "t= is signed"
        );
        for bad in [
            format!("v1={digits}"),
            format!("t={NOW},v0={digits}"),
            format!("t=soon,v1={digits}"),
            format!("t=,v1={digits}"),
            format!("t={NOW},t={NOW},v1={digits}"),
        ] {
            assert_malformed(verify(&bad, BODY), &bad);
        }
        let missing = scheme.verify(&HeaderMap::new(), BODY, at(NOW)).unwrap_err();
        assert_eq!(missing.to_string(), "missing header `stripe-signature`");
    }

    #[test]
    fn timestamps_must_be_within_tolerance_both_ways() {
        let stripe_request = headers(&[(STRIPE_SIGNATURE, &StripeScheme::sign(WHSEC, NOW, BODY))]);
        let signature = StandardWebhooksScheme::sign(WHSEC, "msg_1", NOW, BODY).unwrap();
        let cases = [
            (stripe(&[WHSEC]), stripe_request, STRIPE_SIGNATURE),
            (
                standard(&[WHSEC]),
                standard_request("msg_1", NOW, &signature),
                WEBHOOK_TIMESTAMP,
            ),
        ];
        for (scheme, request, header) in cases {
            for now in [NOW - 300, NOW + 300] {
                assert!(
                    scheme.verify(&request, BODY, at(now)).is_ok(),
                    "{header} at {now}"
                );
            }
            let too_old = scheme.verify(&request, BODY, at(NOW + 301)).unwrap_err();
            let expected = Rejection::TimestampOutsideTolerance {
                header: header.into(),
                timestamp: NOW,
                age_seconds: 301,
                tolerance_seconds: 300,
            };
            assert_eq!(too_old, expected);
            assert_eq!(too_old.outcome(), "rejected_timestamp");
            let message = format!("header `{header}`: timestamp `{NOW}` is 301 s old, beyond the");
            assert!(too_old.to_string().starts_with(&message), "{too_old}");
            let future = scheme.verify(&request, BODY, at(NOW - 3600)).unwrap_err();
            assert_eq!(future.outcome(), "rejected_timestamp");
            assert!(
                future.to_string().contains("3600 s in the future"),
                "{future}"
            );
            // A forgery is a signature rejection, however old its timestamp.
            let forged = scheme
                .verify(&request, b"forged", at(NOW + 3600))
                .unwrap_err();
            assert_eq!(forged.outcome(), "rejected_signature");
        }
    }

    #[test]
    fn standard_webhooks_signs_id_and_timestamp_and_needs_every_header() {
        let scheme = standard(&[WHSEC]);
        let signature = StandardWebhooksScheme::sign(WHSEC, "msg_1", NOW, BODY).unwrap();
        let request = standard_request("msg_1", NOW, &signature);
        assert!(scheme.verify(&request, BODY, at(NOW)).is_ok());
        let other_id = standard_request("msg_2", NOW, &signature);
        assert_eq!(
            scheme.verify(&other_id, BODY, at(NOW)),
            mismatch(WEBHOOK_SIGNATURE)
        );
        let other_time = standard_request("msg_1", NOW + 1, &signature);
        assert_eq!(
            scheme.verify(&other_time, BODY, at(NOW)),
            mismatch(WEBHOOK_SIGNATURE)
        );
        for name in [WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE] {
            let mut without = request.clone();
            without.remove(name);
            let missing = Rejection::MissingHeader {
                header: name.into(),
            };
            assert_eq!(scheme.verify(&without, BODY, at(NOW)), Err(missing));
        }
        let negative = headers(&[
            (WEBHOOK_ID, "msg_1"),
            (WEBHOOK_TIMESTAMP, "-5"),
            (WEBHOOK_SIGNATURE, &signature),
        ]);
        for (case, bad) in [
            ("empty id", standard_request("", NOW, &signature)),
            (
                "v1a only",
                standard_request("msg_1", NOW, &signature.replace("v1,", "v1a,")),
            ),
            ("negative timestamp", negative),
        ] {
            assert_malformed(scheme.verify(&bad, BODY, at(NOW)), case);
        }
    }

    #[test]
    fn rotation_accepts_every_active_secret_and_no_removed_one() {
        let old = "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0";
        let new = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0";
        let removed = "whsec_cmVtb3ZlZC1yZW1vdmVkLXJlbW92ZWQ=";
        type SignedRequest = fn(&str) -> HeaderMap;
        let cases: [(SignatureScheme, SignedRequest); 3] = [
            (github(&[old, new]), |secret| {
                headers(&[(GITHUB_SIGNATURE, &GitHubScheme::sign(secret, BODY))])
            }),
            (stripe(&[old, new]), |secret| {
                headers(&[(STRIPE_SIGNATURE, &StripeScheme::sign(secret, NOW, BODY))])
            }),
            (standard(&[old, new]), |secret| {
                let signature = StandardWebhooksScheme::sign(secret, "msg_1", NOW, BODY);
                standard_request("msg_1", NOW, &signature.unwrap())
            }),
        ];
        for (scheme, signed_request) in cases {
            let index = |secret| {
                let verdict = scheme.verify(&signed_request(secret), BODY, at(NOW));
                verdict.map(|verified| verified.secret_index)
            };
            assert_eq!((index(old), index(new)), (Ok(0), Ok(1)), "{scheme:?}");
            let rejection = index(removed).unwrap_err();
            assert!(
                matches!(rejection, Rejection::SignatureMismatch { .. }),
                "{rejection}"
            );
        }
    }

    #[test]
    fn generic_hmac_in_hex_and_base64_with_and_without_prefix() {
        let shared = secrets(&["generic-secret"]);
        for encoding in [SignatureEncoding::Hex, SignatureEncoding::Base64] {
            for prefix in [None, Some("sha256=")] {
                let case = format!("{encoding:?} {prefix:?}");
                let scheme = GenericHmacScheme::try_new(&shared, "X-Signature", encoding, prefix);
                let scheme = SignatureScheme::GenericHmac(scheme.unwrap());
                let SignatureScheme::GenericHmac(generic) = &scheme else {
                    unreachable!()
                };
                let verify = |value: &str, body: &[u8]| {
                    scheme.verify(&headers(&[("x-signature", value)]), body, at(NOW))
                };
                let value = generic.sign("generic-secret", BODY);
                assert_eq!(value.starts_with("sha256="), prefix.is_some(), "{case}");
                assert_eq!(
                    verify(&value, BODY).map(|v| v.secret_index),
                    Ok(0),
                    "{case}"
                );
                if encoding == SignatureEncoding::Base64 {
                    assert!(
                        verify(value.trim_end_matches('='), BODY).is_ok(),
                        "{case} unpadded"
                    );
                }
                assert_eq!(verify(&value, b"{}"), mismatch("x-signature"), "{case}");
                let other = generic.sign("other-secret", BODY);
                assert_eq!(verify(&other, BODY), mismatch("x-signature"), "{case}");
                let unprefixed = value.trim_start_matches("sha256=");
                for bad in [format!("sha1={unprefixed}"), format!("{value}ff")] {
                    assert_malformed(verify(&bad, BODY), &format!("{case} {bad}"));
                }
            }
        }
        let scheme =
            GenericHmacScheme::try_new(&shared, "X-Sig", SignatureEncoding::Hex, Some("v="));
        let scheme = SignatureScheme::GenericHmac(scheme.unwrap());
        let value = format!("V={}", hex::encode(mac(b"generic-secret", &[BODY])));
        let rejection = scheme.verify(&headers(&[("x-sig", &value)]), BODY, at(NOW));
        assert_eq!(
            rejection.unwrap_err().to_string(),
            "malformed header `x-sig`: does not start with `v=`"
        );
    }

    #[test]
    fn construction_rejects_bad_settings_with_the_reason() {
        let tolerance = DEFAULT_TIMESTAMP_TOLERANCE;
        let standard = |texts: &[&str]| StandardWebhooksScheme::try_new(&secrets(texts), tolerance);
        let stripe = |texts: &[&str], tolerance| StripeScheme::try_new(&secrets(texts), tolerance);
        let errors = [
            GitHubScheme::try_new(&[]).unwrap_err(),
            GitHubScheme::try_new(&secrets(&["ok", ""])).unwrap_err(),
            standard(&["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]).unwrap_err(),
            standard(&[WHSEC, "whsec_not base64!"]).unwrap_err(),
            standard(&["whsec_"]).unwrap_err(),
            stripe(&["sk_test_123"], tolerance).unwrap_err(),
            stripe(&[WHSEC], Duration::from_millis(500)).unwrap_err(),
            GenericHmacScheme::try_new(&secrets(&["s"]), "a b", SignatureEncoding::Hex, None)
                .unwrap_err(),
            StandardWebhooksScheme::sign("whsec_%", "msg_1", NOW, BODY).unwrap_err(),
        ];
        let expected = [
            "no secrets configured; give at least one (two while rotating)",
            "secret 2 of 2 is empty",
            "secret 1 of 1 does not start with `whsec_`; copy the secret as the provider shows it",
            "secret 2 of 2 is not valid base64 after `whsec_`",
            "secret 1 of 1 has nothing after `whsec_`",
            "secret 1 of 1 does not start with `whsec_`; use the endpoint's signing secret, not an API key",
            "timestamp tolerance 500ms is under 1 s; the default is 300 s",
            "`a b` is not a valid header name",
            "is not valid base64 after `whsec_`",
        ];
        assert_eq!(errors, expected);
    }

    #[test]
    fn secrets_and_expected_signatures_never_show() {
        let generic = GenericHmacScheme::try_new(
            &secrets(&["generic-hunter2"]),
            "X-Sig",
            SignatureEncoding::Hex,
            None,
        );
        let schemes = [
            github(&["github-hunter2"]),
            stripe(&["whsec_stripe-hunter2"]),
            standard(&[WHSEC]),
            SignatureScheme::GenericHmac(generic.unwrap()),
        ];
        let expected = [
            GitHubScheme::sign("github-hunter2", BODY),
            StripeScheme::sign("whsec_stripe-hunter2", NOW, BODY),
            StandardWebhooksScheme::sign(WHSEC, "msg_1", NOW, BODY).unwrap(),
            hex::encode(mac(b"generic-hunter2", &[BODY])),
        ];
        let requests = [
            headers(&[(GITHUB_SIGNATURE, &GitHubScheme::sign("wrong", BODY))]),
            headers(&[(STRIPE_SIGNATURE, &StripeScheme::sign("wrong", NOW, BODY))]),
            standard_request(
                "msg_1",
                NOW,
                "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
            ),
            headers(&[("x-sig", &hex::encode(mac(b"wrong", &[BODY])))]),
        ];
        for ((scheme, expected), request) in schemes.iter().zip(&expected).zip(&requests) {
            let debug = format!("{scheme:?}");
            assert!(debug.contains("REDACTED"), "{debug}");
            let message = scheme
                .verify(request, BODY, at(NOW))
                .unwrap_err()
                .to_string();
            let signature = expected
                .rsplit(['=', ','])
                .find(|part| part.len() > 20)
                .unwrap();
            for shown in [&debug, &message] {
                assert!(
                    !shown.contains("hunter2") && !shown.contains(&WHSEC[6..]),
                    "{shown}"
                );
                assert!(!shown.contains(signature), "{shown}");
            }
        }
    }
}
