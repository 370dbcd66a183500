//! Pagination strategies of the REST source, each a small type behind [`Paginator`]:
//! page number, offset/limit, a cursor from the body, a next URL from the body, the `Link`
//! header (RFC 8288, GitHub style) and the id of the last record (Stripe's `has_more` +
//! `starting_after`). Pure logic: a strategy sets request parameters and reads what the page
//! says about the next one.

use serde::Deserialize;
use serde_json::value::RawValue;
use url::Url;

use crate::{
    json::{is_null, lookup, text_of},
    sources::poll::{Next, PageState, PageView},
};

/// One pagination strategy.
pub trait Paginator: Send + Sync {
    /// Sets the request parameters of the page at `state` on `url` (the configured URL with
    /// its query). A [`PageState::Url`] replaces it.
    fn apply(&self, state: &PageState, url: &mut Url);

    /// What the page fetched at `state` says about the next one.
    fn next(&self, state: &PageState, page: &PageView<'_>) -> Next;
}

/// `[sources.<name>.pagination]`, chosen by `type`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PaginationConfig {
    /// One request per poll.
    #[default]
    None,
    /// `?page=N` from `start`; stops on an empty page, a page shorter than `size` (unless
    /// `stop_on_short_page = false`), or when the page number reaches the value at
    /// `total_pages`.
    PageNumber {
        /// The page parameter. Default `page`.
        #[serde(default = "default_page_param")]
        param: String,
        /// The first page's number. Default 1.
        #[serde(default = "default_start")]
        start: u64,
        /// The page size parameter (e.g. `per_page`), sent with `size`.
        size_param: Option<String>,
        /// Records per page; a shorter page is the last.
        size: Option<u64>,
        /// JSON pointer to the number of pages in the body (e.g. `/total_pages`).
        total_pages: Option<String>,
        /// A page shorter than `size` is the last. Default true; set false for a provider
        /// that may cap the page size below `size` (only an empty page then ends the walk).
        #[serde(default = "default_true")]
        stop_on_short_page: bool,
    },
    /// `?offset=N&limit=L`; stops on an empty page or (unless `stop_on_short_page = false`)
    /// a page shorter than `limit`.
    Offset {
        /// The offset parameter. Default `offset`.
        #[serde(default = "default_offset_param")]
        offset_param: String,
        /// The limit parameter. Default `limit`.
        #[serde(default = "default_limit_param")]
        limit_param: String,
        /// Records per page.
        limit: u64,
        /// A page shorter than `limit` is the last. Default true; see `page_number`.
        #[serde(default = "default_true")]
        stop_on_short_page: bool,
    },
    /// A cursor read from the body at `cursor` (a JSON pointer) and sent as `param`; stops
    /// when it is absent, `null` or empty.
    Cursor {
        /// JSON pointer to the next cursor, e.g. `/meta/next_cursor`.
        cursor: String,
        /// The request parameter that carries it, e.g. `cursor`.
        param: String,
    },
    /// The next page's URL read from the body at `next_url` (a JSON pointer); stops when it is
    /// absent, `null` or empty.
    NextUrl {
        /// JSON pointer to the next URL, e.g. `/next` or `/links/next`.
        next_url: String,
    },
    /// The `Link` header's `rel="next"` target (RFC 8288), as GitHub sends it.
    LinkHeader,
    /// Stripe style: while the body's `has_more` is true, ask for the records after the id of
    /// the last record (`starting_after=<id>`).
    LastRecordId {
        /// JSON pointer to the "more pages" flag. Default `/has_more`.
        #[serde(default = "default_has_more")]
        has_more: String,
        /// The request parameter. Default `starting_after`.
        #[serde(default = "default_after_param")]
        param: String,
        /// JSON pointer to a record's id. Default `/id`.
        #[serde(default = "default_id")]
        id: String,
    },
}

fn default_true() -> bool {
    true
}
fn default_page_param() -> String {
    "page".into()
}
fn default_start() -> u64 {
    1
}
fn default_offset_param() -> String {
    "offset".into()
}
fn default_limit_param() -> String {
    "limit".into()
}
fn default_has_more() -> String {
    "/has_more".into()
}
fn default_after_param() -> String {
    "starting_after".into()
}
fn default_id() -> String {
    "/id".into()
}

