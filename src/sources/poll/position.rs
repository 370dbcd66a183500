//! The stored position of a polled source, and the incremental watermark it carries.
//!
//! The position is JSON text in the checkpoint store. Between walks it holds the watermark (the
//! highest value of the configured record field produced so far, as its JSON text: a quoted
//! string or a number), the ids of the records that
//! sit exactly at it, and the `ETag`/`Last-Modified` validators of the first page. During a
//! walk it also holds where the next page is (page number, offset, cursor or URL), so a
//! restart resumes at that page instead of at the first one.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// Where the next page of a walk is, in the terms of the pagination strategy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum PageState {
    /// The first page: the configured request as is.
    First,
    /// A page number (`page=3`).
    Number(u64),
    /// An offset into the collection (`offset=200`).
    Offset(u64),
    /// An opaque cursor read from the previous page (a body field, GraphQL `endCursor`).
    Cursor(String),
    /// A full URL read from the previous page (a body field or `Link: <…>; rel="next"`).
    Url(String),
    /// The id of the previous page's last record (Stripe's `starting_after`).
    After(String),
}

/// A walk in progress: the pages of one poll, first to last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Walk {
    /// The page to fetch next.
    pub next: PageState,
    /// Its number in the walk (1 for the first page).
    pub page: u64,
    /// The watermark this walk asks from (the request parameter), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The highest watermark value among the records produced in this walk so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
    /// The ids of the records at `max`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids_at_max: Vec<String>,
}

/// The `ETag` and `Last-Modified` of a first page, sent back as `If-None-Match` and
/// `If-Modified-Since` (RFC 9110 §13.1) when the next poll asks for the same URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    /// The first page's URL, secrets stripped (validators only apply to the same request).
    pub url: String,
    /// `ETag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// `Last-Modified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

/// A polled source's position.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollPosition {
    /// The watermark of the last complete walk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
    /// The ids of the records produced exactly at the watermark (the boundary): when the next
    /// walk returns them again (`since` is inclusive), they are left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids_at_watermark: Vec<String>,
    /// The walk in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub walk: Option<Walk>,
    /// The first page's validators, for a conditional next poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validators: Option<Validators>,
    /// Feeds only: the ids of the entries produced that had no time (so no watermark),
    /// oldest first, at most `MAX_BOUNDARY_IDS` (1000): such an entry is produced when first seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undated_ids: Vec<String>,
}

impl PollPosition {
    /// Reads a stored position.
    ///
    /// # Errors
    /// The text is not a polled source's position (e.g. the source's type was changed).
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The position as stored text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("a position serializes")
    }

    /// A new walk from the first page, asking from the current watermark.
    pub fn start_walk(&self) -> Walk {
        Walk {
            next: PageState::First,
            page: 1,
            since: self.watermark.clone(),
            max: None,
            ids_at_max: Vec::new(),
        }
    }

    /// True when a record with watermark `value` and id `id` was produced by an earlier walk:
    /// it sits exactly at the watermark and its id is one of those seen there.
    pub fn is_boundary_duplicate(&self, value: &str, id: &str) -> bool {
        self.watermark
            .as_deref()
            .is_some_and(|watermark| compare(value, watermark) == Ordering::Equal)
            && self.ids_at_watermark.iter().any(|seen| seen == id)
    }

    /// True when watermark `value` is below the stored watermark (a feed's entry that an
    /// earlier walk has passed).
    pub fn is_below_watermark(&self, value: &str) -> bool {
        self.watermark
            .as_deref()
            .is_some_and(|watermark| compare(value, watermark) == Ordering::Less)
    }

    /// True when an entry with no time and id `id` was produced before.
    pub fn is_undated_duplicate(&self, id: &str) -> bool {
        self.undated_ids.iter().any(|seen| seen == id)
    }

    /// Remembers the ids of entries with no time just produced; past `MAX_BOUNDARY_IDS`
    /// the oldest are forgotten (such an entry, if still in the feed, is produced again).
    pub fn remember_undated(&mut self, ids: impl IntoIterator<Item = String>) {
        for id in ids {
            if !self.is_undated_duplicate(&id) {
                self.undated_ids.push(id);
            }
        }
        let excess = self.undated_ids.len().saturating_sub(MAX_BOUNDARY_IDS);
        self.undated_ids.drain(..excess);
    }

    /// Ends `walk`: the watermark becomes the highest value seen (never lower than before),
    /// with the ids at it.
    pub fn finish_walk(&mut self, walk: Walk) {
        self.walk = None;
        let Some(max) = walk.max else { return };
        match self
            .watermark
            .as_deref()
            .map(|current| compare(&max, current))
        {
            Some(Ordering::Less) => {}
            Some(Ordering::Equal) => {
                for id in walk.ids_at_max {
                    if self.ids_at_watermark.len() >= MAX_BOUNDARY_IDS {
                        break;
                    }
                    if !self.ids_at_watermark.contains(&id) {
                        self.ids_at_watermark.push(id);
                    }
                }
            }
            Some(Ordering::Greater) | None => {
                self.watermark = Some(max);
                self.ids_at_watermark = walk.ids_at_max;
            }
        }
    }
}

