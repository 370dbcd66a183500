//! Pagination strategies of the REST source, each a small type behind [`Paginator`]:
//! page number, offset/limit, a cursor from the body, a next URL from the body, the `Link`
//! header (RFC 8288, GitHub style) and the id of the last record (Stripe's `has_more` +
//! `starting_after`). Pure logic: a strategy sets request parameters and reads what the page
//! says about the next one.

use serde::Deserialize;
use serde_json::value::RawValue;
use url::Url;

use crate::{
    json::{is_null, text_of, Pointer},
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
    /// The strategy, its pointers compiled.
    ///
    /// # Panics
    /// A pointer that [`PaginationConfig::pointers`] did not pass as valid: the REST config
    /// check runs first.
    pub fn build(&self) -> Box<dyn Paginator> {
        let compiled =
            |text: String| Pointer::parse(&text).expect("checked by the REST config check");
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
                total_pages: total_pages.map(compiled),
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
            PaginationConfig::Cursor { cursor, param } => Box::new(BodyCursor {
                cursor: compiled(cursor),
                param,
            }),
            PaginationConfig::NextUrl { next_url } => Box::new(NextUrl {
                pointer: compiled(next_url),
            }),
            PaginationConfig::LinkHeader => Box::new(LinkHeader),
            PaginationConfig::LastRecordId {
                has_more,
                param,
                id,
            } => Box::new(LastRecordId {
                has_more: compiled(has_more),
                param,
                id: compiled(id),
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
fn text_at(body: Option<&RawValue>, pointer: &Pointer) -> Option<String> {
    let found = pointer.lookup(body?)?;
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
    total_pages: Option<Pointer>,
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
            .as_ref()
            .and_then(|pointer| text_at(page.body, pointer))
            .and_then(|total| total.parse::<u64>().ok());
        // Page numbers count from `start`; the last page is `start + total - 1`. The total is
        // the server's number: saturate rather than overflow on a huge one.
        if total.is_some_and(|total| number.saturating_add(1) >= self.start.saturating_add(total)) {
            return Next::Last;
        }
        match number.checked_add(1) {
            Some(next) => Next::Page(PageState::Number(next)),
            None => Next::Last,
        }
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
    cursor: Pointer,
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
    pointer: Pointer,
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
    has_more: Pointer,
    param: String,
    id: Pointer,
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
        let more = self
            .has_more
            .lookup(body)
            .is_some_and(|flag| flag.get() == "true");
        if !more {
            return Next::Last;
        }
        let Some(last) = page.records.last() else {
            return Next::Unknown("`has_more` is true but the page has no records".into());
        };
        match text_at(Some(last), &self.id) {
            Some(id) => Next::Page(PageState::After(id)),
            None => Next::Unknown(format!(
                "the last record has no id at `{}`",
                self.id.as_str()
            )),
        }
    }
}

#[cfg(test)]
#[path = "pagination_tests.rs"]
mod tests;