impl PaginationConfig {
    /// The strategy.
    pub fn build(&self) -> Box<dyn Paginator> {
        match self.clone() {
            PaginationConfig::None => Box::new(NoPages),
            PaginationConfig::PageNumber {
                param,
                start,
                size_param,
                size,
                total_pages,
                stop_on_short_page,
            } => Box::new(PageNumber {
                param,
                start,
                size_param,
                size: size.filter(|_| stop_on_short_page),
                sent_size: size,
                total_pages,
            }),
            PaginationConfig::Offset {
                offset_param,
                limit_param,
                limit,
                stop_on_short_page,
            } => Box::new(Offset {
                offset_param,
                limit_param,
                limit,
                stop_on_short_page,
            }),
            PaginationConfig::Cursor { cursor, param } => Box::new(BodyCursor { cursor, param }),
            PaginationConfig::NextUrl { next_url } => Box::new(NextUrl { pointer: next_url }),
            PaginationConfig::LinkHeader => Box::new(LinkHeader),
            PaginationConfig::LastRecordId {
                has_more,
                param,
                id,
            } => Box::new(LastRecordId {
                has_more,
                param,
                id,
            }),
        }
    }

    /// The JSON pointers this strategy reads, with their field names (to check them).
    pub fn pointers(&self) -> Vec<(&'static str, &str)> {
        match self {
            PaginationConfig::PageNumber {
                total_pages: Some(p),
                ..
            } => vec![("pagination.total_pages", p)],
            PaginationConfig::Cursor { cursor, .. } => vec![("pagination.cursor", cursor)],
            PaginationConfig::NextUrl { next_url } => vec![("pagination.next_url", next_url)],
            PaginationConfig::LastRecordId { has_more, id, .. } => {
                vec![("pagination.has_more", has_more), ("pagination.id", id)]
            }
            _ => Vec::new(),
        }
    }
}

pub use crate::http::set_query_param as set_param;

/// A non-empty text value at `pointer` (strings unescaped); absent, `null` or `""` is `None`.
fn text_at(body: Option<&RawValue>, pointer: &str) -> Option<String> {
    let found = lookup(body?, pointer)?;
    if is_null(found) {
        return None;
    }
    let text = text_of(found);
    (!text.is_empty()).then(|| text.into_owned())
}

struct NoPages;

impl Paginator for NoPages {
    fn apply(&self, _state: &PageState, _url: &mut Url) {}
    fn next(&self, _state: &PageState, _page: &PageView<'_>) -> Next {
        Next::Last
    }
}

/// The walk cannot go on without the body.
fn unreadable() -> Next {
    Next::Unknown("the page was not valid JSON, so the next page is unknown".into())
}

struct PageNumber {
    param: String,
    start: u64,
    size_param: Option<String>,
    /// The size below which a page is the last (`None`: only an empty page is).
    size: Option<u64>,
    /// The size asked for.
    sent_size: Option<u64>,
    total_pages: Option<String>,
}

impl PageNumber {
    fn number(&self, state: &PageState) -> u64 {
        match state {
            PageState::Number(n) => *n,
            _ => self.start,
        }
    }
}

impl Paginator for PageNumber {
    fn apply(&self, state: &PageState, url: &mut Url) {
        set_param(url, &self.param, &self.number(state).to_string());
        if let (Some(param), Some(size)) = (&self.size_param, self.sent_size) {
            set_param(url, param, &size.to_string());
        }
    }

    fn next(&self, state: &PageState, page: &PageView<'_>) -> Next {
        let number = self.number(state);
        if page.body.is_none() {
            return unreadable();
        }
        if page.records.is_empty() {
            return Next::Last;
        }
        if self
            .size
            .is_some_and(|size| (page.records.len() as u64) < size)
        {
            return Next::Last;
        }
        let total = self
            .total_pages
            .as_deref()
            .and_then(|pointer| text_at(page.body, pointer))
            .and_then(|total| total.parse::<u64>().ok());
        // Page numbers count from `start`; the last page is `start + total - 1`.
        if total.is_some_and(|total| number + 1 >= self.start + total) {
            return Next::Last;
        }
        Next::Page(PageState::Number(number + 1))
    }
}

struct Offset {
    offset_param: String,
    limit_param: String,
    limit: u64,
    stop_on_short_page: bool,
}

impl Offset {
    fn offset(state: &PageState) -> u64 {
        match state {
            PageState::Offset(offset) => *offset,
            _ => 0,
        }
    }
}

impl Paginator for Offset {
    fn apply(&self, state: &PageState, url: &mut Url) {
        set_param(url, &self.offset_param, &Self::offset(state).to_string());
        set_param(url, &self.limit_param, &self.limit.to_string());
    }

    fn next(&self, state: &PageState, page: &PageView<'_>) -> Next {
        if page.body.is_none() {
            return unreadable();
        }
        let count = page.records.len() as u64;
        if count == 0 || (self.stop_on_short_page && count < self.limit) {
            return Next::Last;
        }
        Next::Page(PageState::Offset(Self::offset(state) + count))
    }
}

