//! The event-stream parser: WHATWG HTML §9.2.6 "Interpreting an event stream", fed the
//! response body's chunks as they arrive, with the `max_event_bytes` cap folded in.
//!
//! Lines end at CRLF, LF or CR (a CRLF split across two chunks is one terminator; line ends are
//! found with `memchr`); one leading byte-order mark is stripped; a line starting with `:` is a
//! comment; `field:value` and `field: value` (one leading space stripped) set a field, and a
//! line without a colon is a field with an empty value. `data` lines are joined with LF, `event`
//! sets the type (default `message`), `id` sets the last event id unless it contains NUL, and
//! `retry` takes ASCII digits only and sets the reconnection time at once. A blank line dispatches the event, unless its data buffer is
//! empty. Unknown fields are ignored.
//!
//! Where eventsource-client 0.18 (the parser this one replaced) differs from the standard, this
//! parser follows the standard: a block whose only fields are unknown, or an empty `event:`, is
//! ignored rather than failing the connection, a `retry:` with a `+` sign is ignored, and a
//! `retry:` in a block without data still counts.
//! Two choices are the source's own: the data is passed on as bytes, not decoded (invalid
//! UTF-8 reaches the record stage, which dead-letters it as invalid JSON for a `format = "json"`
//! source, instead of failing the connection), and the event type and id are decoded with
//! U+FFFD for invalid UTF-8, as the standard's decoder does.
//!
//! Each event's data is copied once, into a buffer of its exact size: an event never holds a
//! slice of the transport's chunk, which would pin the whole read buffer while the record waits
//! for Kafka. The type and the id are shared (`Arc<str>`) between the events that have them.
//!
//! A line longer than the cap, or an event whose lines (comments excepted) add up to more, is
//! [`Oversized`]: the events completed before it are yielded first, then the error, and the
//! parser is spent (the connection ends and resumes from the last event id). A comment line
//! counts toward the line cap only, so that a feed of keep-alive comments never trips it.

use std::sync::Arc;

use bytes::Bytes;

#[cfg(test)]
mod tests;

/// A line or an event passed `max_event_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an event or line exceeded `max_event_bytes` ({limit} bytes); raise it or fix the feed")]
pub(crate) struct Oversized {
    /// The cap, in bytes.
    pub(crate) limit: usize,
}

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    /// The data lines joined with LF, as sent (not decoded), in a buffer of its own.
    pub(crate) data: Bytes,
    /// The event type (`message` unless an `event:` field set another).
    pub(crate) event_type: Arc<str>,
    /// The last event id of the connection at dispatch (`None` before any `id:` field), as the
    /// standard's `lastEventId`: it stays until an `id:` field changes it.
    pub(crate) id: Option<Arc<str>>,
    /// The `retry:` field of this event's block, in milliseconds (the source reads
    /// [`EventParser::take_reconnection_time`], which also sees blocks without data).
    pub(crate) retry: Option<u64>,
}

/// The UTF-8 byte-order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The data buffer of the event being read.
enum Data {
    /// No `data` field yet (an empty data buffer: nothing is dispatched).
    Empty,
    /// One `data` field so far, its value still in the chunk it came in (copied at dispatch).
    One(Bytes),
    /// Several `data` fields, or one from a line spanning chunks: the values joined with LF,
    /// in [`EventParser::joined`].
    Joined,
}

/// An event-stream parser for one connection (see the module doc).
pub(crate) struct EventParser {
    /// The cap on a line and on an event, in bytes.
    limit: usize,
    /// The chunk being read, and where in it.
    chunk: Bytes,
    at: usize,
    /// Bytes of the stream seen so far, while they could still be the start of a BOM (up to
    /// three); `None` once the BOM is stripped or ruled out.
    bom: Option<Vec<u8>>,
    /// The start of a line whose end is in a later chunk.
    carry: Vec<u8>,
    /// The last byte read was CR: an LF next ends no line.
    after_cr: bool,
    /// Bytes of the current line so far.
    line_len: usize,
    /// The current line is a comment.
    comment: bool,
    /// Bytes of the current event's lines so far, comments excepted.
    event_len: usize,
    /// The data buffer.
    data: Data,
    /// The joined data, when [`Data::Joined`] (kept between events for its capacity).
    joined: Vec<u8>,
    /// The event type buffer.
    type_buffer: Vec<u8>,
    /// The type of the last event dispatched, shared while it does not change.
    last_type: Arc<str>,
    /// `message`, shared.
    message: Arc<str>,
    /// The last event id.
    last_id: Option<Arc<str>>,
    /// The current block's `retry:` value.
    retry: Option<u64>,
    /// The last `retry:` value not yet taken by [`EventParser::take_reconnection_time`].
    reconnection_time: Option<u64>,
    /// A line or an event passed the cap: the parser is spent.
    spent: bool,
}

