//! The protocol rules of the feeds `http_stream` knows by name (`preset`): which query
//! parameters open the stream, where the position is, and which lines are not records.
//!
//! - **CouchDB** `_changes?feed=continuous` (CouchDB 3.x API reference, "/db/_changes"): one
//!   change per line, its `seq` the position sent back as `since`; empty lines are heartbeats
//!   (`heartbeat=<ms>` asks for them); a `{"last_seq": …}` line ends the feed and moves the
//!   position without a record.
//! - **Kubernetes** watch (API concepts, "Efficient detection of changes"): `?watch=1&
//!   resourceVersion=<rv>&allowWatchBookmarks=true`; each line a `{"type", "object"}` event,
//!   the position `object.metadata.resourceVersion`; `BOOKMARK` events move the position
//!   without a record; an `ERROR` event whose Status has `code: 410` (Gone) says the
//!   resourceVersion expired, and the source lists again (see `source.rs`).

use std::{borrow::Cow, time::Duration};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::stage::Key;

/// A feed whose protocol rules the source applies (`preset`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// No rules beyond the config's: every JSON line is a record.
    #[default]
    None,
    /// CouchDB's continuous changes feed.
    Couchdb,
    /// A Kubernetes watch.
    Kubernetes,
}

/// What one JSON line of the feed is.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A record, at this position (`None`: the line has none; the position stays).
    Record(Option<Cow<'a, str>>),
    /// No record, but the position moves here (CouchDB `last_seq`, Kubernetes `BOOKMARK`).
    Position(Cow<'a, str>),
    /// The watch's resourceVersion expired (Kubernetes `ERROR` with code 410): list again.
    Expired(String),
    /// The server reports an error in the stream (Kubernetes `ERROR` of another code): the
    /// connection is ended and opened again.
    Error(String),
}

impl Preset {
    /// The preset's name in the config.
    pub fn name(self) -> &'static str {
        match self {
            Preset::None => "none",
            Preset::Couchdb => "couchdb",
            Preset::Kubernetes => "kubernetes",
        }
    }

    /// Where the preset's position is (a JSON pointer).
    pub fn default_position(self) -> Option<&'static str> {
        match self {
            Preset::None => None,
            Preset::Couchdb => Some("/seq"),
            Preset::Kubernetes => Some("/object/metadata/resourceVersion"),
        }
    }

    /// The query parameter the preset's position goes back in.
    pub fn default_resume_param(self) -> Option<&'static str> {
        match self {
            Preset::None => None,
            Preset::Couchdb => Some("since"),
            Preset::Kubernetes => Some("resourceVersion"),
        }
    }

    /// The preset's record key: the document id, the object's uid.
    pub fn default_key(self) -> Option<&'static str> {
        match self {
            Preset::None => None,
            Preset::Couchdb => Some("/id"),
            Preset::Kubernetes => Some("/object/metadata/uid"),
        }
    }

    /// The query parameters that open the stream (besides the position): `read_timeout`
    /// decides CouchDB's heartbeat, a third of it, so that a quiet feed never looks dead.
    pub fn stream_params(self, read_timeout: Duration) -> Vec<(&'static str, String)> {
        match self {
            Preset::None => Vec::new(),
            Preset::Couchdb => {
                let heartbeat = (read_timeout.as_millis() / 3).max(1);
                vec![
                    ("feed", "continuous".to_owned()),
                    ("heartbeat", heartbeat.to_string()),
                ]
            }
            Preset::Kubernetes => vec![
                ("watch", "1".to_owned()),
                ("allowWatchBookmarks", "true".to_owned()),
            ],
        }
    }

    /// The event type of a record (the `tributary.event_type` header): a Kubernetes event's
    /// `type`.
    pub fn event_type(self, line: &RawValue) -> Option<String> {
        match self {
            Preset::Kubernetes => {
                let kind = crate::json::lookup(line, "/type")?;
                serde_json::from_str::<String>(kind.get()).ok()
            }
            _ => None,
        }
    }

    /// What `line` (one JSON value) is under this preset; `position` reads a record's position.
    pub fn classify<'a>(self, line: &'a RawValue, position: Option<&Key>) -> Line<'a> {
        let of = |key: &Key| key.of(Some(line)).ok();
        match self {
            Preset::None => Line::Record(position.and_then(of)),
            Preset::Couchdb => {
                if crate::json::lookup(line, "/seq").is_none() {
                    if let Some(last) = crate::json::lookup(line, "/last_seq") {
                        return Line::Position(crate::json::text_of(last));
                    }
                }
                Line::Record(position.and_then(of))
            }
            Preset::Kubernetes => {
                let kind = crate::json::lookup(line, "/type")
                    .and_then(|kind| serde_json::from_str::<&str>(kind.get()).ok());
                match kind {
                    Some("BOOKMARK") => match position.and_then(of) {
                        Some(version) => Line::Position(version),
                        None => Line::Error(
                            "a BOOKMARK event without `object.metadata.resourceVersion`".into(),
                        ),
                    },
                    Some("ERROR") => kubernetes_error(line),
                    _ => Line::Record(position.and_then(of)),
                }
            }
        }
    }
}

