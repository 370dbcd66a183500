//! Entry points for the fuzz targets in `fuzz/`: one function per target, each taking the
//! fuzzer's bytes as what a feed or a server controls, and calling the real parsing code with
//! them.
//!
//! `fuzz/fuzz_targets/<target>.rs` calls [`<target>`](self) under libFuzzer (nightly, cargo-fuzz);
//! `tests/fuzz_corpus.rs` calls the same function with every file of `fuzz/corpus/<target>/`
//! and `fuzz/artifacts/<target>/`, so `cargo test` on stable replays the seeds and every crash
//! found. An entry function never panics on any input: a panic is a bug in the code it calls,
//! or a broken invariant that the function asserts (stated on each function).
//!
//! Inputs are text where the real input is text, so that seed files can be read and written by
//! hand: see each function for its layout. Nothing here is used by the daemon.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use secrecy::SecretString;
use serde_json::value::RawValue;

use crate::{
    http::{parse_retry_after, rate_limit_status, MAX_RETRY_AFTER},
    json::{check_nesting, Pointer, MAX_NESTING},
    record::Record,
    sources::{
        sse::parser::read_all,
        webhook::signature::{
            GenericHmacScheme, GitHubScheme, SignatureEncoding, SignatureScheme,
            StandardWebhooksScheme, StripeScheme, DEFAULT_TIMESTAMP_TOLERANCE,
        },
        websocket::{FrameDecoder, FrameFilter, FrameRules},
        PayloadFormat,
    },
    stage::{transform::Transform, Unfilled},
    stage::{Admission, EventTime, Key, SourceRules, Stage, StageConfig, Template, TimestampUnit},
};

/// A target's entry function: it takes the fuzzer's bytes.
pub type Entry = fn(&[u8]);

/// The names of the targets, as in `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`,
/// with their entry functions.
pub const TARGETS: &[(&str, Entry)] = &[
    ("sse_stream", sse_stream),
    ("http_headers", http_headers),
    ("webhook_signature", webhook_signature),
    ("json_pointer", json_pointer),
    ("transform", transform),
    ("websocket_frames", websocket_frames),
    ("xml_body", xml_body),
    ("feed_body", feed_body),
    ("http_stream_framing", http_stream_framing),
];

/// An SSE response body, through the event-stream parser with its `max_event_bytes` cap, then
/// admitted as the SSE source admits events (JSON check, `/meta/id` pointer key).
///
/// Layout: byte 0 sets the cap (`b0² + 1` bytes), byte 1 the chunk size (`b1 + 1` bytes; 255:
/// one chunk), the rest is the body.
///
/// Asserts: the parser yields the same events and stops at the same error however the body is
/// cut into chunks, and no event has data, id or type longer than the cap.
pub fn sse_stream(data: &[u8]) {
    let Some(([cap, cut], body)) = data.split_first_chunk::<2>().map(|(h, b)| (*h, b)) else {
        return;
    };
    let limit = usize::from(cap) * usize::from(cap) + 1;
    let chunk_size = if cut == u8::MAX {
        body.len().max(1)
    } else {
        usize::from(cut) + 1
    };
    let whole = read_all([body], limit);
    let (events, error) = read_all(body.chunks(chunk_size), limit);
    assert!(
        whole == (events.clone(), error),
        "the parser depends on where chunks are cut"
    );
    let stage = SSE_STAGE.with(|stage| stage.clone());
    for event in events {
        for (field, length) in [
            ("data", event.data.len()),
            ("event", event.event_type.len()),
            ("id", event.id.as_deref().map_or(0, str::len)),
        ] {
            assert!(
                length <= limit,
                "an event's {field} passed the cap of {limit}"
            );
        }
        let mut record = Record::new(event.data, SystemTime::now());
        stage.admit(&mut record);
    }
}

