//! What the walk does with one page: same-origin next URLs, conditional-request validators,
//! dead-letter records for unreadable pages, error excerpts.

use std::{sync::Arc, time::SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use serde_json::value::RawValue;

use super::{Endpoint, ErrorsPolicy, Next, PageState, PollSettings, Validators};
use crate::{
    json::{elements, is_null, members},
    record::{DeadLetter, PageLineage, Record},
};

/// What a fetched page holds.
pub(super) struct PageContent<'a> {
    /// The parsed body; `None` when it was not valid JSON.
    pub raw: Option<&'a RawValue>,
    /// The records, each borrowed from the body.
    pub records: Vec<&'a RawValue>,
    /// Dead-letter records: the whole page (not JSON, no records array) or GraphQL `errors`.
    pub out: Vec<Record>,
}

/// Finds the records of a page whose body `parsed` is (or failed to parse as) JSON.
///
/// # Errors
/// The text of a failed poll: GraphQL `errors` under `errors = "fail"`.
pub(super) fn read_page<'a>(
    body: &Bytes,
    parsed: Result<&'a RawValue, String>,
    endpoint: &dyn Endpoint,
    settings: &PollSettings,
    lineage: &Arc<PageLineage>,
    fetched_at: SystemTime,
) -> Result<PageContent<'a>, String> {
    let mut out = Vec::new();
    let raw = match parsed {
        Ok(raw) => raw,
        Err(error) => {
            out.push(dead_letter(
                body.clone(),
                fetched_at,
                lineage,
                "invalid_json",
                format!("page {} is not valid JSON: {error}", lineage.page),
            ));
            return Ok(PageContent {
                raw: None,
                records: Vec::new(),
                out,
            });
        }
    };
    if let Some(errors) = endpoint.errors(raw) {
        if settings.errors == ErrorsPolicy::Fail {
            return Err(format!(
                "page {} of {} answered with GraphQL errors: {}",
                lineage.page,
                lineage.url,
                excerpt(errors.get())
            ));
        }
        out.push(dead_letter(
            body.slice_ref(errors.get().as_bytes()),
            fetched_at,
            lineage,
            "graphql_errors",
            "the answer carried GraphQL errors (the partial data was produced)".into(),
        ));
    }
    let records = match settings.records.lookup(raw) {
        Some(found) if is_null(found) => Vec::new(),
        // A single resource (`GET /repos/{owner}/{repo}`) is one record; `{}` is an empty list
        // (as some APIs write it).
        Some(found) if found.get().starts_with('{') => {
            if members(found).is_some_and(|m| m.is_empty()) {
                Vec::new()
            } else {
                vec![found]
            }
        }
        found => match found.and_then(elements) {
            Some(records) => records,
            None => {
                out.push(not_an_array(body, fetched_at, lineage, settings));
                Vec::new()
            }
        },
    };
    Ok(PageContent {
        raw: Some(raw),
        records,
        out,
    })
}

/// A next URL is followed only on the origin (scheme, host, port) of the page that named it,
/// so credentials never go to another host; secret query parameters are stripped before the
/// URL becomes part of the stored position (they are added again when it is requested).
pub(super) fn same_origin(
    current: &url::Url,
    next: &str,
    redactor: &crate::secret::UrlRedactor,
) -> Next {
    let Ok(mut parsed) = url::Url::parse(next) else {
        return Next::Unknown("the next URL is not a URL".into());
    };
    if parsed.origin() != current.origin() {
        return Next::Unknown(format!(
            "the next page is on another origin ({}); credentials are not sent there",
            parsed.origin().ascii_serialization()
        ));
    }
    let secret_query = redactor.parameters();
    if parsed.query().is_some() && !secret_query.is_empty() {
        let kept: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(name, _)| !secret_query.iter().any(|s| s.eq_ignore_ascii_case(name)))
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    let stored: String = parsed.into();
    if redactor.holds_secret(&stored) {
        // A secret of the configured URL (a path token) echoed in the next URL: storing it
        // would write the secret to the checkpoint file.
        return Next::Unknown(
            "the next URL holds a secret of the configured URL, so it is not stored".into(),
        );
    }
    Next::Page(PageState::Url(stored))
}

pub(super) fn add_validators(headers: &mut HeaderMap, validators: &Validators) {
    let pairs = [
        (http::header::IF_NONE_MATCH, &validators.etag),
        (http::header::IF_MODIFIED_SINCE, &validators.last_modified),
    ];
    for (name, value) in pairs {
        if let Some(value) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, value);
        }
    }
}

pub(super) fn validators_of(headers: &HeaderMap, url: &str) -> Option<Validators> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let etag = text(http::header::ETAG);
    let last_modified = text(http::header::LAST_MODIFIED);
    (etag.is_some() || last_modified.is_some()).then(|| Validators {
        url: url.to_owned(),
        etag,
        last_modified,
    })
}

fn dead_letter(
    payload: Bytes,
    fetched_at: SystemTime,
    lineage: &Arc<PageLineage>,
    kind: &'static str,
    reason: String,
) -> Record {
    let mut record = Record::new(payload, fetched_at);
    record.page = Some(Arc::clone(lineage));
    record.dead_letter = Some(DeadLetter::new(kind, reason));
    record
}

fn not_an_array(
    body: &Bytes,
    fetched_at: SystemTime,
    lineage: &Arc<PageLineage>,
    settings: &PollSettings,
) -> Record {
    dead_letter(
        body.clone(),
        fetched_at,
        lineage,
        "records_not_found",
        format!(
            "page {} has no array of records at `{}`",
            lineage.page,
            settings.records.as_str()
        ),
    )
}

/// The start of `text`, at most 300 bytes, for an error message.
fn excerpt(text: &str) -> &str {
    let mut end = text.len().min(300);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::UrlRedactor;

    #[test]
    fn next_urls_stay_on_the_origin_and_lose_their_secrets() {
        let current: url::Url = "https://api.example.com/v1/items?page=1".parse().unwrap();
        let secret = UrlRedactor::new(vec!["api_key".to_owned()], []);
        assert_eq!(
            same_origin(
                &current,
                "https://api.example.com/v1/items?page=2&api_key=s3cret&x=1",
                &secret
            ),
            Next::Page(PageState::Url(
                "https://api.example.com/v1/items?page=2&x=1".into()
            ))
        );
        for elsewhere in [
            "https://evil.example/v1/items?page=2",
            "http://api.example.com/v1/items?page=2",
            "https://api.example.com:8443/v1/items?page=2",
        ] {
            assert!(
                matches!(same_origin(&current, elsewhere, &secret), Next::Unknown(_)),
                "{elsewhere}"
            );
        }
        std::env::set_var("TRIBUTARY_TEST_NEXT_URL_TOKEN", "t0ken-value");
        let token = UrlRedactor::new(Vec::new(), ["/${env:TRIBUTARY_TEST_NEXT_URL_TOKEN}/items"]);
        assert!(matches!(
            same_origin(
                &current,
                "https://api.example.com/t0ken-value/items?page=2",
                &token
            ),
            Next::Unknown(_)
        ));
    }
}
