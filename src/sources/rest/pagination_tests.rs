//! Unit tests of the pagination strategies.

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
    let records: Vec<&RawValue> = crate::json::lookup(body, records)
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
    // A server's total near u64::MAX neither overflows nor ends the walk early.
    let huge = fetched(
        "http://h/x",
        r#"{"items":[1,2],"total_pages":18446744073709551615}"#,
    );
    assert_eq!(
        next_of(&*strategy, &PageState::Number(7), &huge, "/items"),
        Next::Page(PageState::Number(8))
    );
    assert_eq!(
        next_of(&*strategy, &PageState::Number(u64::MAX), &huge, "/items"),
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