thread_local! {
    /// The stage of a `format = "json"` SSE source keyed by `/meta/id`.
    static SSE_STAGE: Arc<Stage> = Arc::new(
        Stage::build(
            "fuzz",
            &StageConfig::default(),
            "events",
            SourceRules { json: true, key: Some("/meta/id"), admission: Admission::Source },
        )
        .expect("the fuzz stage builds"),
    );
}

/// Response headers, read for a rate budget and a `Retry-After`.
///
/// Layout: `name: value` lines (LF or CRLF); a first line `now: <unix seconds>` sets the clock
/// (default: 1,700,000,000 s). Lines that are not valid header text are skipped.
///
/// Asserts: no wait read from them is longer than an hour.
pub fn http_headers(data: &[u8]) {
    let (now, headers) = headers_and_clock(data);
    for now in [now, UNIX_EPOCH, SystemTime::now()] {
        if let Some(status) = rate_limit_status(&headers, now) {
            assert!(status.reset_in <= MAX_RETRY_AFTER, "{status:?}");
            assert!(status.wait().is_none_or(|wait| wait <= MAX_RETRY_AFTER));
        }
        for value in headers.get_all(http::header::RETRY_AFTER) {
            if let Ok(text) = value.to_str() {
                let delay = parse_retry_after(text, now);
                assert!(delay.is_none_or(|delay| delay <= MAX_RETRY_AFTER), "{text}");
            }
        }
    }
    // The value as any text, not only as visible ASCII.
    for line in data.split(|&byte| byte == b'\n') {
        if let Ok(text) = std::str::from_utf8(line) {
            let delay = parse_retry_after(text, now);
            assert!(delay.is_none_or(|delay| delay <= MAX_RETRY_AFTER), "{text}");
        }
    }
}

/// A webhook delivery, verified by every scheme.
///
/// Layout: `name: value` header lines as for [`http_headers`] (a first line `now: <unix
/// seconds>` sets the clock), an empty line, then the body. The schemes hold the secrets of
/// `tests/data/webhook-signatures` and `whsec_ZnV6emluZy1zZWNyZXQ=`; each is checked with the
/// default tolerance of 300 s and with the largest a config can give.
///
/// Asserts: a verified delivery's signed time is within the tolerance of the clock.
pub fn webhook_signature(data: &[u8]) {
    let split = data
        .windows(2)
        .position(|pair| pair == b"\n\n")
        .map_or((data, &[][..]), |at| (&data[..at], &data[at + 2..]));
    let (head, body) = split;
    let (now, headers) = headers_and_clock(head);
    SCHEMES.with(|schemes| {
        for (scheme, tolerance) in schemes {
            if let Ok(verified) = scheme.verify(&headers, body, now) {
                if let Some(signed_at) = verified.signed_at {
                    let distance = signed_at
                        .duration_since(now)
                        .or_else(|_| now.duration_since(signed_at))
                        .unwrap_or_default();
                    assert!(distance <= *tolerance, "{verified:?} at {now:?}");
                }
            }
        }
    });
}

thread_local! {
    /// Every scheme, with the default and with the largest tolerance.
    static SCHEMES: Vec<(SignatureScheme, Duration)> = schemes();
}

fn schemes() -> Vec<(SignatureScheme, Duration)> {
    let secrets = |texts: &[&str]| -> Vec<SecretString> {
        texts.iter().map(|text| SecretString::from(*text)).collect()
    };
    let plain = secrets(&[
        "It's a Secret to Everybody",
        "mysecret",
        "development",
        "fixture-webhook-secret",
    ]);
    let whsec = secrets(&[
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_ZnV6emluZy1zZWNyZXQ=",
    ]);
    let mut schemes = Vec::new();
    for tolerance in [DEFAULT_TIMESTAMP_TOLERANCE, Duration::MAX] {
        let built = [
            GitHubScheme::try_new(&plain).map(SignatureScheme::GitHub),
            StripeScheme::try_new(&whsec, tolerance).map(SignatureScheme::Stripe),
            StandardWebhooksScheme::try_new(&whsec, tolerance)
                .map(SignatureScheme::StandardWebhooks),
            GenericHmacScheme::try_new(&plain, "x-signature", SignatureEncoding::Hex, None)
                .map(SignatureScheme::GenericHmac),
            GenericHmacScheme::try_new(
                &plain,
                "x-signature-b64",
                SignatureEncoding::Base64,
                Some("sha256="),
            )
            .map(SignatureScheme::GenericHmac),
        ];
        for scheme in built {
            schemes.push((scheme.expect("the fuzz schemes build"), tolerance));
        }
    }
    schemes
}