impl Walk {
    /// Takes a produced record's watermark `value` (and its id, if any) into account.
    pub fn observe(&mut self, value: &str, id: Option<&str>) {
        let order = self.max.as_deref().map(|max| compare(value, max));
        match order {
            Some(Ordering::Less) => return,
            Some(Ordering::Equal) => {}
            Some(Ordering::Greater) | None => {
                self.max = Some(value.to_owned());
                self.ids_at_max.clear();
            }
        }
        if let Some(id) = id {
            if self.ids_at_max.len() < MAX_BOUNDARY_IDS
                && !self.ids_at_max.iter().any(|seen| seen == id)
            {
                self.ids_at_max.push(id.to_owned());
            }
        }
    }
}

/// The most boundary ids a position keeps. They only spare duplicates: a coarse watermark
/// shared by more records than this (10^6 records in one second, say) makes the records past
/// the cap produced again on the next walk (at-least-once), instead of making every record
/// and every page's position cost time and bytes in proportion to all of them.
pub const MAX_BOUNDARY_IDS: usize = 1000;

/// Orders two watermark values (JSON texts): integers as integers (also when sent as strings
/// of digits, as many providers send 64-bit ids), other numbers as numbers, RFC 3339
/// timestamps as instants (any offset, any fraction), anything else as text.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (a, b) = (unquote(a), unquote(b));
    if let (Ok(x), Ok(y)) = (a.parse::<i128>(), b.parse::<i128>()) {
        return x.cmp(&y);
    }
    if let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) {
        if x.is_finite() && y.is_finite() {
            return x.total_cmp(&y);
        }
    }
    if let (Ok(x), Ok(y)) = (
        chrono::DateTime::parse_from_rfc3339(&a),
        chrono::DateTime::parse_from_rfc3339(&b),
    ) {
        return x.cmp(&y);
    }
    a.cmp(&b)
}

