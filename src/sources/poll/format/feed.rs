//! `format = "feed"`: an RSS 0.9x/1.0/2.0, Atom 1.0 or JSON Feed 1.x document, parsed by
//! `feed-rs`, becomes a JSON array with one object per entry (item), in document order.
//!
//! Each entry maps to:
//!
//! | member | value |
//! |---|---|
//! | `id` | the entry's id (Atom `id`, RSS `guid`, JSON Feed `id`); without one, a hash of its first link and title (feed-rs's rule), else of the feed URL and title, else of the entry's other members |
//! | `title` | text, or `null` |
//! | `updated` | RFC 3339 UTC time: the entry's update time, or its publication time when it has none (RSS `pubDate`); `null` when the entry has neither |
//! | `published` | RFC 3339 UTC publication time, or `null` |
//! | `link` | the first link's URL, or `null` |
//! | `links` | every link: `{"href", "rel", "type", "title"}` |
//! | `summary` | text (Atom `summary`, RSS `description`, JSON Feed `summary`), or `null` |
//! | `content` | `{"type", "body", "src"}` (Atom `content`, RSS `content:encoded`, JSON Feed `content_html`/`content_text`), or `null` |
//! | `authors` | `{"name", "email", "uri"}` each |
//! | `categories` | `{"term", "scheme", "label"}` each |
//! | `enclosures` | media attached to the entry (RSS `enclosure`, Media RSS, JSON Feed `attachments`): `{"url", "type", "length"}` |
//! | `feed` | the feed it came from: `{"id", "title", "type"}`, `type` one of `atom`, `json`, `rss0`, `rss1`, `rss2` |
//!
//! Times are written as RFC 3339 UTC (`2024-05-01T12:00:00Z`), so they order as instants.