/// Header lines, with an optional first `now: <unix seconds>` line.
fn headers_and_clock(data: &[u8]) -> (SystemTime, HeaderMap) {
    let mut now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut headers = HeaderMap::new();
    for (index, line) in data.split(|&byte| byte == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&byte| byte == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if index == 0 && name == b"now" {
            let seconds = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
            if let Some(at) = seconds.and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s))) {
                now = at;
            }
            continue;
        }
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    (now, headers)
}

/// A key, template or pointer from the config, read from an event.
///
/// Layout: the first line is the rule's text (`/meta/id`, `{/repo/id}-{/number}`), the rest is
/// the event.
///
/// Asserts: a parsed pointer finds what [`crate::json::lookup`] finds with its text, and JSON
/// within [`MAX_NESTING`] levels that serde_json reads raw it also reads as a value.
pub fn json_pointer(data: &[u8]) {
    let (rule, event) = data
        .iter()
        .position(|&byte| byte == b'\n')
        .map_or((data, &[][..]), |at| (&data[..at], &data[at + 1..]));
    let Ok(rule) = std::str::from_utf8(rule) else {
        return;
    };
    let nesting = check_nesting(event, MAX_NESTING);
    let raw = serde_json::from_slice::<&RawValue>(event).ok();
    if let (Ok(()), Some(raw)) = (nesting, raw) {
        if let Err(error) = serde_json::from_str::<serde_json::Value>(raw.get()) {
            assert!(
                !error.to_string().contains("recursion limit"),
                "admitted JSON that serde_json refuses as too deep: {error}"
            );
        }
    }
    if let Some(raw) = raw {
        let by_text = crate::json::lookup(raw, rule).map(RawValue::get);
        if let Ok(pointer) = Pointer::parse(rule) {
            assert_eq!(pointer.lookup(raw).map(RawValue::get), by_text, "{rule}");
            for unit in [
                TimestampUnit::Rfc3339,
                TimestampUnit::Seconds,
                TimestampUnit::Milliseconds,
            ] {
                let time = EventTime {
                    pointer: pointer.clone(),
                    unit,
                };
                let _ = time.millis(Some(raw));
            }
        }
        let _ = crate::json::members(raw);
        let _ = crate::json::elements(raw);
        let _ = crate::json::text_of(raw);
    }
    if let Ok(template) = Template::parse(rule) {
        let _ = template.literal_text();
        let _ = template.fill(raw);
    }
    if let Ok(key) = Key::parse(rule) {
        for found in [key.of(raw), key.id_of(raw)] {
            if let Err(unfilled) = found {
                let _ = key.describe(&unfilled);
            }
        }
        let _ = key.describe(&Unfilled::NotJson);
    }
    let rules = SourceRules {
        json: true,
        key: Some(rule),
        admission: Admission::Pump,
    };
    if let Ok(stage) = Stage::build("fuzz", &StageConfig::default(), rule, rules) {
        let mut record = Record::new(Bytes::copy_from_slice(event), SystemTime::now());
        stage.admit(&mut record);
    }
}

thread_local! {
    /// Programs that pass the event's values through: the event, its members or elements, its
    /// text read back, and every string in it read by the sandboxed `fromjson` (with whether an
    /// admitted event gives JSON).
    static PROGRAMS: Vec<(&'static str, bool, Transform)> = [
        (".", true),
        (".[]?", true),
        ("tojson|fromjson", true),
        // The strings are the feed's, and jaq's reader takes more than JSON.
        ("..|strings|fromjson?", false),
    ]
    .into_iter()
    .map(|(code, gives_json)| {
        let program = Transform::compile(code).expect("the fuzz programs compile");
        (code, gives_json, program)
    })
    .collect();
}

