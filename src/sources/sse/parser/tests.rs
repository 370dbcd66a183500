use super::*;
use proptest::prelude::*;

/// Every event `chunks` give, then the error if one ended them.
fn parse(limit: usize, chunks: &[&[u8]]) -> (Vec<Event>, Option<Oversized>) {
    read_all(chunks.iter().copied(), limit)
}

/// The events of `stream` in one chunk, with no practical cap.
fn events(stream: &[u8]) -> Vec<Event> {
    let (events, error) = parse(usize::MAX, &[stream]);
    assert_eq!(error, None);
    events
}

/// `(data, type, id, retry)` of one event, as text.
type Summary = (String, String, Option<String>, Option<u64>);

/// `(data, type, id, retry)` of each event, as text.
fn summary(events: &[Event]) -> Vec<Summary> {
    events
        .iter()
        .map(|e| {
            (
                String::from_utf8_lossy(&e.data).into_owned(),
                e.event_type.to_string(),
                e.id.as_deref().map(str::to_owned),
                e.retry,
            )
        })
        .collect()
}

fn data_of(stream: &[u8]) -> Vec<String> {
    summary(&events(stream)).into_iter().map(|e| e.0).collect()
}

#[test]
fn lines_end_at_lf_cr_and_crlf_even_split_across_chunks() {
    for stream in [
        &b"data: a\n\ndata: b\n\n"[..],
        b"data: a\r\rdata: b\r\r",
        b"data: a\r\n\r\ndata: b\r\n\r\n",
        b"data: a\r\n\rdata: b\n\r\n",
    ] {
        assert_eq!(data_of(stream), ["a", "b"], "{stream:?}");
    }
    // A CRLF cut between its CR and its LF is one terminator, also with an empty chunk between.
    let (split, _) = parse(64, &[b"data: a\r", b"\ndata: b\r", b"", b"\n\r\n"]);
    assert_eq!(summary(&split)[0].0, "a\nb");
    // CR then CR is a blank line.
    let (split, _) = parse(64, &[b"data: a\r", b"\r"]);
    assert_eq!(summary(&split)[0].0, "a");
}