use feed_rs::{
    model::{Entry, Feed, FeedType, Link, Text},
    parser,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Parses a feed and maps its entries to a JSON array (see the module documentation).
/// `url` (secrets stripped) resolves relative links and names entries that have no id.
///
/// # Errors
/// The body is not an RSS, Atom or JSON Feed document: feed-rs's message.
pub fn to_json(body: &[u8], url: &str) -> Result<Vec<u8>, String> {
    let entries = to_value(body, url)?;
    serde_json::to_vec(&entries).map_err(|e| e.to_string())
}

/// Parses a feed and maps its entries (see [`to_json`]).
///
/// # Errors
/// As [`to_json`].
pub fn to_value(body: &[u8], url: &str) -> Result<Value, String> {
    let feed = parser::Builder::new()
        .base_uri(Some(url))
        .id_generator(|links, title, uri| {
            // Left empty when nothing stable names the entry: the id is then derived from the
            // mapped entry itself (a random UUID, feed-rs's last resort, would make the entry
            // look new at every poll).
            match (links.first(), title, uri) {
                (Some(link), _, _) => parser::generate_id_from_link_and_title(link, title),
                (None, Some(title), Some(uri)) => {
                    parser::generate_id_from_uri_and_title(uri, title)
                }
                _ => String::new(),
            }
        })
        .build()
        .parse(body)
        .map_err(|e| format!("not an RSS, Atom or JSON Feed document: {e}"))?;
    let source = json!({
        "id": feed.id,
        "title": feed.title.as_ref().map(text),
        "type": feed_type(&feed),
    });
    Ok(Value::Array(
        feed.entries
            .iter()
            .map(|entry| map_entry(entry, &source))
            .collect(),
    ))
}

fn map_entry(entry: &Entry, source: &Value) -> Value {
    let time =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let mut mapped = json!({
        "id": entry.id,
        "title": entry.title.as_ref().map(text),
        "updated": entry.updated.or(entry.published).as_ref().map(time),
        "published": entry.published.as_ref().map(time),
        "link": entry.links.first().map(|l| l.href.clone()),
        "links": entry.links.iter().map(link).collect::<Vec<_>>(),
        "summary": entry.summary.as_ref().map(text),
        "content": entry.content.as_ref().map(|c| json!({
            "type": c.content_type.to_string(),
            "body": c.body,
            "src": c.src.as_ref().map(|l| l.href.clone()),
        })),
        "authors": entry.authors.iter().map(|p| json!({
            "name": p.name, "email": p.email, "uri": p.uri,
        })).collect::<Vec<_>>(),
        "categories": entry.categories.iter().map(|c| json!({
            "term": c.term, "scheme": c.scheme, "label": c.label,
        })).collect::<Vec<_>>(),
        "enclosures": entry.media.iter().flat_map(|m| &m.content).map(|c| json!({
            "url": c.url.as_ref().map(|u| u.to_string()),
            "type": c.content_type.as_ref().map(|t| t.to_string()),
            "length": c.size,
        })).collect::<Vec<_>>(),
        "feed": source,
    });
    if entry.id.is_empty() {
        let digest = Sha256::digest(mapped.to_string().as_bytes());
        mapped["id"] = Value::String(hex::encode(&digest[..16]));
    }
    mapped
}

fn text(text: &Text) -> String {
    text.content.clone()
}

fn link(link: &Link) -> Value {
    json!({
        "href": link.href,
        "rel": link.rel,
        "type": link.media_type,
        "title": link.title,
    })
}

fn feed_type(feed: &Feed) -> &'static str {
    match feed.feed_type {
        FeedType::Atom => "atom",
        FeedType::JSON => "json",
        FeedType::RSS0 => "rss0",
        FeedType::RSS1 => "rss1",
        FeedType::RSS2 => "rss2",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const URL: &str = "https://example.com/feed";

    #[test]
    fn rss_items_map_with_pub_date_as_updated_and_guid_as_id() {
        let rss = r#"<?xml version="1.0"?><rss version="2.0"><channel><title>News</title>
<item><title>One</title><link>https://example.com/1</link><guid isPermaLink="false">n-1</guid>
<pubDate>Wed, 01 May 2024 12:00:00 +0200</pubDate><description>first</description>
<enclosure url="https://example.com/1.mp3" type="audio/mpeg" length="123"/></item>
<item><title>Undated</title><link>https://example.com/2</link></item>
</channel></rss>"#;
        let entries = to_value(rss.as_bytes(), URL).unwrap();
        let first = &entries[0];
        assert_eq!(first["id"], "n-1");
        assert_eq!(first["updated"], "2024-05-01T10:00:00Z");
        assert_eq!(first["published"], "2024-05-01T10:00:00Z");
        assert_eq!(first["summary"], "first");
        assert_eq!(first["link"], "https://example.com/1");
        assert_eq!(first["enclosures"][0]["url"], "https://example.com/1.mp3");
        assert_eq!(first["enclosures"][0]["length"], 123);
        assert_eq!(first["feed"]["type"], "rss2");
        assert_eq!(first["feed"]["title"], "News");
        let undated = &entries[1];
        assert_eq!(undated["updated"], Value::Null);
        // No guid: a stable id from the link and title, the same at every parse.
        let again = to_value(rss.as_bytes(), URL).unwrap();
        assert!(!undated["id"].as_str().unwrap().is_empty());
        assert_eq!(undated["id"], again[1]["id"]);
    }

    #[test]
    fn atom_and_json_feed_entries_map_their_update_times() {
        let atom = r#"<feed xmlns="http://www.w3.org/2005/Atom"><id>urn:f</id><title>A</title>
<updated>2024-05-02T00:00:00Z</updated>
<entry><id>urn:e1</id><title>E</title><updated>2024-05-02T00:00:00Z</updated>
<published>2024-05-01T00:00:00Z</published><link rel="alternate" href="/e1"/></entry></feed>"#;
        let entries = to_value(atom.as_bytes(), URL).unwrap();
        assert_eq!(entries[0]["id"], "urn:e1");
        assert_eq!(entries[0]["updated"], "2024-05-02T00:00:00Z");
        assert_eq!(entries[0]["published"], "2024-05-01T00:00:00Z");
        assert_eq!(entries[0]["link"], "https://example.com/e1");
        assert_eq!(entries[0]["feed"]["type"], "atom");

        let json_feed = r#"{"version":"https://jsonfeed.org/version/1.1","title":"J",
"items":[{"id":"7","content_text":"hi","date_published":"2024-05-03T00:00:00+00:00"},
{"content_text":"no id, no link, no title"}]}"#;
        let entries = to_value(json_feed.as_bytes(), URL).unwrap();
        assert_eq!(entries[0]["id"], "7");
        assert_eq!(entries[0]["updated"], "2024-05-03T00:00:00Z");
        assert_eq!(entries[0]["feed"]["type"], "json");
        let derived = entries[1]["id"].as_str().unwrap();
        assert_eq!(derived.len(), 32, "{derived}");
        assert_eq!(
            to_value(json_feed.as_bytes(), URL).unwrap()[1]["id"],
            entries[1]["id"]
        );
    }

    #[test]
    fn a_body_that_is_no_feed_is_an_error() {
        for body in [
            "<html><body>hi</body></html>",
            "{\"a\":1}",
            "<rss><channel>",
            "",
        ] {
            let error = to_value(body.as_bytes(), URL).unwrap_err();
            assert!(error.starts_with("not an RSS"), "{body}: {error}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = to_json(&bytes, URL);
        }
    }
}