/// An event through the record stage's transform (jq, sandboxed), with programs that only pass
/// its values through.
///
/// Layout: the event.
///
/// Asserts: `.` yields exactly one value when it succeeds, and for an event the stage admits as
/// JSON, every value the programs without `fromjson` of the feed's strings yield is JSON as the
/// stage checks it, nested no deeper than serde_json reads.
pub fn transform(data: &[u8]) {
    // What a `format = "json"` source admits before its transform runs.
    let admitted = check_nesting(data, MAX_NESTING).is_ok()
        && serde_json::from_slice::<&RawValue>(data).is_ok();
    PROGRAMS.with(|programs| {
        for (code, gives_json, program) in programs {
            let mut out = Vec::new();
            if program.run(data, &mut out).is_err() {
                assert!(out.is_empty(), "`{code}` failed but left values");
                continue;
            }
            if *code == "." {
                assert_eq!(out.len(), 1, "`.` yielded {} values", out.len());
            }
            if !(admitted && *gives_json) {
                // jaq's reader takes more than JSON (`NaN`, `b"…"`, `#` comments, `01`, strings
                // that are not UTF-8): what it yields then is the stage's to dead-letter.
                continue;
            }
            for value in &out {
                // The stage's own check of a transformed record.
                if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(value) {
                    panic!("`{code}` yielded what the stage takes for not JSON: {error}");
                }
                // Numbers past f64 (`1e400`) pass through as written, as without a transform.
                if let Err(error) = serde_json::from_slice::<serde_json::Value>(value) {
                    assert!(
                        !error.to_string().contains("recursion limit"),
                        "`{code}` yielded a value too deep for serde_json: {error}"
                    );
                }
            }
        }
    });
}

/// WebSocket messages through the frame decoder (JSON, array splitting, filter, key, sequence
/// numbers and gaps).
///
/// Layout: the first line holds the rules, separated by tabs: flags (the first byte: bit 0
/// set = `format = "text"`, bit 1 set = `split_arrays`), the filter's pointer, its values
/// (comma-separated), the key, the sequence and the sequence scope pointers; an empty or
/// invalid pointer is none. Each further line is one message.
///
/// Asserts: every gap is a non-empty range before the number that revealed it and names a
/// record of its message, and every record of a JSON message that is not dead-lettered is JSON.
pub fn websocket_frames(data: &[u8]) {
    let mut lines = data.split(|&byte| byte == b'\n');
    let rules_line = String::from_utf8_lossy(lines.next().unwrap_or_default());
    let mut fields = rules_line.split('\t');
    let flags = fields.next().and_then(|f| f.bytes().next()).unwrap_or(0);
    let mut pointer = || fields.next().and_then(|text| Pointer::parse(text).ok());
    let filter_pointer = pointer();
    let values = fields.next().unwrap_or_default();
    let filter = filter_pointer.map(|pointer| FrameFilter {
        pointer,
        values: values.split(',').map(str::to_owned).collect(),
    });
    let mut pointer = || fields.next().and_then(|text| Pointer::parse(text).ok());
    let (key, sequence, sequence_scope) = (pointer(), pointer(), pointer());
    let format = if flags & 1 == 1 {
        PayloadFormat::Text
    } else {
        PayloadFormat::Json
    };
    let mut decoder = FrameDecoder::new(FrameRules {
        format,
        split_arrays: flags & 2 == 2,
        filter,
        key,
        sequence,
        sequence_scope,
    });
    for line in lines {
        let decoded = decoder.decode(Bytes::copy_from_slice(line), SystemTime::now());
        for gap in &decoded.gaps {
            assert!(gap.first <= gap.last, "{gap:?}");
            assert!(gap.record < decoded.records.len(), "{gap:?}");
        }
        if format == PayloadFormat::Json {
            for record in decoded.records.iter().filter(|r| r.dead_letter.is_none()) {
                let parsed = serde_json::from_slice::<&RawValue>(&record.payload);
                assert!(parsed.is_ok(), "a record of a JSON message is not JSON");
            }
        }
    }
}

