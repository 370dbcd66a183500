//! Cuts a streamed body into records as its chunks arrive: JSON lines (NDJSON, JSON Lines) or
//! JSON text sequences (RFC 7464), each record at most `max_line_bytes`.
//!
//! The chunks are appended to one buffer and every record is a [`Bytes`] slice of it (no copy
//! per record). A small splitter of our own rather than tokio-util's `LinesCodec` (which makes
//! a `String` of each line, a copy) or `AnyDelimiterCodec` (which does not say which delimiter
//! ended a chunk, and JSON text sequences need both RS and LF).
//!
//! - **Lines** end at LF; a CR before it is dropped. An empty line is a heartbeat.
//! - **JSON text sequences**: a record starts at RS (0x1E). It is complete at the first LF
//!   after which its text is one JSON value (texts may span lines), or at the next RS when it
//!   ends with LF (an invalid text then goes to the dead-letter topic). A record whose text does
//!   not end with LF before the next RS, or before the body ends, is truncated (RFC 7464 §2.1):
//!   it is dropped and counted, never produced.
//! - A record longer than the cap is skipped up to its end (the next LF, or RS) and reported
//!   once, with the bytes seen, as [`Frame::TooLarge`].
//! - A line cut off by the end of the body (no LF) is reported as [`Frame::Truncated`]: the
//!   position has not moved past it, so the next connection asks for it again.

use bytes::{Bytes, BytesMut};
use serde::de::IgnoredAny;

use super::config::Framing;

/// Record separator (RFC 7464 §2).
const RS: u8 = 0x1E;
const LF: u8 = b'\n';

/// The framing of one response, decided when it arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// JSON lines.
    Lines,
    /// JSON text sequences.
    JsonSeq,
}

impl Mode {
    /// The mode of a response: `framing`, or under `auto` its `Content-Type`
    /// (`application/json-seq` per RFC 7464 §4).
    pub fn of(framing: Framing, content_type: &str) -> Mode {
        match framing {
            Framing::Lines => Mode::Lines,
            Framing::JsonSeq => Mode::JsonSeq,
            Framing::Auto => {
                let mime = content_type.split(';').next().unwrap_or("").trim();
                if mime.eq_ignore_ascii_case("application/json-seq") {
                    Mode::JsonSeq
                } else {
                    Mode::Lines
                }
            }
        }
    }
}

/// What the framer found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// One record's text (no terminator, no RS); empty for a heartbeat line.
    Text(Bytes),
    /// A record longer than the cap was skipped; at least this many bytes of it were seen.
    TooLarge(usize),
    /// A record cut short (see the module docs); its first bytes.
    Truncated(Bytes),
}

/// The splitter of one connection's body.
pub struct Framer {
    mode: Mode,
    max: usize,
    buffer: BytesMut,
    /// Where the search for the next terminator resumes (bytes before it were searched).
    searched: usize,
    /// Skipping the rest of an oversized record.
    discarding: bool,
}

impl Framer {
    /// A framer of `mode` whose records are at most `max` bytes (`max > 0`).
    pub fn new(mode: Mode, max: usize) -> Self {
        Framer {
            mode,
            max,
            buffer: BytesMut::new(),
            searched: 0,
            discarding: false,
        }
    }

    /// Appends a chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete frame, if the buffer holds one.
    pub fn next_frame(&mut self) -> Option<Frame> {
        match self.mode {
            Mode::Lines => self.next_line(),
            Mode::JsonSeq => self.next_sequence_record(),
        }
    }

    /// What remains when the body has ended: a record cut short, if any.
    pub fn finish(&mut self) -> Option<Frame> {
        let rest = self.buffer.split().freeze();
        self.searched = 0;
        if std::mem::take(&mut self.discarding) {
            return None;
        }
        match self.mode {
            Mode::Lines if rest.iter().all(u8::is_ascii_whitespace) => None,
            Mode::Lines => Some(Frame::Truncated(rest)),
            Mode::JsonSeq => {
                let text = rest.strip_prefix(&[RS]).unwrap_or(&rest);
                if text.iter().all(u8::is_ascii_whitespace) {
                    None
                } else if text.last() == Some(&LF) {
                    Some(Frame::Text(rest.slice(rest.len() - text.len()..)))
                } else {
                    Some(Frame::Truncated(rest))
                }
            }
        }
    }