#[test]
fn one_leading_bom_is_stripped_even_split_across_chunks() {
    assert_eq!(data_of(b"\xEF\xBB\xBFdata: a\n\n"), ["a"]);
    let (split, _) = parse(64, &[b"\xEF", b"\xBB", b"\xBFdata: a\n\n"]);
    assert_eq!(summary(&split)[0].0, "a");
    // A second BOM is part of the first field's name: `\u{feff}data` is an unknown field.
    assert!(data_of(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n") == ["b"]);
    // A BOM later in the stream is not stripped.
    assert!(data_of(b"data: a\n\n\xEF\xBB\xBFdata: b\n\n") == ["a"]);
    // Bytes that only start like a BOM are kept.
    assert_eq!(data_of(b"\xEF\xBBdata: a\n\n"), Vec::<String>::new());
    let (short, _) = parse(64, &[b"\xEF", b"data: a\n\n"]);
    assert!(short.is_empty());
}

#[test]
fn comments_are_ignored() {
    assert_eq!(
        data_of(b":hello\ndata: a\n:data: b\n\n:\n\n"),
        ["a"],
        "a comment neither adds data nor ends an event"
    );
}

#[test]
fn a_field_value_loses_one_leading_space_only() {
    let parsed = summary(&events(
        b"data:a\n\ndata: a\n\ndata:  a\n\ndata:\ta\n\ndata: a \n\n",
    ));
    let data: Vec<&str> = parsed.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(data, ["a", "a", " a", "\ta", "a "]);
    // A colon in the value is kept.
    assert_eq!(data_of(b"data: a: b\n\n"), ["a: b"]);
}

#[test]
fn a_field_without_colon_has_an_empty_value() {
    // `data` alone adds an empty line: the event is dispatched with empty data.
    assert_eq!(data_of(b"data\n\n"), [""]);
    assert_eq!(data_of(b"data\ndata\n\n"), ["\n"]);
    // `event` alone resets the type to the default.
    let parsed = summary(&events(b"event: x\nevent\ndata: a\n\n"));
    assert_eq!(parsed[0].1, "message");
}

#[test]
fn data_lines_join_with_lf_and_an_empty_buffer_dispatches_nothing() {
    assert_eq!(
        data_of(b"data: a\ndata: b\ndata\ndata: c\n\n"),
        ["a\nb\n\nc"]
    );
    // No data field: nothing, however many blank lines.
    assert_eq!(data_of(b"event: x\n\n\n\nid: 1\n\n"), Vec::<String>::new());
    // A data line split across chunks joins its parts.
    let (split, _) = parse(64, &[b"data: he", b"llo\ndata", b": world\n\n"]);
    assert_eq!(summary(&split)[0].0, "hello\nworld");
    // The stream's end does not dispatch an unfinished event.
    assert_eq!(data_of(b"data: a\n\ndata: b\n"), ["a"]);
}

#[test]
fn the_type_defaults_to_message_and_does_not_carry_over() {
    let parsed = summary(&events(
        b"event: add\ndata: 1\n\ndata: 2\n\nevent: add\ndata: 3\n\nevent: x\n\ndata: 4\n\n",
    ));
    let types: Vec<&str> = parsed.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(types, ["add", "message", "add", "message"]);
    // An unchanged type is one shared string.
    let parsed = events(b"event: add\ndata: 1\n\nevent: add\ndata: 2\n\n");
    assert!(Arc::ptr_eq(&parsed[0].event_type, &parsed[1].event_type));
}

#[test]
fn the_last_event_id_persists_and_an_id_with_nul_is_ignored() {
    let parsed = summary(&events(
        b"data: 0\n\nid: 1\ndata: a\n\ndata: b\n\nid: 2\n\ndata: c\n\nid: x\0y\ndata: d\n\nid\ndata: e\n\n",
    ));
    let ids: Vec<Option<&str>> = parsed.iter().map(|e| e.2.as_deref()).collect();
    // An id-only block (no data) still moves the last event id; an empty id resets it to "".
    assert_eq!(
        ids,
        [None, Some("1"), Some("1"), Some("2"), Some("2"), Some("")]
    );
    // An unchanged id is one shared string.
    let parsed = events(b"id: 1\ndata: a\n\ndata: b\n\n");
    assert!(Arc::ptr_eq(
        parsed[0].id.as_ref().unwrap(),
        parsed[1].id.as_ref().unwrap()
    ));
}

#[test]
fn retry_takes_ascii_digits_only() {
    let retries = |stream: &[u8]| -> Vec<Option<u64>> {
        summary(&events(stream)).into_iter().map(|e| e.3).collect()
    };
    assert_eq!(retries(b"retry: 1500\ndata: a\n\n"), [Some(1500)]);
    for junk in [
        "retry: +5",
        "retry: -5",
        "retry: 5s",
        "retry:  5",
        "retry:",
        "retry: ５",
    ] {
        let stream = format!("{junk}\ndata: a\n\n");
        assert_eq!(retries(stream.as_bytes()), [None], "{junk}");
    }
    // A value past u64 is ignored; the last valid one of the block counts.
    assert_eq!(
        retries(
            b"retry: 99999999999999999999\ndata: a\n\nretry: 1\nretry: 2\nretry: x\ndata: b\n\n"
        ),
        [None, Some(2)]
    );
    // The value belongs to its block only.
    assert_eq!(
        retries(b"retry: 7\ndata: a\n\ndata: b\n\n"),
        [Some(7), None]
    );
}

#[test]
fn retry_sets_the_reconnection_time_even_in_a_block_without_data() {
    let mut parser = EventParser::new(64);
    parser.feed(Bytes::from_static(b"retry: 5\n\nretry: x\n\n"));
    assert_eq!(parser.next_event(), Ok(None));
    assert_eq!(parser.take_reconnection_time(), Some(5));
    assert_eq!(parser.take_reconnection_time(), None, "taken once");
    // With an event: the event's block value, seen as soon as the event is.
    parser.feed(Bytes::from_static(
        b"retry: 6\nretry: 7\ndata: a\n\nretry: 8\n",
    ));
    assert_eq!(parser.next_event().unwrap().unwrap().retry, Some(7));
    assert_eq!(parser.take_reconnection_time(), Some(7));
    assert_eq!(parser.next_event(), Ok(None));
    assert_eq!(parser.take_reconnection_time(), Some(8));
}

#[test]
fn data_is_passed_on_as_bytes_and_type_and_id_decode_with_replacement() {
    let parsed = events(b"id: \xFF1\nevent: t\xFF\ndata: {\"a\":\"\xFF\"}\n\n");
    assert_eq!(&parsed[0].data[..], b"{\"a\":\"\xFF\"}");
    assert_eq!(&*parsed[0].event_type, "t\u{FFFD}");
    assert_eq!(parsed[0].id.as_deref(), Some("\u{FFFD}1"));
    // Non-ASCII that is valid UTF-8 stays as it is.
    assert_eq!(data_of("data: é😀\n\n".as_bytes()), ["é😀"]);
}

#[test]
fn an_event_owns_its_data_in_a_buffer_of_its_exact_size() {
    let chunk = Bytes::from(b"data: a\n\n".repeat(100));
    let mut parser = EventParser::new(64);
    parser.feed(chunk.clone());
    let event = parser.next_event().unwrap().unwrap();
    assert_eq!(&event.data[..], b"a");
    // Not a slice of the chunk: its bytes are elsewhere.
    let within = chunk.as_ptr_range();
    assert!(!within.contains(&event.data.as_ptr()));
    // A `Bytes` made by copying a slice owns exactly that slice.
    assert_eq!(Vec::from(event.data).capacity(), 1);
}

#[test]
fn unknown_fields_and_lone_blank_lines_are_ignored() {
    assert_eq!(data_of(b"foo: bar\n\n\n\r\n\rdata: a\nDATA: b\n\n"), ["a"]);
    // An `event:` with an empty value alone in a block is no error.
    assert_eq!(data_of(b"event:\n\ndata: a\n\n"), ["a"]);
}

// The `max_event_bytes` cases, from the scanner the parser replaced.

#[test]
fn a_crlf_split_across_chunks_is_one_terminator_for_the_cap() {
    // `data: abc\r` | `\n` then a blank line: the event ends, so the next one starts at 0.
    let chunks: [&[u8]; 4] = [b"data: abc\r", b"\n\r", b"\n", b"data: xyz\r\n\r\n"];
    assert_eq!(parse(9, &chunks).1, None);
    // Were the split LF a blank line, `data: abc` + `data: xyz` would be one 18-byte event.
    let joined: [&[u8]; 2] = [b"data: abc\r", b"\ndata: xyz\r\n\r\n"];
    assert_eq!(parse(17, &joined).1, Some(Oversized { limit: 17 }));
    assert_eq!(parse(18, &joined).1, None);
    // An empty chunk between CR and LF changes nothing.
    let with_empty: [&[u8]; 3] = [b"data: abc\r", b"", b"\ndata: xyz\r\n\r\n"];
    assert_eq!(parse(17, &with_empty).1, Some(Oversized { limit: 17 }));
    // CR alone ends a line, LF alone too, and CR then CR is a blank line.
    let cr_only: [&[u8]; 2] = [b"data: abc\r", b"\rdata: xyz\r\r"];
    let (events, error) = parse(9, &cr_only);
    assert_eq!((events.len(), error), (2, None));
}

#[test]
fn many_small_events_under_the_cap_never_trip_it() {
    let event = b"id: 42\nevent: update\ndata: {\"n\":42}\n\n";
    let stream = event.repeat(100_000);
    let chunks: Vec<&[u8]> = stream.chunks(4096).collect();
    let per_event = "id: 42".len() + "event: update".len() + "data: {\"n\":42}".len();
    let (events, error) = parse(per_event, &chunks);
    assert_eq!((events.len(), error), (100_000, None));
    // One byte less: the first event's `data:` line trips it, before any event.
    let (events, error) = parse(per_event - 1, &chunks);
    assert_eq!(
        (events.len(), error),
        (
            0,
            Some(Oversized {
                limit: per_event - 1
            })
        )
    );
}

#[test]
fn one_line_over_the_cap_trips_it_after_the_events_before() {
    let mut stream = b"data: ok\n\n".to_vec();
    stream.extend(std::iter::repeat_n(b'x', 100));
    let chunks: Vec<&[u8]> = stream.chunks(7).collect();
    let (events, error) = parse(64, &chunks);
    assert_eq!(summary(&events)[0].0, "ok");
    assert_eq!((events.len(), error), (1, Some(Oversized { limit: 64 })));
    // A comment line is capped as well.
    assert_eq!(
        parse(8, &[b":0123456789\n"]).1,
        Some(Oversized { limit: 8 })
    );
    // A line of exactly the cap passes.
    assert_eq!(parse(10, &[b"data: 0123\n\n"]).1, None);
    // The parser is spent: the error comes again, and no event.
    let mut parser = EventParser::new(4);
    parser.feed(Bytes::from_static(b"data: 0123456789\n\ndata: a\n\n"));
    assert!(parser.next_event().is_err());
    parser.feed(Bytes::from_static(b"data: a\n\n"));
    assert!(parser.next_event().is_err());
}

#[test]
fn one_event_of_many_short_lines_over_the_cap_trips_it() {
    let stream = b"data: 0123456789\n".repeat(1000);
    let chunks: Vec<&[u8]> = stream.chunks(1000).collect();
    assert_eq!(parse(1024, &chunks).1, Some(Oversized { limit: 1024 }));
    // The same lines as separate events are fine.
    let events = b"data: 0123456789\n\n".repeat(1000);
    assert_eq!(parse(1024, &[&events]).1, None);
    // Comments between the lines do not count toward the event.
    let commented = b":keep-alive\r\n".repeat(10_000);
    assert_eq!(parse(1024, &[&commented]).1, None);
}

#[test]
fn the_error_says_what_to_do() {
    assert_eq!(
        Oversized { limit: 10 }.to_string(),
        "an event or line exceeded `max_event_bytes` (10 bytes); raise it or fix the feed"
    );
}

/// The cap's definition, byte by byte: the offset where a line or an event first passes
/// `limit`.
fn trip_offset(limit: usize, stream: &[u8]) -> Option<usize> {
    let (mut line, mut event, mut comment, mut after_cr) = (0, 0, false, false);
    for (at, &byte) in stream.iter().enumerate() {
        if std::mem::take(&mut after_cr) && byte == b'\n' {
            continue;
        }
        if byte == b'\n' || byte == b'\r' {
            if line == 0 {
                event = 0;
            }
            line = 0;
            after_cr = byte == b'\r';
            continue;
        }
        if line == 0 {
            comment = byte == b':';
        }
        line += 1;
        if !comment {
            event += 1;
        }
        if line > limit || event > limit {
            return Some(at);
        }
    }
    None
}

/// Cuts `stream` after each byte whose cut is 1, and adds an empty chunk where it is 2.
fn cut<'a>(stream: &'a [u8], cuts: &[u8]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut from = 0;
    for (at, cut) in cuts.iter().enumerate().take(stream.len()) {
        if *cut > 0 {
            chunks.push(&stream[from..=at]);
            from = at + 1;
        }
        if *cut == 2 {
            chunks.push(&[][..]);
        }
    }
    chunks.push(&stream[from..]);
    chunks
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// However the stream is cut, the parser fails where the definition trips, after
    /// exactly the events completed before that byte.
    #[test]
    fn the_cap_trips_where_the_definition_does(
        bytes in proptest::collection::vec(
            (
                prop_oneof![4 => Just(b'a'), 1 => Just(b':'), 2 => Just(b'\r'), 2 => Just(b'\n')],
                prop_oneof![8 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8)],
            ),
            0..300,
        ),
        limit in 1usize..40,
    ) {
        let stream: Vec<u8> = bytes.iter().map(|(byte, _)| *byte).collect();
        let cuts: Vec<u8> = bytes.iter().map(|(_, cut)| *cut).collect();
        let chunks = cut(&stream, &cuts);
        let (events, error) = parse(limit, &chunks);
        match trip_offset(limit, &stream) {
            None => {
                prop_assert_eq!(error, None);
                prop_assert_eq!(events, self::events(&stream));
            }
            Some(at) => {
                prop_assert_eq!(error, Some(Oversized { limit }));
                prop_assert_eq!(events, self::events(&stream[..at]));
            }
        }
    }
}