/// A JSON string's value, or the text as it is.
fn unquote(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with('"') {
        if let Ok(value) = serde_json::from_str::<String>(text) {
            return value.into();
        }
    }
    text.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn numbers_compare_as_numbers_and_timestamps_as_instants() {
        assert_eq!(compare("9", "10"), Ordering::Less);
        assert_eq!(compare("10.0", "10"), Ordering::Equal);
        assert_eq!(
            compare("\"99\"", "\"100\""),
            Ordering::Less,
            "ids sent as strings"
        );
        assert_eq!(
            compare("9007199254740993", "9007199254740992"),
            Ordering::Greater,
            "above 2^53"
        );
        assert_eq!(
            compare("\"2024-01-02T00:00:00Z\"", "\"2024-01-10T00:00:00Z\""),
            Ordering::Less
        );
        assert_eq!(
            compare("\"2024-01-01T00:00:00.5Z\"", "\"2024-01-01T00:00:00Z\""),
            Ordering::Greater,
            "fractions"
        );
        assert_eq!(
            compare("\"2024-01-01T01:00:00+02:00\"", "\"2024-01-01T00:00:00Z\""),
            Ordering::Less,
            "offsets"
        );
        assert_eq!(compare("\"b\"", "\"a\""), Ordering::Greater);
    }

    #[test]
    fn boundary_ids_are_bounded_however_many_records_share_the_watermark() {
        let mut walk = PollPosition::default().start_walk();
        for n in 0..(3 * MAX_BOUNDARY_IDS) {
            walk.observe("7", Some(&format!("id-{n}")));
        }
        assert_eq!(walk.ids_at_max.len(), MAX_BOUNDARY_IDS);
        let mut position = PollPosition {
            watermark: Some("7".into()),
            ids_at_watermark: (0..MAX_BOUNDARY_IDS).map(|n| format!("old-{n}")).collect(),
            ..PollPosition::default()
        };
        position.finish_walk(walk);
        assert_eq!(position.ids_at_watermark.len(), MAX_BOUNDARY_IDS);
    }

    #[test]
    fn a_walk_raises_the_watermark_and_keeps_the_boundary_ids() {
        let mut position = PollPosition::default();
        let mut walk = position.start_walk();
        for (value, id) in [("5", "a"), ("7", "b"), ("6", "c"), ("7", "d"), ("7", "b")] {
            walk.observe(value, Some(id));
        }
        position.finish_walk(walk);
        assert_eq!(position.watermark.as_deref(), Some("7"));
        assert_eq!(position.ids_at_watermark, ["b", "d"]);
        assert!(position.is_boundary_duplicate("7", "d"));
        assert!(!position.is_boundary_duplicate("7", "e"));
        assert!(!position.is_boundary_duplicate("8", "d"));

        // The next walk returns the boundary again plus one more record at the same value.
        let mut walk = position.start_walk();
        assert_eq!(walk.since.as_deref(), Some("7"));
        walk.observe("7", Some("e"));
        position.finish_walk(walk);
        assert_eq!(position.ids_at_watermark, ["b", "d", "e"]);

        // An empty walk changes nothing; a lower maximum does not lower the watermark.
        let before = position.clone();
        let walk = position.start_walk();
        position.finish_walk(walk);
        assert_eq!(position, before);
        let mut walk = position.start_walk();
        walk.observe("3", Some("z"));
        position.finish_walk(walk);
        assert_eq!(position, before);
    }

    #[test]
    fn positions_round_trip_through_text() {
        let position = PollPosition {
            watermark: Some("\"2024-01-01T00:00:00Z\"".into()),
            ids_at_watermark: vec!["1".into()],
            walk: Some(Walk {
                next: PageState::Url("https://api.example.com/x?page=3".into()),
                page: 3,
                since: None,
                max: Some("9".into()),
                ids_at_max: vec![],
            }),
            validators: Some(Validators {
                url: "https://api.example.com/x".into(),
                etag: Some("\"abc\"".into()),
                last_modified: None,
            }),
            undated_ids: vec!["e-1".into()],
        };
        assert_eq!(PollPosition::parse(&position.to_text()).unwrap(), position);
        assert!(PollPosition::parse("12345").is_err());
    }

    #[test]
    fn feeds_pass_older_entries_and_remember_undated_ones_within_a_bound() {
        let mut position = PollPosition {
            watermark: Some("\"2024-05-01T00:00:00Z\"".into()),
            ..PollPosition::default()
        };
        assert!(position.is_below_watermark("\"2024-04-30T23:59:59Z\""));
        assert!(!position.is_below_watermark("\"2024-05-01T00:00:00Z\""));
        assert!(!position.is_below_watermark("\"2024-05-01T00:00:01Z\""));
        position.remember_undated(["a".to_owned(), "b".to_owned(), "a".to_owned()]);
        assert_eq!(position.undated_ids, ["a", "b"]);
        assert!(position.is_undated_duplicate("a"));
        position.remember_undated((0..MAX_BOUNDARY_IDS).map(|n| n.to_string()));
        assert_eq!(position.undated_ids.len(), MAX_BOUNDARY_IDS);
        assert!(
            !position.is_undated_duplicate("a"),
            "the oldest are forgotten"
        );
        assert!(position.is_undated_duplicate(&(MAX_BOUNDARY_IDS - 1).to_string()));
    }

    proptest! {
        #[test]
        fn the_watermark_is_the_maximum_and_never_goes_down(
            walks in proptest::collection::vec(proptest::collection::vec(0u32..50, 0..10), 1..6)
        ) {
            let mut position = PollPosition::default();
            let mut highest: Option<u32> = None;
            for values in walks {
                let mut walk = position.start_walk();
                for (i, value) in values.iter().enumerate() {
                    walk.observe(&value.to_string(), Some(&i.to_string()));
                    highest = highest.max(Some(*value));
                }
                position.finish_walk(walk);
                prop_assert_eq!(position.watermark.clone(), highest.map(|h| h.to_string()));
            }
        }
    }
}
