//! Record → Kafka record mapping: topic (own or dead-letter), key, and lineage headers.
//!
//! Every produced record carries `tributary.source`, `tributary.url` (secrets stripped),
//! `tributary.fetched_at` (RFC 3339 UTC, milliseconds) and, when known, `tributary.event_id`,
//! `tributary.event_type`, (polled sources) `tributary.page`, and (sources with a `timestamp`)
//! `tributary.event_time`, then the source's static `record_headers`.
//! Dead-letter records add `tributary.error` (a sentence) and `tributary.error_kind` (a word).

use std::time::{SystemTime, UNIX_EPOCH};

use rdkafka::message::{Header, OwnedHeaders};

use crate::record::Record;

/// Header: the configured source name.
pub const HEADER_SOURCE: &str = "tributary.source";
/// Header: where the record was fetched, secrets stripped.
pub const HEADER_URL: &str = "tributary.url";
/// Header (polled records): the page's number in its walk, 1 for the first.
pub const HEADER_PAGE: &str = "tributary.page";
/// Header: when the record was read from the feed, RFC 3339 UTC.
pub const HEADER_FETCHED_AT: &str = "tributary.fetched_at";
/// Header: the provider's event id (SSE `id:`).
pub const HEADER_EVENT_ID: &str = "tributary.event_id";
/// Header: the feed's event type (SSE `event:` field, `message` when absent).
pub const HEADER_EVENT_TYPE: &str = "tributary.event_type";
/// Header (sources with a `timestamp` field): the record's event time, RFC 3339 UTC,
/// milliseconds; also the Kafka record timestamp.
pub const HEADER_EVENT_TIME: &str = "tributary.event_time";
/// Header (dead-letter records): why the record could not go to its topic.
pub const HEADER_ERROR: &str = "tributary.error";
/// Header (dead-letter records): a short, stable kind of error.
pub const HEADER_ERROR_KIND: &str = "tributary.error_kind";
/// Header (dead-letter stubs of records too large for Kafka): the original value's size in
/// bytes.
pub const HEADER_ORIGINAL_SIZE: &str = "tributary.original_size";
/// Header (`schema_violation` dead-letter records): the JSON pointer of the first value of the
/// record that fails the schema (`""`: the whole record).
pub const HEADER_SCHEMA_INSTANCE_PATH: &str = "tributary.schema_instance_path";
/// Header (`schema_violation` dead-letter records): the schema keyword that value fails
/// (`required`, `type`, `additionalProperties`, …).
pub const HEADER_SCHEMA_KEYWORD: &str = "tributary.schema_keyword";
/// The headers a dead-letter reason may add ([`crate::record::DeadLetter::details`]).
pub const DETAIL_HEADERS: [&str; 2] = [HEADER_SCHEMA_INSTANCE_PATH, HEADER_SCHEMA_KEYWORD];
/// Header (dead-letter stubs): the SHA-256 of the original value, lowercase hex.
pub const HEADER_ORIGINAL_SHA256: &str = "tributary.original_sha256";

/// Formats `fetched_at` timestamps, reusing the last text while the millisecond is the same
/// (records of one read share it), so the hot path does not format every record.
#[derive(Default)]
pub struct TimestampCache {
    millis: u128,
    text: String,
}

impl TimestampCache {
    /// RFC 3339 UTC text of `time`, millisecond precision.
    pub fn rfc3339(&mut self, time: SystemTime) -> &str {
        let millis = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis());
        if millis != self.millis || self.text.is_empty() {
            self.millis = millis;
            self.text = humantime::format_rfc3339_millis(time).to_string();
        }
        &self.text
    }
}

/// Builds the lineage headers of `record` (plus the error headers of a dead-letter record),
/// then the source's static headers `extra` (name, value).
pub fn lineage_headers(
    source: &str,
    url: &str,
    record: &Record,
    timestamps: &mut TimestampCache,
    extra: &[(String, String)],
) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new_with_capacity(7 + extra.len())
        .insert(Header {
            key: HEADER_SOURCE,
            value: Some(source),
        })
        .insert(Header {
            key: HEADER_URL,
            value: Some(record.page.as_ref().map_or(url, |page| page.url.as_str())),
        })
        .insert(Header {
            key: HEADER_FETCHED_AT,
            value: Some(timestamps.rfc3339(record.fetched_at)),
        });
    if let Some(page) = &record.page {
        headers = headers.insert(Header {
            key: HEADER_PAGE,
            value: Some(page.page.as_str()),
        });
    }
    if let Some(event_id) = &record.event_id {
        headers = headers.insert(Header {
            key: HEADER_EVENT_ID,
            value: Some(event_id.as_ref()),
        });
    }
    if let Some(event_type) = &record.event_type {
        headers = headers.insert(Header {
            key: HEADER_EVENT_TYPE,
            value: Some(event_type.as_ref()),
        });
    }
    if let Some(millis) = record.event_time {
        let time = UNIX_EPOCH + std::time::Duration::from_millis(millis.max(0) as u64);
        let text = humantime::format_rfc3339_millis(time).to_string();
        headers = headers.insert(Header {
            key: HEADER_EVENT_TIME,
            value: Some(text.as_str()),
        });
    }
    for (name, value) in extra {
        headers = headers.insert(Header {
            key: name.as_str(),
            value: Some(value.as_str()),
        });
    }
    if let Some(dead_letter) = &record.dead_letter {
        headers = headers
            .insert(Header {
                key: HEADER_ERROR,
                value: Some(dead_letter.reason.as_str()),
            })
            .insert(Header {
                key: HEADER_ERROR_KIND,
                value: Some(dead_letter.kind),
            });
        for (name, value) in &dead_letter.details {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_str()),
            });
        }
        if let Some(original) = &dead_letter.original {
            headers = headers
                .insert(Header {
                    key: HEADER_ORIGINAL_SIZE,
                    value: Some(original.size.as_str()),
                })
                .insert(Header {
                    key: HEADER_ORIGINAL_SHA256,
                    value: Some(original.sha256.as_str()),
                });
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc_millis() {
        let mut cache = TimestampCache::default();
        let time = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(cache.rfc3339(time), "2023-11-14T22:13:20.123Z");
        let later = time + Duration::from_millis(1);
        assert_eq!(cache.rfc3339(later), "2023-11-14T22:13:20.124Z");
    }
}
