//! AWS Signature Version 4 for polled sources (`auth = { type = "aws_sigv4", service, region }`),
//! signed by the `aws-sigv4` crate: each request (method, URL, headers, body) gets `X-Amz-Date`,
//! `Authorization` and, with temporary credentials, `X-Amz-Security-Token`.
//!
//! Credentials come, as the AWS CLI and SDKs find them, from `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, or else from a profile (`profile`, else
//! `AWS_PROFILE`, else `default`) of the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`,
//! else `~/.aws/credentials`), which is read again whenever it changes, so credentials that a
//! helper rotates in place keep working.

use std::{path::PathBuf, sync::Mutex, time::SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::{
    http_request::{
        sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
        SigningSettings, UriPathNormalizationMode,
    },
    sign::v4,
};

/// Signs one source's requests.
pub struct AwsSigner {
    service: String,
    region: String,
    credentials: CredentialSource,
}

impl std::fmt::Debug for AwsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSigner")
            .field("service", &self.service)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Where the credentials come from.
enum CredentialSource {
    /// The environment variables, read once.
    Environment(Credentials),
    /// A profile of the shared credentials file, cached with the file's modification time.
    Profile {
        path: PathBuf,
        name: String,
        cached: Mutex<(Option<SystemTime>, Credentials)>,
    },
}

/// What signing needs besides the request, as the test suite's `context.json` states it.
#[derive(Clone, Copy, Debug)]
pub struct SigningOptions {
    /// Normalize the path (`/a/../b` → `/b`), as every service but S3 expects.
    pub normalize_path: bool,
    /// Percent-encode the path twice, as every service but S3 expects.
    pub double_encode_path: bool,
    /// Send `x-amz-content-sha256` (S3 expects it).
    pub sign_body_header: bool,
}

impl SigningOptions {
    /// What `service` expects: S3 keeps paths as they are and wants the payload's hash.
    pub fn for_service(service: &str) -> Self {
        let s3 = service == "s3";
        SigningOptions {
            normalize_path: !s3,
            double_encode_path: !s3,
            sign_body_header: s3,
        }
    }
}

impl AwsSigner {
    /// The signer for `service` in `region`, with credentials from the environment or the
    /// profile.
    ///
    /// # Errors
    /// No credentials are found (the message says where they were looked for), or the
    /// profile lacks a key.
    pub fn new(service: &str, region: &str, profile: Option<&str>) -> Result<Self, String> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let credentials = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) if profile.is_none() => CredentialSource::Environment(
                Credentials::new(id, secret, env("AWS_SESSION_TOKEN"), None, "environment"),
            ),
            _ => {
                let name = profile
                    .map(str::to_owned)
                    .or_else(|| env("AWS_PROFILE"))
                    .unwrap_or_else(|| "default".to_owned());
                let path = env("AWS_SHARED_CREDENTIALS_FILE")
                    .map(PathBuf::from)
                    .or_else(|| env("HOME").map(|home| PathBuf::from(home).join(".aws/credentials")))
                    .ok_or("no AWS credentials: AWS_ACCESS_KEY_ID is unset and there is no HOME to find ~/.aws/credentials in")?;
                let (modified, credentials) = read_profile(&path, &name)?;
                CredentialSource::Profile {
                    path,
                    name,
                    cached: Mutex::new((modified, credentials)),
                }
            }
        };
        Ok(AwsSigner {
            service: service.to_owned(),
            region: region.to_owned(),
            credentials,
        })
    }

    /// Adds the signature's headers to `request`, signed now.
    ///
    /// # Errors
    /// The credentials file can no longer be read, or the request cannot be signed (a header
    /// value that is not text).
    pub fn sign(&self, request: &mut reqwest::Request) -> Result<(), String> {
        let credentials = self.credentials()?;
        let body = request
            .body()
            .and_then(reqwest::Body::as_bytes)
            .unwrap_or_default();
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(name, value)| {
                value
                    .to_str()
                    .map(|value| (name.as_str().to_owned(), value.to_owned()))
                    .map_err(|_| format!("header `{name}` is not text and cannot be signed"))
            })
            .collect::<Result<_, _>>()?;
        let signed = signature_headers(
            request.method().as_str(),
            request.url().as_str(),
            &headers,
            body,
            &credentials,
            (&self.region, &self.service),
            SystemTime::now(),
            SigningOptions::for_service(&self.service),
        )?;
        for (name, value) in signed {
            let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            let mut value = http::HeaderValue::from_str(&value).map_err(|e| e.to_string())?;
            value.set_sensitive(true);
            request.headers_mut().insert(name, value);
        }
        Ok(())
    }

    fn credentials(&self) -> Result<Credentials, String> {
        match &self.credentials {
            CredentialSource::Environment(credentials) => Ok(credentials.clone()),
            CredentialSource::Profile { path, name, cached } => {
                let mut cached = cached.lock().unwrap_or_else(|e| e.into_inner());
                let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                if modified != cached.0 {
                    *cached = read_profile(path, name)?;
                }
                Ok(cached.1.clone())
            }
        }
    }
}

/// The headers that sign a request (`x-amz-date`, `authorization`, and
/// `x-amz-security-token`/`x-amz-content-sha256` where they apply), by the AWS SigV4 rules.
/// `scope` is the region and the service.
///
/// # Errors
/// The request cannot be signed (an invalid URL or header), with the signer's reason.
#[allow(clippy::too_many_arguments)]
pub fn signature_headers(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
    credentials: &Credentials,
    scope: (&str, &str),
    time: SystemTime,
    options: SigningOptions,
) -> Result<Vec<(String, String)>, String> {
    let mut settings = SigningSettings::default();
    if !options.normalize_path {
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    }
    if !options.double_encode_path {
        settings.percent_encoding_mode = PercentEncodingMode::Single;
    }
    if options.sign_body_header {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(scope.0)
        .name(scope.1)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new(
        method,
        url,
        headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("the request cannot be signed: {e}"))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| format!("the request cannot be signed: {e}"))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect())
}

/// Reads profile `name` of the shared credentials file at `path` (INI:
/// `aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`).
fn read_profile(
    path: &std::path::Path,
    name: &str,
) -> Result<(Option<SystemTime>, Credentials), String> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let file = ini::Ini::load_from_file(path).map_err(|e| {
        format!(
            "no AWS credentials: AWS_ACCESS_KEY_ID is unset and the credentials file `{}` cannot be read ({e})",
            path.display()
        )
    })?;
    let section = file.section(Some(name)).ok_or_else(|| {
        format!(
            "the credentials file `{}` has no profile `{name}`",
            path.display()
        )
    })?;
    let key = |key: &str| section.get(key).map(str::trim).filter(|v| !v.is_empty());
    match (key("aws_access_key_id"), key("aws_secret_access_key")) {
        (Some(id), Some(secret)) => Ok((
            modified,
            Credentials::new(
                id,
                secret,
                key("aws_session_token").map(str::to_owned),
                None,
                "profile",
            ),
        )),
        _ => Err(format!(
            "profile `{name}` of `{}` lacks aws_access_key_id or aws_secret_access_key",
            path.display()
        )),
    }
}

#[cfg(test)]
#[path = "sigv4_tests.rs"]
mod tests;