// The same streams through eventsource-client 0.18, the parser this one replaced.

/// An [`HttpTransport`] that answers with `200 text/event-stream` and `chunks`.
#[derive(Clone)]
struct Replay(Vec<Bytes>);

impl launchdarkly_sdk_transport::HttpTransport for Replay {
    fn request(
        &self,
        _request: http::Request<Option<Bytes>>,
    ) -> launchdarkly_sdk_transport::ResponseFuture {
        let chunks = self.0.clone();
        Box::pin(async move {
            let body: launchdarkly_sdk_transport::ByteStream =
                Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)));
            Ok(http::Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(body)
                .expect("a static response builds"))
        })
    }
}

/// `(data, type, id, retry)` of the events eventsource-client reads from `chunks`, and
/// whether it stopped at an error before the body's end.
fn reference_events(chunks: &[&[u8]]) -> (Vec<Summary>, bool) {
    use eventsource_client::{self as es, Client as _};
    use futures::StreamExt;
    let chunks: Vec<Bytes> = chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let client = es::ClientBuilder::for_url("http://127.0.0.1/stream")
            .unwrap()
            .reconnect(es::ReconnectOptions::reconnect(false).build())
            .build_with_transport(Replay(chunks));
        let mut stream = client.stream();
        let mut events = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(es::SSE::Event(e)) => events.push((e.data, e.event_type, e.id, e.retry)),
                Ok(_) => {}
                Err(es::Error::Eof | es::Error::UnexpectedEof) => return (events, false),
                Err(_) => return (events, true),
            }
        }
        (events, false)
    })
}