struct BodyCursor {
    cursor: String,
    param: String,
}

impl Paginator for BodyCursor {
    fn apply(&self, state: &PageState, url: &mut Url) {
        if let PageState::Cursor(cursor) = state {
            set_param(url, &self.param, cursor);
        }
    }

    fn next(&self, _state: &PageState, page: &PageView<'_>) -> Next {
        if page.body.is_none() {
            return unreadable();
        }
        text_at(page.body, &self.cursor).map_or(Next::Last, |c| Next::Page(PageState::Cursor(c)))
    }
}

/// Replaces the URL by a [`PageState::Url`]'s.
fn apply_url(state: &PageState, url: &mut Url) {
    if let PageState::Url(next) = state {
        if let Ok(next) = Url::parse(next) {
            *url = next;
        }
    }
}

struct NextUrl {
    pointer: String,
}

impl Paginator for NextUrl {
    fn apply(&self, state: &PageState, url: &mut Url) {
        apply_url(state, url);
    }

    fn next(&self, _state: &PageState, page: &PageView<'_>) -> Next {
        if page.body.is_none() {
            return unreadable();
        }
        let Some(next) = text_at(page.body, &self.pointer) else {
            return Next::Last;
        };
        match page.url.join(&next) {
            Ok(resolved) => Next::Page(PageState::Url(resolved.into())),
            Err(e) => Next::Unknown(format!("the next URL is not a URL ({e})")),
        }
    }
}

struct LinkHeader;

impl Paginator for LinkHeader {
    fn apply(&self, state: &PageState, url: &mut Url) {
        apply_url(state, url);
    }

    /// RFC 8288 §3 and Appendix B.2, through the `http-link` crate: targets may hold commas,
    /// `rel` may list several relation types, relative targets resolve against the request.
    fn next(&self, _state: &PageState, page: &PageView<'_>) -> Next {
        // Several `Link` headers are one list (RFC 9110 §5.3).
        let joined = page
            .headers
            .get_all(http::header::LINK)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        if joined.trim().is_empty() {
            return Next::Last;
        }
        match http_link::parse_link_header(&joined, page.url) {
            Ok(links) => links
                .into_iter()
                .find(|link| link.rel == "next")
                .map_or(Next::Last, |link| {
                    Next::Page(PageState::Url(link.target.into()))
                }),
            Err(e) => Next::Unknown(format!("the Link header could not be parsed ({e:?})")),
        }
    }
}

struct LastRecordId {
    has_more: String,
    param: String,
    id: String,
}

impl Paginator for LastRecordId {
    fn apply(&self, state: &PageState, url: &mut Url) {
        if let PageState::After(id) = state {
            set_param(url, &self.param, id);
        }
    }