/// A REST page body with `format = "xml"`, through the XML → JSON mapping.
///
/// Layout: the whole input is the body.
///
/// Asserts: a mapped body is JSON that `serde_json` reads back (within its nesting limit), an
/// object with one member (the root element).
pub fn xml_body(data: &[u8]) {
    if let Ok(json) = crate::sources::poll::format::xml::to_json(data) {
        let value: serde_json::Value =
            serde_json::from_slice(&json).expect("the mapping writes JSON that reads back");
        assert!(
            value.as_object().is_some_and(|root| root.len() == 1),
            "the document maps to an object with one member"
        );
    }
}

/// A REST page body with `format = "feed"`, through feed-rs and the entry mapping.
///
/// Layout: the whole input is the body.
///
/// Asserts: a mapped feed is a JSON array of objects, each with a non-empty string `id` and an
/// `updated` that is `null` or an RFC 3339 time.
pub fn feed_body(data: &[u8]) {
    let Ok(json) = crate::sources::poll::format::feed::to_json(data, "https://example.com/feed")
    else {
        return;
    };
    let value: serde_json::Value =
        serde_json::from_slice(&json).expect("the mapping writes JSON that reads back");
    for entry in value.as_array().expect("an array of entries") {
        let id = entry["id"].as_str().expect("a string id");
        assert!(!id.is_empty(), "every entry has an id");
        match &entry["updated"] {
            serde_json::Value::Null => {}
            serde_json::Value::String(time) => {
                chrono::DateTime::parse_from_rfc3339(time).expect("an RFC 3339 `updated`");
            }
            other => panic!("`updated` is {other}"),
        }
    }
}

/// A streamed `http_stream` body through the framer of JSON lines or JSON text sequences
/// (RFC 7464), in chunks.
///
/// Layout: byte 0 sets the cap (`b0 + 1` bytes), byte 1 the chunk size (`b1 + 1` bytes), byte 2
/// the mode (even: JSON lines, odd: JSON text sequences); the rest is the body.
///
/// # Panics
/// When a record passes the cap, holds its terminator (LF for a line, RS in a sequence), or
/// the records and truncated remains hold more bytes than the body.
pub fn http_stream_framing(data: &[u8]) {
    use crate::sources::http_stream::framing::{Frame, Framer, Mode};
    let [cap, chunk, mode, body @ ..] = data else {
        return;
    };
    let max = usize::from(*cap) + 1;
    let mode = if mode % 2 == 0 {
        Mode::Lines
    } else {
        Mode::JsonSeq
    };
    let mut framer = Framer::new(mode, max);
    let mut frames = Vec::new();
    for part in body.chunks(usize::from(*chunk) + 1) {
        framer.push(part);
        while let Some(frame) = framer.next_frame() {
            frames.push(frame);
        }
    }
    frames.extend(framer.finish());
    let mut held = 0;
    for frame in &frames {
        match frame {
            Frame::Text(text) => {
                assert!(
                    text.len() <= max,
                    "a record of {} bytes passed the cap {max}",
                    text.len()
                );
                match mode {
                    Mode::Lines => assert!(!text.contains(&b'\n'), "a line holds its LF"),
                    Mode::JsonSeq => assert!(!text.contains(&0x1e), "a record holds an RS"),
                }
                held += text.len();
            }
            Frame::Truncated(rest) => held += rest.len(),
            Frame::TooLarge(_) => {}
        }
    }
    assert!(
        held <= body.len(),
        "the frames hold more bytes than the body"
    );
}
