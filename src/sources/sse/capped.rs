//! The `max_event_bytes` cap on an event stream.
//!
//! eventsource-client buffers the current line and the current event's data until their end
//! comes, without a bound, and `read_timeout` never fires while bytes keep coming: a feed that
//! sends a `data:` line without end would take all memory. [`CappedTransport`] wraps the HTTP
//! transport and passes the response body through a [`SizeScanner`], which counts the bytes of
//! the current line and of the current event as they go by (without copying them) and ends
//! the body with an [`Oversized`] error as soon as either passes the cap. The client reports
//! that error as `es::Error::Transport`; the connection loop reconnects from the last event id.

use std::{
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use futures::Stream;
use launchdarkly_sdk_transport::{
    ByteStream, HttpTransport, Request, ResponseFuture, TransportError,
};

/// A line or an event passed `max_event_bytes`: the body ends with this error.
#[derive(Debug, thiserror::Error)]
#[error("an event or line exceeded `max_event_bytes` ({limit} bytes); raise it or fix the feed")]
pub(crate) struct Oversized {
    /// The cap, in bytes.
    pub(crate) limit: usize,
}

/// Counts, across the chunks of one event stream, the bytes of the current line and of the
/// current event, and finds where either first passes the limit.
///
/// Lines end at CRLF, LF or CR (a CRLF split across two chunks is one terminator), and an
/// event ends at a blank line, as WHATWG HTML §9.2.6 "Interpreting an event stream" defines
/// them. A line's size excludes its terminator; an event's size is the sum of its lines'
/// sizes, comment lines (starting with `:`) excluded, since the parser keeps no comment in the
/// event: a feed that sends only comments for days trips nothing while each comment line is
/// within the limit. A leading byte-order mark counts as three bytes of the first line.
#[derive(Clone, Debug)]
pub(crate) struct SizeScanner {
    /// The largest line or event, in bytes.
    limit: usize,
    /// Bytes of the current line so far (at most `limit`).
    line: usize,
    /// Bytes of the current event so far (at most `limit`).
    event: usize,
    /// The current line is a comment.
    comment: bool,
    /// The previous chunk ended with CR: an LF first in the next chunk ends no line.
    after_cr: bool,
}

impl SizeScanner {
    /// A scanner at the start of a stream, for lines and events of at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        SizeScanner {
            limit,
            line: 0,
            event: 0,
            comment: false,
            after_cr: false,
        }
    }

    /// Scans the next chunk of the stream. `None` while every line and event is within the
    /// limit; `Some(n)` when the byte at offset `n` of `chunk` takes a line or an event past
    /// it (the first `n` bytes are within). After `Some`, the scanner is spent.
    pub(crate) fn scan(&mut self, chunk: &[u8]) -> Option<usize> {
        if chunk.is_empty() {
            return None;
        }
        let mut start = 0;
        if std::mem::take(&mut self.after_cr) && chunk.first() == Some(&b'\n') {
            start = 1;
        }
        while start < chunk.len() {
            let rest = &chunk[start..];
            let end = memchr::memchr2(b'\n', b'\r', rest);
            let len = end.unwrap_or(rest.len());
            if len > 0 {
                if self.line == 0 {
                    self.comment = rest[0] == b':';
                }
                let mut room = self.limit - self.line;
                if !self.comment {
                    room = room.min(self.limit - self.event);
                }
                if len > room {
                    return Some(start + room);
                }
                self.line += len;
                if !self.comment {
                    self.event += len;
                }
            }
            // No terminator: the line goes on in the next chunk.
            let end = end?;
            if self.line == 0 {
                self.event = 0;
            }
            self.line = 0;
            start += end + 1;
            if rest[end] == b'\r' {
                match chunk.get(start) {
                    Some(b'\n') => start += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        None
    }
}

/// An [`HttpTransport`] whose response bodies end with [`Oversized`] once a line or an event
/// passes `limit` bytes (see [`SizeScanner`]). Everything else is `inner`'s.
#[derive(Clone)]
pub(crate) struct CappedTransport<T> {
    inner: T,
    limit: usize,
}

impl<T> CappedTransport<T> {
    /// Caps the bodies of `inner`'s responses at `limit` bytes per line and per event.
    pub(crate) fn new(inner: T, limit: usize) -> Self {
        CappedTransport { inner, limit }
    }
}

impl<T: HttpTransport> HttpTransport for CappedTransport<T> {
    fn request(&self, request: Request<Option<Bytes>>) -> ResponseFuture {
        let response = self.inner.request(request);
        let limit = self.limit;
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Box::pin(CappedBody::new(body, limit)) as ByteStream))
        })
    }
}