impl EventParser {
    /// A parser at the start of a stream, for lines and events of at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        let message: Arc<str> = Arc::from("message");
        EventParser {
            limit,
            chunk: Bytes::new(),
            at: 0,
            bom: Some(Vec::new()),
            carry: Vec::new(),
            after_cr: false,
            line_len: 0,
            comment: false,
            event_len: 0,
            data: Data::Empty,
            joined: Vec::new(),
            type_buffer: Vec::new(),
            last_type: Arc::clone(&message),
            message,
            last_id: None,
            retry: None,
            reconnection_time: None,
            spent: false,
        }
    }

    /// Takes the next chunk of the body. Call it once [`next_event`](Self::next_event) has
    /// returned `Ok(None)` for the previous chunk (a chunk not read to its end is dropped).
    pub(crate) fn feed(&mut self, chunk: Bytes) {
        self.at = 0;
        self.chunk = match self.bom.take() {
            None => chunk,
            Some(mut seen) => {
                seen.extend_from_slice(&chunk);
                if seen.len() < BOM.len() && BOM.starts_with(&seen) {
                    // Too short to tell yet.
                    self.bom = Some(seen);
                    Bytes::new()
                } else if seen.starts_with(BOM) {
                    Bytes::from(seen).slice(BOM.len()..)
                } else if seen.len() == chunk.len() {
                    chunk
                } else {
                    Bytes::from(seen)
                }
            }
        };
    }

    /// The next event the chunks fed so far complete, `Ok(None)` when the current chunk is used
    /// up (feed the next one).
    ///
    /// # Errors
    /// [`Oversized`] when a line or an event passes the cap; every later call returns it too.
    pub(crate) fn next_event(&mut self) -> Result<Option<Event>, Oversized> {
        if self.spent {
            return Err(Oversized { limit: self.limit });
        }
        let chunk = self.chunk.clone();
        while self.at < chunk.len() {
            let start = self.at;
            if std::mem::take(&mut self.after_cr) && chunk[start] == b'\n' {
                self.at += 1;
                continue;
            }
            let rest = &chunk[start..];
            let end = memchr::memchr2(b'\n', b'\r', rest);
            let len = end.unwrap_or(rest.len());
            if len > 0 {
                if self.line_len == 0 {
                    self.comment = rest[0] == b':';
                }
                self.line_len += len;
                if !self.comment {
                    self.event_len += len;
                }
                if self.line_len > self.limit || self.event_len > self.limit {
                    self.spent = true;
                    self.chunk = Bytes::new();
                    return Err(Oversized { limit: self.limit });
                }
            }
            let Some(end) = end else {
                // The line goes on in the next chunk.
                self.carry.extend_from_slice(rest);
                self.at = chunk.len();
                break;
            };
            self.at = start + end + 1;
            self.after_cr = rest[end] == b'\r';
            if self.line_len == 0 {
                self.event_len = 0;
            }
            self.line_len = 0;
            let event = if self.carry.is_empty() {
                self.line(&chunk, start, start + end)
            } else {
                let mut line = std::mem::take(&mut self.carry);
                line.extend_from_slice(&rest[..end]);
                let event = self.line_from_carry(&line);
                line.clear();
                self.carry = line;
                event
            };
            if event.is_some() {
                return Ok(event);
            }
        }
        Ok(None)
    }

    /// The last `retry:` value read since the previous call, in milliseconds: the stream's
    /// reconnection time as WHATWG HTML §9.2.6 sets it, at once, whether or not its block
    /// dispatches an event (a block with only `retry:` counts too).
    pub(crate) fn take_reconnection_time(&mut self) -> Option<u64> {
        self.reconnection_time.take()
    }

    /// One line, `chunk[from..to]`.
    fn line(&mut self, chunk: &Bytes, from: usize, to: usize) -> Option<Event> {
        let line = &chunk[from..to];
        match self.field(line) {
            Field::Dispatch => self.dispatch(),
            Field::Data(value_from) => {
                let value = chunk.slice(from + value_from..to);
                match self.data {
                    Data::Empty => self.data = Data::One(value),
                    _ => self.append_data(&value),
                }
                None
            }
            Field::Done => None,
        }
    }

    /// One line that spanned chunks, gathered in a buffer.
    fn line_from_carry(&mut self, line: &[u8]) -> Option<Event> {
        match self.field(line) {
            Field::Dispatch => self.dispatch(),
            Field::Data(value_from) => {
                self.append_data(&line[value_from..]);
                None
            }
            Field::Done => None,
        }
    }

    /// Adds a data value to a buffer of joined values.
    fn append_data(&mut self, value: &[u8]) {
        match std::mem::replace(&mut self.data, Data::Joined) {
            Data::Empty => {
                self.joined.clear();
                self.joined.extend_from_slice(value);
            }
            Data::One(first) => {
                self.joined.clear();
                self.joined.extend_from_slice(&first);
                self.joined.push(b'\n');
                self.joined.extend_from_slice(value);
            }
            Data::Joined => {
                self.joined.push(b'\n');
                self.joined.extend_from_slice(value);
            }
        }
    }

    /// Reads one line's field; data is left to the caller (it knows where the line lives).
    fn field(&mut self, line: &[u8]) -> Field {
        if line.is_empty() {
            return Field::Dispatch;
        }
        let (name, value_from) = match memchr::memchr(b':', line) {
            Some(0) => return Field::Done,
            Some(colon) if line.get(colon + 1) == Some(&b' ') => (&line[..colon], colon + 2),
            Some(colon) => (&line[..colon], colon + 1),
            None => (line, line.len()),
        };
        let value = &line[value_from..];
        match name {
            b"data" => return Field::Data(value_from),
            b"event" => {
                self.type_buffer.clear();
                self.type_buffer.extend_from_slice(value);
            }
            b"id"
                if !value.contains(&0)
                    && self.last_id.as_deref().map(str::as_bytes) != Some(value) =>
            {
                self.last_id = Some(Arc::from(String::from_utf8_lossy(value)));
            }
            // Digits only, so the text is ASCII; a value past u64 is ignored.
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                if let Ok(retry) = std::str::from_utf8(value).unwrap_or("").parse() {
                    self.retry = Some(retry);
                    self.reconnection_time = Some(retry);
                }
            }
            _ => {}
        }
        Field::Done
    }

    /// A blank line: the event, unless its data buffer is empty. The buffers are reset.
    fn dispatch(&mut self) -> Option<Event> {
        let retry = self.retry.take();
        let data = match std::mem::replace(&mut self.data, Data::Empty) {
            Data::Empty => {
                self.type_buffer.clear();
                return None;
            }
            Data::One(value) => Bytes::copy_from_slice(&value),
            Data::Joined => Bytes::copy_from_slice(&self.joined),
        };
        let event_type = if self.type_buffer.is_empty() {
            Arc::clone(&self.message)
        } else {
            if self.last_type.as_bytes() != self.type_buffer.as_slice() {
                self.last_type = Arc::from(String::from_utf8_lossy(&self.type_buffer));
            }
            Arc::clone(&self.last_type)
        };
        self.type_buffer.clear();
        Some(Event {
            data,
            event_type,
            id: self.last_id.clone(),
            retry,
        })
    }
}

/// Every event `chunks` give under a cap of `limit`, up to the first error (where the SSE
/// source ends the connection), and that error: the whole stream at once, for the fuzz target
/// and the tests.
pub(crate) fn read_all<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    limit: usize,
) -> (Vec<Event>, Option<Oversized>) {
    let mut parser = EventParser::new(limit);
    let mut events = Vec::new();
    for chunk in chunks {
        parser.feed(Bytes::copy_from_slice(chunk));
        loop {
            match parser.next_event() {
                Ok(Some(event)) => events.push(event),
                Ok(None) => break,
                Err(error) => return (events, Some(error)),
            }
        }
    }
    (events, None)
}

/// What a line did.
enum Field {
    /// A blank line.
    Dispatch,
    /// A `data` field whose value starts at this offset of the line.
    Data(usize),
    /// Anything else (handled, or ignored).
    Done,
}