    fn next_line(&mut self) -> Option<Frame> {
        loop {
            let Some(at) = memchr::memchr(LF, &self.buffer[self.searched..]) else {
                self.searched = self.buffer.len();
                if !self.discarding && self.buffer.len() > self.max {
                    // Keep nothing of it: the rest of the line is skipped as it arrives.
                    let seen = self.buffer.len();
                    self.skip_all();
                    return Some(Frame::TooLarge(seen));
                }
                if self.discarding {
                    self.skip_all();
                }
                return None;
            };
            let end = self.searched + at;
            let line = self.buffer.split_to(end + 1).freeze();
            self.searched = 0;
            if std::mem::take(&mut self.discarding) {
                continue;
            }
            let text = line.slice(..end);
            let text = if text.last() == Some(&b'\r') {
                text.slice(..text.len() - 1)
            } else {
                text
            };
            if text.len() > self.max {
                return Some(Frame::TooLarge(text.len()));
            }
            return Some(Frame::Text(text));
        }
    }

    fn next_sequence_record(&mut self) -> Option<Frame> {
        loop {
            if self.discarding {
                // Skip to the next RS (the start of the next record).
                match memchr::memchr(RS, &self.buffer) {
                    Some(at) => {
                        let _ = self.buffer.split_to(at);
                        self.discarding = false;
                        self.searched = 0;
                    }
                    None => {
                        self.skip_all();
                        return None;
                    }
                }
            }
            if self.buffer.is_empty() {
                return None;
            }
            if self.buffer[0] != RS {
                // Bytes before a record's RS: whitespace between records is allowed, anything
                // else is what is left of a record cut short (RFC 7464 §2.1).
                let until = memchr::memchr(RS, &self.buffer).unwrap_or(self.buffer.len());
                let stray = self.buffer.split_to(until).freeze();
                self.searched = 0;
                if stray.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(Frame::Truncated(stray));
            }
            let next_rs = memchr::memchr(RS, &self.buffer[1..]).map(|at| at + 1);
            let limit = next_rs.unwrap_or(self.buffer.len());
            // Each LF not searched yet may end the text: it does when the text is JSON.
            let mut from = self.searched.max(1);
            while let Some(at) = memchr::memchr(LF, &self.buffer[from..limit]) {
                let lf = from + at;
                if serde_json::from_slice::<IgnoredAny>(&self.buffer[1..lf]).is_ok() {
                    let record = self.buffer.split_to(lf + 1).freeze();
                    self.searched = 0;
                    return Some(self.capped(record.slice(1..lf)));
                }
                from = lf + 1;
            }
            self.searched = from;
            if let Some(next) = next_rs {
                let record = self.buffer.split_to(next).freeze();
                self.searched = 0;
                return Some(if record.last() == Some(&LF) {
                    // Ends with LF but is no JSON value: the record stage dead-letters it.
                    self.capped(record.slice(1..record.len() - 1))
                } else {
                    Frame::Truncated(record)
                });
            }
            if self.buffer.len() > self.max + 1 {
                let seen = self.buffer.len() - 1;
                self.skip_all();
                return Some(Frame::TooLarge(seen));
            }
            return None;
        }
    }

    /// `text`, or [`Frame::TooLarge`] past the cap.
    fn capped(&self, text: Bytes) -> Frame {
        if text.len() > self.max {
            Frame::TooLarge(text.len())
        } else {
            Frame::Text(text)
        }
    }

    /// Drops what is buffered and skips the rest of the current record.
    fn skip_all(&mut self) {
        self.buffer.clear();
        self.searched = 0;
        self.discarding = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(mode: Mode, max: usize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut framer = Framer::new(mode, max);
        let mut out = Vec::new();
        for chunk in chunks {
            framer.push(chunk);
            while let Some(frame) = framer.next_frame() {
                out.push(frame);
            }
        }
        out.extend(framer.finish());
        out
    }

    fn text(s: &str) -> Frame {
        Frame::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn lines_across_chunks_with_crlf_and_heartbeats() {
        let got = frames(
            Mode::Lines,
            100,
            &[b"{\"a\":1}\n{\"b\"", b":2}\r\n\n", b"{\"c\":3}\n"],
        );
        assert_eq!(
            got,
            vec![
                text("{\"a\":1}"),
                text("{\"b\":2}"),
                text(""),
                text("{\"c\":3}")
            ]
        );
    }

    #[test]
    fn an_unterminated_last_line_is_truncated() {
        let got = frames(Mode::Lines, 100, &[b"{\"a\":1}\n{\"b\":"]);
        assert_eq!(
            got,
            vec![
                text("{\"a\":1}"),
                Frame::Truncated(Bytes::from_static(b"{\"b\":"))
            ]
        );
    }

    #[test]
    fn a_line_over_the_cap_is_skipped_and_reported_once() {
        let long = "x".repeat(30);
        let got = frames(
            Mode::Lines,
            10,
            &[
                b"{\"a\":1}\n",
                long.as_bytes(),
                long.as_bytes(),
                b"tail\n{\"b\":2}\n",
            ],
        );
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], text("{\"a\":1}"));
        assert!(matches!(got[1], Frame::TooLarge(n) if n > 10));
        assert_eq!(got[2], text("{\"b\":2}"));
        // Over the cap within one chunk, terminator included.
        let got = frames(Mode::Lines, 4, &[b"123456\n12\n"]);
        assert_eq!(got, vec![Frame::TooLarge(6), text("12")]);
    }

