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
    // Within the tolerance of `now`, but a tolerance of centuries (nothing bounds the
    // configured one) lets through a timestamp past what `SystemTime` holds: `+` would panic.
    UNIX_EPOCH
        .checked_add(Duration::from_secs(timestamp))
        .ok_or_else(|| {
            malformed(
                header,
                "timestamp is later than this system's clock can hold",
            )
        })
}

#[cfg(test)]
#[path = "signature_tests.rs"]
mod tests;