/// One line of a generated stream, without its terminator.
fn line() -> impl Strategy<Value = String> {
    let value = proptest::collection::vec(
        prop_oneof![
            6 => Just("a"), 2 => Just(" "), 1 => Just(":"), 1 => Just("é"),
            1 => Just("😀"), 1 => Just("\u{feff}"), 1 => Just("\t"),
        ],
        0..6,
    )
    .prop_map(|parts| parts.concat());
    let name = prop_oneof![
        4 => Just("data"), 2 => Just("event"), 2 => Just("id"), 1 => Just("retry"),
        1 => Just("foo"), 1 => Just(""), 1 => Just("Data"),
    ];
    prop_oneof![
        8 => (name, prop_oneof![Just(":"), Just(": "), Just(":  ")], value.clone())
            .prop_map(|(n, sep, v)| format!("{n}{sep}{v}")),
        1 => prop_oneof![Just("data"), Just("event"), Just("id"), Just("retry")]
            .prop_map(str::to_owned),
        1 => value.clone().prop_map(|v| format!("id: {v}\0{v}")),
        1 => (0u64..100_000, prop_oneof![Just(""), Just("x"), Just(" ")])
            .prop_map(|(n, junk)| format!("retry: {n}{junk}")),
        1 => value.prop_map(|v| format!(":{v}")),
        2 => Just(String::new()),
    ]
}