    #[test]
    fn json_seq_records_rs_and_lf() {
        let got = frames(
            Mode::JsonSeq,
            100,
            &[b"\x1e{\"a\":1}\n\x1e{\"b\"", b":2}\n", b"\x1e[1,\n2]\n"],
        );
        assert_eq!(
            got,
            vec![text("{\"a\":1}"), text("{\"b\":2}"), text("[1,\n2]")]
        );
    }

    #[test]
    fn json_seq_truncated_records_are_reported_not_produced() {
        // RFC 7464 §2.1: `123` cut to `12`, the next RS comes before an LF.
        let got = frames(Mode::JsonSeq, 100, &[b"\x1e12\x1e{\"a\":1}\n\x1e{\"b\":"]);
        assert_eq!(
            got,
            vec![
                Frame::Truncated(Bytes::from_static(b"\x1e12")),
                text("{\"a\":1}"),
                Frame::Truncated(Bytes::from_static(b"\x1e{\"b\":")),
            ]
        );
    }

    #[test]
    fn json_seq_invalid_text_ended_by_lf_is_a_record_for_the_dead_letter_topic() {
        let got = frames(Mode::JsonSeq, 100, &[b"\x1e{oops\n\x1e{\"a\":1}\n"]);
        assert_eq!(got, vec![text("{oops"), text("{\"a\":1}")]);
    }

    #[test]
    fn json_seq_oversized_record_is_skipped_to_the_next_rs() {
        let got = frames(
            Mode::JsonSeq,
            8,
            &[b"\x1e[\"0123456789", b"0123456789\"]\n\x1e{\"a\":1}\n"],
        );
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(got[0], Frame::TooLarge(n) if n > 8));
        assert_eq!(got[1], text("{\"a\":1}"));
    }

    #[test]
    fn the_mode_follows_the_content_type_under_auto() {
        assert_eq!(
            Mode::of(Framing::Auto, "application/json-seq; charset=utf-8"),
            Mode::JsonSeq
        );
        assert_eq!(Mode::of(Framing::Auto, "application/x-ndjson"), Mode::Lines);
        assert_eq!(Mode::of(Framing::JsonSeq, "text/plain"), Mode::JsonSeq);
    }

    fn texts(mode: Mode, body: &[u8], chunk: usize) -> Vec<Bytes> {
        let mut framer = Framer::new(mode, 1 << 20);
        let mut out = Vec::new();
        for part in body.chunks(chunk) {
            framer.push(part);
            while let Some(frame) = framer.next_frame() {
                out.push(frame);
            }
        }
        out.extend(framer.finish());
        out.into_iter()
            .filter_map(|frame| match frame {
                Frame::Text(text) => Some(text),
                _ => None,
            })
            .collect()
    }

    proptest::proptest! {
        /// The records found do not depend on how the body was cut into chunks.
        #[test]
        fn records_do_not_depend_on_chunking(
            body in proptest::collection::vec(
                proptest::sample::select(vec![b'\n', b'\r', 0x1e, b'{', b'}', b'1', b'"', b' ', b',', b'[', b']']),
                0..200,
            ),
            chunk in 1usize..17,
            json_seq in proptest::bool::ANY,
        ) {
            let mode = if json_seq { Mode::JsonSeq } else { Mode::Lines };
            proptest::prop_assert_eq!(texts(mode, &body, body.len().max(1)), texts(mode, &body, chunk));
        }
    }
}