/// A Kubernetes `ERROR` watch event: its `object` is a `Status` (`code`, `reason`, `message`).
fn kubernetes_error(line: &RawValue) -> Line<'static> {
    #[derive(Deserialize)]
    struct Status {
        #[serde(default)]
        code: Option<u16>,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }
    let status = crate::json::lookup(line, "/object")
        .and_then(|object| serde_json::from_str::<Status>(object.get()).ok());
    let Some(status) = status else {
        return Line::Error("an ERROR event without a Status object".into());
    };
    let text = format!(
        "the watch reported an error: code {}, reason `{}`: {}",
        status
            .code
            .map_or_else(|| "none".to_owned(), |c| c.to_string()),
        status.reason.as_deref().unwrap_or(""),
        status.message.as_deref().unwrap_or("")
    );
    if status.code == Some(410) {
        Line::Expired(text)
    } else {
        Line::Error(text)
    }
}

/// A Kubernetes list answer: its `metadata.resourceVersion` and `items`.
#[derive(Debug, Deserialize)]
pub struct KubernetesList<'a> {
    /// The list's metadata.
    #[serde(borrow)]
    pub metadata: ListMeta<'a>,
    /// The objects, as the server wrote them.
    #[serde(borrow, default)]
    pub items: Vec<&'a RawValue>,
}

/// `metadata` of a Kubernetes list.
#[derive(Debug, Deserialize)]
pub struct ListMeta<'a> {
    /// The version the watch starts from.
    #[serde(borrow, rename = "resourceVersion")]
    pub resource_version: Cow<'a, str>,
    /// The token of the next page of a list asked for in pages (`limit`); empty or absent on
    /// the last page.
    #[serde(borrow, rename = "continue", default)]
    pub continue_token: Option<Cow<'a, str>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> &RawValue {
        serde_json::from_str(text).unwrap()
    }

    fn key(preset: Preset) -> Key {
        Key::parse(preset.default_position().unwrap()).unwrap()
    }

    #[test]
    fn couchdb_changes_and_last_seq() {
        let position = key(Preset::Couchdb);
        let change = raw(r#"{"seq":"3-g1AAA","id":"doc","changes":[{"rev":"1-x"}]}"#);
        assert_eq!(
            Preset::Couchdb.classify(change, Some(&position)),
            Line::Record(Some("3-g1AAA".into()))
        );
        let numeric = raw(r#"{"seq":17,"id":"doc","changes":[]}"#);
        assert_eq!(
            Preset::Couchdb.classify(numeric, Some(&position)),
            Line::Record(Some("17".into()))
        );
        let last = raw(r#"{"last_seq":"9-g1AAA","pending":0}"#);
        assert_eq!(
            Preset::Couchdb.classify(last, Some(&position)),
            Line::Position("9-g1AAA".into())
        );
    }

    #[test]
    fn kubernetes_events_bookmarks_and_errors() {
        let position = key(Preset::Kubernetes);
        let added = raw(
            r#"{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"a","resourceVersion":"101"}}}"#,
        );
        assert_eq!(
            Preset::Kubernetes.classify(added, Some(&position)),
            Line::Record(Some("101".into()))
        );
        assert_eq!(
            Preset::Kubernetes.event_type(added).as_deref(),
            Some("ADDED")
        );
        let bookmark = raw(
            r#"{"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"120"}}}"#,
        );
        assert_eq!(
            Preset::Kubernetes.classify(bookmark, Some(&position)),
            Line::Position("120".into())
        );
        let gone = raw(
            r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version: 100 (150)","reason":"Expired","code":410}}"#,
        );
        assert!(matches!(
            Preset::Kubernetes.classify(gone, Some(&position)),
            Line::Expired(text) if text.contains("410") && text.contains("too old")
        ));
        let other =
            raw(r#"{"type":"ERROR","object":{"kind":"Status","code":500,"message":"boom"}}"#);
        assert!(matches!(
            Preset::Kubernetes.classify(other, Some(&position)),
            Line::Error(text) if text.contains("500")
        ));
    }

    #[test]
    fn couchdb_heartbeat_follows_the_read_timeout() {
        let params = Preset::Couchdb.stream_params(Duration::from_secs(60));
        assert!(params.contains(&("heartbeat", "20000".to_owned())));
        assert!(params.contains(&("feed", "continuous".to_owned())));
    }

    #[test]
    fn a_list_gives_its_version_and_items() {
        let list: KubernetesList<'_> = serde_json::from_str(
            r#"{"kind":"PodList","metadata":{"resourceVersion":"200"},"items":[{"metadata":{"name":"a"}}]}"#,
        )
        .unwrap();
        assert_eq!(list.metadata.resource_version, "200");
        assert_eq!(list.items.len(), 1);
        assert_eq!(list.metadata.continue_token, None);
        let page: KubernetesList<'_> = serde_json::from_str(
            r#"{"metadata":{"resourceVersion":"200","continue":"eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ"},"items":[]}"#,
        )
        .unwrap();
        assert_eq!(
            page.metadata.continue_token.as_deref(),
            Some("eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ")
        );
    }
}