/// A generated stream: an optional BOM, then lines with random terminators.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let terminator = prop_oneof![Just("\n"), Just("\r"), Just("\r\n")];
    (
        any::<bool>(),
        proptest::collection::vec((line(), terminator), 0..40),
    )
        .prop_map(|(bom, lines)| {
            let mut stream = if bom { BOM.to_vec() } else { Vec::new() };
            for (line, end) in lines {
                stream.extend_from_slice(line.as_bytes());
                stream.extend_from_slice(end.as_bytes());
            }
            stream
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Our events are eventsource-client's for the same chunks (up to where it fails the
    /// connection on a block the standard ignores), and do not depend on the cuts.
    #[test]
    fn events_match_eventsource_client_however_the_stream_is_cut(
        stream in stream(),
        cuts in proptest::collection::vec(prop_oneof![8 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8)], 0..600),
    ) {
        let chunks = cut(&stream, &cuts);
        let (ours, error) = parse(usize::MAX, &chunks);
        prop_assert_eq!(error, None);
        prop_assert_eq!(&ours, &self::events(&stream), "the cuts changed the events");
        let ours = summary(&ours);
        let (theirs, failed) = reference_events(&chunks);
        if failed {
            prop_assert!(ours.len() >= theirs.len());
            prop_assert_eq!(&ours[..theirs.len()], &theirs[..]);
        } else {
            prop_assert_eq!(ours, theirs);
        }
    }
}