/// Where a [`CappedBody`] is.
enum BodyState {
    /// Passing chunks on.
    Reading,
    /// The part of the last chunk within the cap went out; the error comes next.
    Oversized,
    /// Ended.
    Done,
}

/// A response body that passes its chunks on as they are until the cap is passed; then it
/// passes on the part within the cap (so the events completed before it are delivered),
/// yields [`Oversized`] and ends.
struct CappedBody {
    inner: ByteStream,
    scanner: SizeScanner,
    state: BodyState,
}

impl CappedBody {
    fn new(inner: ByteStream, limit: usize) -> Self {
        CappedBody {
            inner,
            scanner: SizeScanner::new(limit),
            state: BodyState::Reading,
        }
    }

    fn oversized(&mut self) -> Option<Result<Bytes, TransportError>> {
        self.state = BodyState::Done;
        Some(Err(TransportError::new(Oversized {
            limit: self.scanner.limit,
        })))
    }
}

impl Stream for CappedBody {
    type Item = Result<Bytes, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.state {
            BodyState::Reading => {}
            BodyState::Oversized => return Poll::Ready(this.oversized()),
            BodyState::Done => return Poll::Ready(None),
        }
        let item = match ready!(this.inner.as_mut().poll_next(cx)) {
            Some(Ok(chunk)) => match this.scanner.scan(&chunk) {
                None => Some(Ok(chunk)),
                Some(0) => this.oversized(),
                Some(within) => {
                    this.state = BodyState::Oversized;
                    Some(Ok(chunk.slice(..within)))
                }
            },
            other => other,
        };
        Poll::Ready(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use proptest::prelude::*;

    /// Scans `chunks` in turn; the trip offset within the whole stream, if any.
    fn scan_chunks(limit: usize, chunks: &[&[u8]]) -> Option<usize> {
        let mut scanner = SizeScanner::new(limit);
        let mut offset = 0;
        for chunk in chunks {
            if let Some(within) = scanner.scan(chunk) {
                return Some(offset + within);
            }
            offset += chunk.len();
        }
        None
    }

    /// The definition, byte by byte: where a line or an event first passes `limit`.
    fn reference(limit: usize, stream: &[u8]) -> Option<usize> {
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

    #[test]
    fn a_crlf_split_across_chunks_is_one_terminator() {
        // `data: a\r` | `\n` then a blank line: the event ends, so the next one starts at 0.
        let chunks: [&[u8]; 4] = [b"data: abc\r", b"\n\r", b"\n", b"data: xyz\r\n\r\n"];
        assert_eq!(scan_chunks(9, &chunks), None);
        // Were the split LF a blank line, `data: abc` + `data: xyz` would be one 18-byte event.
        let joined: [&[u8]; 2] = [b"data: abc\r", b"\ndata: xyz\r\n\r\n"];
        assert_eq!(scan_chunks(17, &joined), Some(11 + 8));
        // An empty chunk between CR and LF changes nothing.
        let with_empty: [&[u8]; 3] = [b"data: abc\r", b"", b"\ndata: xyz\r\n\r\n"];
        assert_eq!(scan_chunks(17, &with_empty), Some(11 + 8));
        // CR alone ends a line, LF alone too, and CR then CR is a blank line.
        let cr_only: [&[u8]; 2] = [b"data: abc\r", b"\rdata: xyz\r\r"];
        assert_eq!(scan_chunks(9, &cr_only), None);
    }

    #[test]
    fn many_small_events_under_the_cap_never_trip_it() {
        let event = b"id: 42\nevent: update\ndata: {\"n\":42}\n\n";
        let stream = event.repeat(100_000);
        let chunks: Vec<&[u8]> = stream.chunks(4096).collect();
        let per_event = "id: 42".len() + "event: update".len() + "data: {\"n\":42}".len();
        assert_eq!(scan_chunks(per_event, &chunks), None);
        // One byte less: the first event's `data:` line trips it at its last byte.
        let data_line = "id: 42\nevent: update\n".len();
        assert_eq!(
            scan_chunks(per_event - 1, &chunks),
            Some(data_line + "data: {\"n\":42}".len() - 1)
        );
    }

    #[test]
    fn one_line_over_the_cap_trips_it() {
        let mut stream = b"data: ok\n\n".to_vec();
        stream.extend(std::iter::repeat_n(b'x', 100));
        let line_start = 10;
        let chunks: Vec<&[u8]> = stream.chunks(7).collect();
        assert_eq!(scan_chunks(64, &chunks), Some(line_start + 64));
        // A comment line is capped as well.
        assert_eq!(scan_chunks(8, &[b":0123456789\n"]), Some(8));
        // A line of exactly the cap passes.
        assert_eq!(scan_chunks(10, &[b"data: 0123\n"]), None);
    }

    #[test]
    fn one_event_of_many_short_lines_over_the_cap_trips_it() {
        let stream = b"data: 0123456789\n".repeat(1000);
        let chunks: Vec<&[u8]> = stream.chunks(1000).collect();
        // 16 bytes a line: the 65th line passes 1024 bytes at its first byte.
        assert_eq!(scan_chunks(1024, &chunks), Some(64 * 17));
        // The same lines as separate events are fine.
        let events = b"data: 0123456789\n\n".repeat(1000);
        assert_eq!(scan_chunks(1024, &[&events]), None);
        // Comments between the lines do not count toward the event.
        let commented = b":keep-alive\r\n".repeat(10_000);
        assert_eq!(scan_chunks(1024, &[&commented]), None);
    }

    #[tokio::test]
    async fn the_body_passes_on_what_is_within_then_ends_with_the_error() {
        let chunks: Vec<Result<Bytes, TransportError>> = vec![
            Ok(Bytes::from_static(b"data: 1\n\n")),
            Ok(Bytes::from_static(b"data: 2\n\ndata: 0123456789")),
            Ok(Bytes::from_static(b"never read")),
        ];
        let body: ByteStream = Box::pin(futures::stream::iter(chunks));
        let out: Vec<_> = CappedBody::new(body, 10).collect().await;
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0].as_ref().unwrap(), &b"data: 1\n\n"[..]);
        assert_eq!(out[1].as_ref().unwrap(), &b"data: 2\n\ndata: 0123"[..]);
        let error = out[2].as_ref().unwrap_err();
        let oversized = error.inner().downcast_ref::<Oversized>().unwrap();
        assert_eq!(oversized.limit, 10);
        assert_eq!(
            oversized.to_string(),
            "an event or line exceeded `max_event_bytes` (10 bytes); raise it or fix the feed"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// However the stream is cut into chunks, the scanner trips where the byte-by-byte
        /// definition does.
        #[test]
        fn chunked_scans_match_the_definition(
            bytes in proptest::collection::vec(
                (
                    prop_oneof![4 => Just(b'a'), 1 => Just(b':'), 2 => Just(b'\r'), 2 => Just(b'\n')],
                    // After this byte: 0 no cut, 1 a cut, 2 a cut and an empty chunk.
                    prop_oneof![8 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8)],
                ),
                0..300,
            ),
            limit in 1usize..40,
        ) {
            let stream: Vec<u8> = bytes.iter().map(|(byte, _)| *byte).collect();
            let mut chunks = Vec::new();
            let mut from = 0;
            for (at, (_, cut)) in bytes.iter().enumerate() {
                if *cut > 0 {
                    chunks.push(&stream[from..=at]);
                    from = at + 1;
                }
                if *cut == 2 {
                    chunks.push(&[][..]);
                }
            }
            chunks.push(&stream[from..]);
            prop_assert_eq!(scan_chunks(limit, &chunks), reference(limit, &stream));
        }
    }
}