    fn next(&self, _state: &PageState, page: &PageView<'_>) -> Next {
        let Some(body) = page.body else {
            return unreadable();
        };
        let more = lookup(body, &self.has_more).is_some_and(|flag| flag.get() == "true");
        if !more {
            return Next::Last;
        }
        let Some(last) = page.records.last() else {
            return Next::Unknown("`has_more` is true but the page has no records".into());
        };
        match text_at(Some(last), &self.id) {
            Some(id) => Next::Page(PageState::After(id)),
            None => Next::Unknown(format!("the last record has no id at `{}`", self.id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    struct Fetched {
        url: Url,
        headers: HeaderMap,
        body: Box<RawValue>,
    }

    fn fetched(url: &str, body: &str) -> Fetched {
        Fetched {
            url: url.parse().unwrap(),
            headers: HeaderMap::new(),
            body: RawValue::from_string(body.to_owned()).unwrap(),
        }
    }

    fn next_of(strategy: &dyn Paginator, state: &PageState, page: &Fetched, records: &str) -> Next {
        let body = &*page.body;
        let records: Vec<&RawValue> = lookup(body, records)
            .and_then(crate::json::elements)
            .unwrap_or_default();
        strategy.next(
            state,
            &PageView {
                url: &page.url,
                headers: &page.headers,
                body: Some(body),
                records: &records,
            },
        )
    }

    fn page_of(next: Next) -> PageState {
        match next {
            Next::Page(state) => state,
            other => panic!("expected a next page, got {other:?}"),
        }
    }

    /// What a strategy says of a page whose body was not JSON.
    fn next_of_unreadable(strategy: &dyn Paginator, headers: HeaderMap) -> Next {
        let url: Url = "http://h/x".parse().unwrap();
        strategy.next(
            &PageState::First,
            &PageView {
                url: &url,
                headers: &headers,
                body: None,
                records: &[],
            },
        )
    }

    #[test]
    fn an_unreadable_page_leaves_the_next_page_unknown_unless_a_header_names_it() {
        for config in [
            r#"{"type":"page_number"}"#,
            r#"{"type":"offset","limit":5}"#,
            r#"{"type":"cursor","cursor":"/next","param":"c"}"#,
            r#"{"type":"next_url","next_url":"/next"}"#,
            r#"{"type":"last_record_id"}"#,
        ] {
            let strategy = serde_json::from_str::<PaginationConfig>(config)
                .unwrap()
                .build();
            assert!(
                matches!(
                    next_of_unreadable(&*strategy, HeaderMap::new()),
                    Next::Unknown(_)
                ),
                "{config}"
            );
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::LINK,
            "<http://h/x?page=2>; rel=\"next\"".parse().unwrap(),
        );
        assert_eq!(
            next_of_unreadable(&*PaginationConfig::LinkHeader.build(), headers),
            Next::Page(PageState::Url("http://h/x?page=2".into()))
        );
    }

    #[test]
    fn a_capped_page_size_does_not_end_the_walk_when_short_pages_are_not_last() {
        let strategy = PaginationConfig::Offset {
            offset_param: "offset".into(),
            limit_param: "limit".into(),
            limit: 200,
            stop_on_short_page: false,
        }
        .build();
        let capped = fetched("http://h/x", "[1,2,3]");
        assert_eq!(
            next_of(&*strategy, &PageState::First, &capped, ""),
            Next::Page(PageState::Offset(3))
        );
        assert_eq!(
            next_of(
                &*strategy,
                &PageState::Offset(3),
                &fetched("http://h/x", "[]"),
                ""
            ),
            Next::Last
        );
    }

    fn applied(strategy: &dyn Paginator, state: &PageState, base: &str) -> String {
        let mut url: Url = base.parse().unwrap();
        strategy.apply(state, &mut url);
        url.into()
    }

    #[test]
    fn page_numbers_stop_on_short_empty_or_last_pages() {
        let strategy = PaginationConfig::PageNumber {
            param: "page".into(),
            start: 1,
            size_param: Some("per_page".into()),
            size: Some(2),
            total_pages: Some("/total_pages".into()),
            stop_on_short_page: true,
        }
        .build();
        assert_eq!(
            applied(&*strategy, &PageState::First, "http://h/x?page=9&q=1"),
            "http://h/x?q=1&page=1&per_page=2"
        );
        let full = fetched("http://h/x", r#"{"items":[1,2],"total_pages":3}"#);
        assert_eq!(
            next_of(&*strategy, &PageState::First, &full, "/items"),
            Next::Page(PageState::Number(2))
        );
        assert_eq!(
            next_of(&*strategy, &PageState::Number(3), &full, "/items"),
            Next::Last
        );
        let short = fetched("http://h/x", r#"{"items":[1],"total_pages":9}"#);
        assert_eq!(
            next_of(&*strategy, &PageState::First, &short, "/items"),
            Next::Last
        );
        let empty = fetched("http://h/x", r#"{"items":[],"total_pages":9}"#);
        assert_eq!(
            next_of(&*strategy, &PageState::First, &empty, "/items"),
            Next::Last
        );
    }

    #[test]
    fn offsets_advance_by_the_records_read() {
        let strategy = PaginationConfig::Offset {
            offset_param: "offset".into(),
            limit_param: "limit".into(),
            limit: 2,
            stop_on_short_page: true,
        }
        .build();
        assert_eq!(
            applied(&*strategy, &PageState::Offset(4), "http://h/x"),
            "http://h/x?offset=4&limit=2"
        );
        let full = fetched("http://h/x", "[1,2]");
        assert_eq!(
            next_of(&*strategy, &PageState::Offset(4), &full, ""),
            Next::Page(PageState::Offset(6))
        );
        assert_eq!(
            next_of(
                &*strategy,
                &PageState::First,
                &fetched("http://h/x", "[1]"),
                ""
            ),
            Next::Last
        );
    }

    #[test]
    fn body_cursors_and_next_urls_stop_when_absent_null_or_empty() {
        let cursor = PaginationConfig::Cursor {
            cursor: "/meta/next".into(),
            param: "cursor".into(),
        }
        .build();
        let page = fetched("http://h/x", r#"{"data":[1],"meta":{"next":"c2"}}"#);
        assert_eq!(
            next_of(&*cursor, &PageState::First, &page, "/data"),
            Next::Page(PageState::Cursor("c2".into()))
        );
        assert_eq!(
            applied(
                &*cursor,
                &PageState::Cursor("a b".into()),
                "http://h/x?cursor=old"
            ),
            "http://h/x?cursor=a+b"
        );
        for end in [
            r#"{"data":[1],"meta":{"next":null}}"#,
            r#"{"data":[1],"meta":{"next":""}}"#,
            r#"{"data":[1]}"#,
        ] {
            assert_eq!(
                next_of(
                    &*cursor,
                    &PageState::First,
                    &fetched("http://h/x", end),
                    "/data"
                ),
                Next::Last,
                "{end}"
            );
        }
        let next_url = PaginationConfig::NextUrl {
            next_url: "/next".into(),
        }
        .build();
        let page = fetched(
            "http://h/api/x?page=1",
            r#"{"results":[1],"next":"/api/x?page=2"}"#,
        );
        let next = page_of(next_of(&*next_url, &PageState::First, &page, "/results"));
        assert_eq!(next, PageState::Url("http://h/api/x?page=2".into()));
        assert_eq!(
            applied(&*next_url, &next, "http://h/api/x"),
            "http://h/api/x?page=2"
        );
    }

    #[test]
    fn link_headers_follow_rel_next_across_several_headers() {
        let strategy = PaginationConfig::LinkHeader.build();
        let mut page = fetched(
            "https://api.github.com/repositories/1/issues?per_page=3",
            "[1,2,3]",
        );
        page.headers.append(
            http::header::LINK,
            r#"<https://api.github.com/repositories/1/issues?per_page=3&page=2>; rel="next""#
                .parse()
                .unwrap(),
        );
        page.headers.append(
            http::header::LINK,
            r#"<https://api.github.com/repositories/1/issues?per_page=3&page=5>; rel="last""#
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_of(&*strategy, &PageState::First, &page, ""),
            Next::Page(PageState::Url(
                "https://api.github.com/repositories/1/issues?per_page=3&page=2".into()
            ))
        );
        page.headers.clear();
        page.headers.insert(
            http::header::LINK,
            r#"<https://api.github.com/x?page=1>; rel="prev", <https://api.github.com/x?page=1>; rel="first""#.parse().unwrap(),
        );
        assert_eq!(
            next_of(&*strategy, &PageState::First, &page, ""),
            Next::Last
        );
    }

    #[test]
    fn link_targets_may_hold_commas_and_rel_may_list_several_types() {
        let strategy = PaginationConfig::LinkHeader.build();
        let mut page = fetched("https://api.example.com/x?fields=id,name", "[1]");
        page.headers.insert(
            http::header::LINK,
            r#"</x?fields=id,name&page=2>; rel="next nofollow", <https://api.example.com/x?expand&page=1>; rel="first""#
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_of(&*strategy, &PageState::First, &page, ""),
            Next::Page(PageState::Url(
                "https://api.example.com/x?fields=id,name&page=2".into()
            ))
        );
        page.headers
            .insert(http::header::LINK, "page=2; rel=next".parse().unwrap());
        assert!(matches!(
            next_of(&*strategy, &PageState::First, &page, ""),
            Next::Unknown(_)
        ));
    }

    #[test]
    fn stripe_style_asks_after_the_last_id_while_has_more() {
        let strategy = PaginationConfig::LastRecordId {
            has_more: "/has_more".into(),
            param: "starting_after".into(),
            id: "/id".into(),
        }
        .build();
        let page = fetched(
            "https://api.stripe.com/v1/events",
            r#"{"object":"list","data":[{"id":"evt_1"},{"id":"evt_2"}],"has_more":true}"#,
        );
        let next = page_of(next_of(&*strategy, &PageState::First, &page, "/data"));
        assert_eq!(next, PageState::After("evt_2".into()));
        assert_eq!(
            applied(
                &*strategy,
                &next,
                "https://api.stripe.com/v1/events?limit=2"
            ),
            "https://api.stripe.com/v1/events?limit=2&starting_after=evt_2"
        );
        let last = fetched(
            "https://api.stripe.com/v1/events",
            r#"{"data":[{"id":"evt_3"}],"has_more":false}"#,
        );
        assert_eq!(next_of(&*strategy, &next, &last, "/data"), Next::Last);
        let empty = fetched(
            "https://api.stripe.com/v1/events",
            r#"{"data":[],"has_more":true}"#,
        );
        assert!(matches!(
            next_of(&*strategy, &next, &empty, "/data"),
            Next::Unknown(_)
        ));
    }
}
