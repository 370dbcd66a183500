//! The formats a polled REST body may come in, each turned into JSON before the walk reads
//! its records: `json` as it is, `feed` (RSS, Atom, JSON Feed) and `xml` by the mappings their
//! modules state.

pub mod feed;
pub mod xml;

use bytes::Bytes;
use serde::Deserialize;

/// `format` of a `rest` source: how the response body is read.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    /// JSON (the default): `records` points into the body as sent.
    #[default]
    Json,
    /// An RSS 0.9x–2.0, Atom or JSON Feed document: each entry is a record (see
    /// [`feed`]), keyed by its id, with its update time as the watermark.
    Feed,
    /// XML mapped to JSON (see [`xml`]); `records` points into the mapped document.
    Xml,
}

impl BodyFormat {
    /// The body as JSON text: the same bytes for `json`, the mapped document otherwise.
    /// `url` (secrets stripped) is the page's URL, which resolves a feed's relative links.
    ///
    /// # Errors
    /// The body is not a feed or not well-formed XML: the parser's message.
    pub fn to_json(self, body: Bytes, url: &str) -> Result<Bytes, String> {
        match self {
            BodyFormat::Json => Ok(body),
            BodyFormat::Feed => feed::to_json(&body, url).map(Bytes::from),
            BodyFormat::Xml => xml::to_json(&body)
                .map(Bytes::from)
                .map_err(|e| format!("not well-formed XML: {e}")),
        }
    }

    /// True for feeds: the server returns every recent entry at each poll (no `since`
    /// parameter), so entries older than the watermark are left out by the walk, and
    /// entries with no time are remembered by id.
    pub fn filters_by_watermark(self) -> bool {
        self == BodyFormat::Feed
    }
}
