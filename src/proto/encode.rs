//! Response encoding: heads, Content-Length and chunked bodies, error
//! responses. The encoder, not the handler, decides the framing, so a
//! handler cannot produce an ambiguous message.

use std::borrow::Cow;
use std::fmt;

use smallvec::SmallVec;

use crate::proto::date::{self, DATE_LEN};
use crate::proto::{Error, status};

/// A header field a handler added: name, value.
type Field<'a> = (Cow<'a, str>, Cow<'a, str>);

/// A response head as the handler builds it.
///
/// ```
/// use http_cluster::Response;
/// let head = Response::new(200).header("Content-Type", "text/plain").content_length(13);
/// assert_eq!(head.status(), 200);
/// ```
#[derive(Clone, Debug)]
pub struct Response<'a> {
    status: u16,
    /// Two inline: building a response allocates nothing, and it stays
    /// small to move.
    headers: SmallVec<[Field<'a>; 2]>,
    /// [`Response::content_type`]'s value, with how many `headers` came
    /// before it (the wire keeps the order of the calls). Nearly every
    /// response has one; a field set here, unlike a push into `headers`,
    /// lets the compiler keep a freshly built response out of memory
    /// until the encoder reads it (a push forced a copy of the whole
    /// struct whose loads stalled on the stores just made, perf).
    content_type: Option<(usize, Cow<'a, str>)>,
    length: Option<u64>,
    close: bool,
    /// A field of `headers` the encoder must refuse was added (checked as
    /// fields are added; the content type's value is checked when encoded).
    invalid: bool,
    /// A `Date` field was added: the encoder then adds none.
    has_date: bool,
}

impl<'a> Response<'a> {
    pub fn new(status: u16) -> Response<'a> {
        Response {
            status,
            headers: SmallVec::new(),
            content_type: None,
            length: None,
            close: false,
            invalid: false,
            has_date: false,
        }
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// Adds a header field. `Content-Length` sets the body length (as
    /// [`Response::content_length`]); `Connection: close` asks to close after
    /// this response; `Transfer-Encoding` is ignored: framing is the
    /// encoder's job.
    pub fn header(mut self, name: impl Into<Cow<'a, str>>, value: impl Into<Cow<'a, str>>) -> Response<'a> {
        let (name, value) = (name.into(), value.into());
        if name.eq_ignore_ascii_case("content-length") {
            // An unparsable length is kept as a header so encoding refuses it.
            if let Ok(n) = value.trim().parse() {
                self.length = Some(n);
                return self;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            if value.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")) {
                self.close = true;
            }
            return self;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return self;
        }
        // A Content-Length that could not be parsed above is kept only to
        // be refused: framing headers are ours.
        self.invalid |= name.is_empty()
            || !crate::proto::all_in(&crate::proto::TOKEN_BYTES, name.as_bytes())
            || name.eq_ignore_ascii_case("content-length");
        self.has_date |= name.eq_ignore_ascii_case("date");
        self.invalid |= !is_field_value(&value);
        self.headers.push((name, value));
        self
    }

    /// Declares the body length: the body is sent as exactly this many bytes.
    /// Without it the body is streamed chunked (or, to HTTP/1.0 clients,
    /// until the connection closes).
    pub fn content_length(mut self, n: u64) -> Response<'a> {
        self.set_content_length(n);
        self
    }

    /// [`Response::content_length`] in place, for a response that is not
    /// moved again.
    pub(crate) fn set_content_length(&mut self, n: u64) {
        self.length = Some(n);
    }

    /// Sets `Content-Type` (a second call replaces the first).
    pub fn content_type(mut self, value: impl Into<Cow<'a, str>>) -> Response<'a> {
        // Its value is checked when encoded: a later call may replace it.
        self.content_type = Some((self.headers.len(), value.into()));
        self
    }

    /// The header fields in the order they were added: those before the
    /// content type, its value, those after it.
    fn parts(&self) -> (&[Field<'a>], Option<&str>, &[Field<'a>]) {
        let at = self.content_type.as_ref().map_or(self.headers.len(), |(at, _)| *at);
        let (before, after) = self.headers.split_at(at.min(self.headers.len()));
        (before, self.content_type.as_ref().map(|(_, value)| value.as_ref()), after)
    }

    /// The header fields in the order they were added.
    fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        let (before, content_type, after) = self.parts();
        fn pairs<'s>(fields: &'s [Field<'_>]) -> impl Iterator<Item = (&'s str, &'s str)> {
            fields.iter().map(|(n, v)| (n.as_ref(), v.as_ref()))
        }
        pairs(before).chain(content_type.map(|value| ("Content-Type", value))).chain(pairs(after))
    }

    /// Close the connection after this response.
    pub fn close(mut self) -> Response<'a> {
        self.close = true;
        self
    }

    pub fn length(&self) -> Option<u64> {
        self.length
    }
}

/// How a response body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body may follow (HEAD request, 204, 304).
    NoBody,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (HTTP/1.0 client, unknown length).
    UntilClose,
}

/// What the encoder needs to know about the request being answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    pub is_head: bool,
    pub minor: u8,
    /// The client allows keep-alive and the server is willing.
    pub keep_alive: bool,
}

/// A handler mistake in a response head. Never caused by client input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// 1xx responses are not sent by handlers (100 Continue is automatic).
    InformationalStatus(u16),
    /// Status outside 200..=999.
    InvalidStatus(u16),
    /// A header name that is not a token, or a value with CR, LF or NUL.
    InvalidHeader(String),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::InformationalStatus(s) => write!(f, "handlers cannot send informational status {s}"),
            EncodeError::InvalidStatus(s) => write!(f, "invalid status code {s}"),
            EncodeError::InvalidHeader(h) => write!(f, "invalid response header {h:?}"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Writes the status line and headers of `resp` to `out`. Returns the body
/// framing and whether the connection stays open afterwards.
pub fn encode_head(
    resp: &Response<'_>,
    req: RequestInfo,
    date: &[u8; DATE_LEN],
    out: &mut Vec<u8>,
) -> Result<(Framing, bool), EncodeError> {
    check(resp)?;
    write_fields(resp, date, out);
    Ok(write_framing(resp, req, out))
}

/// Refuses what a handler may not send, before anything is written.
fn check(resp: &Response<'_>) -> Result<(), EncodeError> {
    let code = resp.status;
    if (100..200).contains(&code) {
        return Err(EncodeError::InformationalStatus(code));
    }
    if !(200..=999).contains(&code) {
        return Err(EncodeError::InvalidStatus(code));
    }
    if resp.invalid || resp.content_type.as_ref().is_some_and(|(_, value)| !is_field_value(value)) {
        let bad = resp.fields().find(|(name, value)| {
            name.is_empty()
                || !crate::proto::all_in(&crate::proto::TOKEN_BYTES, name.as_bytes())
                || name.eq_ignore_ascii_case("content-length")
                || !is_field_value(value)
        });
        let text = bad.map_or_else(String::new, |(name, value)| format!("{name}: {value}"));
        return Err(EncodeError::InvalidHeader(text));
    }
    Ok(())
}

/// The status line and the fields that depend on the response and the
/// date alone: everything before the framing fields. Returns where the
/// content type's value starts, counted from the status line.
fn write_fields(resp: &Response<'_>, date: &[u8; DATE_LEN], out: &mut Vec<u8>) -> Option<usize> {
    let start = out.len();
    match status::status_line(resp.status) {
        Some(line) => out.extend_from_slice(line.as_bytes()),
        None => {
            out.extend_from_slice(b"HTTP/1.1 ");
            out.extend_from_slice(itoa::Buffer::new().format(resp.status).as_bytes());
            out.extend_from_slice(b" \r\n");
        }
    }
    // Three plain loops rather than `fields()`: its chained iterator cost
    // 28 instructions per response (callgrind, whole worker under S2).
    let (before, content_type, after) = resp.parts();
    for (name, value) in before {
        field_line(name, value, out);
    }
    let mut type_at = None;
    if let Some(value) = content_type {
        type_at = Some(out.len() - start + CONTENT_TYPE.len() + 2);
        field_line(CONTENT_TYPE, value, out);
    }
    for (name, value) in after {
        field_line(name, value, out);
    }
    if !resp.has_date {
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    type_at
}

const CONTENT_TYPE: &str = "Content-Type";

/// The framing fields and the empty line that ends the head. Returns the
/// body framing and whether the connection stays open afterwards.
fn write_framing(resp: &Response<'_>, req: RequestInfo, out: &mut Vec<u8>) -> (Framing, bool) {
    let code = resp.status;
    // RFC 9110 §6.4.1: responses to HEAD and 204/304 never carry content.
    let body_allowed = !(req.is_head || code == 204 || code == 304);
    let framing = match (body_allowed, resp.length) {
        (false, _) => Framing::NoBody,
        (true, Some(n)) => Framing::Length(n),
        (true, None) if req.minor >= 1 => Framing::Chunked,
        (true, None) => Framing::UntilClose,
    };
    let keep_alive = req.keep_alive && !resp.close && framing != Framing::UntilClose;
    match (framing, resp.length) {
        // RFC 9110 §8.6: no Content-Length in a 204. A HEAD or 304 response
        // may state the length the GET would have had.
        (Framing::NoBody, Some(n)) if code != 204 => content_length(n, out),
        (Framing::Length(n), _) => content_length(n, out),
        (Framing::Chunked, _) => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        _ => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if req.minor == 0 {
        // RFC 9112 §9.3: HTTP/1.0 persistence must be confirmed.
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (framing, keep_alive)
}

/// The largest head start [`HeadMemo`] keeps: a status line, a content
/// type of some 60 bytes and the Date field.
const MEMO_BYTES: usize = 160;

/// The longest end of a head: `Content-Length` with 20 digits,
/// `Connection: keep-alive` and the empty line.
const END_BYTES: usize = 64;

/// The last head written, in two parts kept apart: its start (status
/// line, content type, Date) and its end (framing fields, empty line),
/// each copied when the next response would write it the same.
///
/// The responses of one server mostly share their status and content
/// type, within one second their Date, and often their length. Writing
/// the head anew (status line, content type checked and copied, Date
/// copied, length formatted) cost about 320 of a pipelined request's 1,850
/// instructions; comparing and copying costs about 70 (callgrind). Only
/// starts without other fields are kept: theirs would have to be compared
/// one by one.
pub struct HeadMemo {
    start: Kept<StartKey, MEMO_BYTES>,
    /// The end, with the framing it gave.
    end: Kept<(EndKey, (Framing, bool)), END_BYTES>,
}

/// Bytes once written, and what they were written from (`None` until
/// some are kept).
struct Kept<K, const N: usize> {
    from: Option<K>,
    len: usize,
    bytes: [u8; N],
}

impl<K, const N: usize> Kept<K, N> {
    const fn new() -> Self {
        Kept { from: None, len: 0, bytes: [0; N] }
    }

    /// Keeps `bytes` as written from `from`, or forgets what was kept when
    /// they do not fit.
    fn keep(&mut self, from: K, bytes: &[u8]) {
        self.from = None;
        if let Some(room) = self.bytes.get_mut(..bytes.len()) {
            room.copy_from_slice(bytes);
            self.len = bytes.len();
            self.from = Some(from);
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct StartKey {
    status: u16,
    /// The Unix second whose date the start carries.
    second: u64,
    /// Where in the start the content type's value begins, and its length.
    content_type: Option<(usize, usize)>,
}

/// Everything [`write_framing`] reads.
#[derive(Clone, Copy, PartialEq, Eq)]
struct EndKey {
    status: u16,
    length: Option<u64>,
    close: bool,
    req: RequestInfo,
}

impl Default for HeadMemo {
    fn default() -> HeadMemo {
        HeadMemo::new()
    }
}

impl HeadMemo {
    pub const fn new() -> HeadMemo {
        HeadMemo { start: Kept::new(), end: Kept::new() }
    }

    /// [`encode_head`] for a response sent at Unix second `second`, copying
    /// what the previous response wrote the same.
    pub fn encode_head(
        &mut self,
        resp: &Response<'_>,
        req: RequestInfo,
        second: u64,
        out: &mut Vec<u8>,
    ) -> Result<(Framing, bool), EncodeError> {
        if let Some(start) = self.start_of(resp, second) {
            // The same status and content type passed `check` when kept.
            out.extend_from_slice(start);
        } else {
            check(resp)?;
            let at = out.len();
            let type_at = write_fields(resp, &date::at(second), out);
            if resp.headers.is_empty() {
                let content_type = resp.content_type.as_ref().zip(type_at).map(|((_, value), at)| (at, value.len()));
                self.start.keep(StartKey { status: resp.status, second, content_type }, &out[at..]);
            }
        }
        let key = EndKey { status: resp.status, length: resp.length, close: resp.close, req };
        if let Some((from, framing)) = self.end.from
            && from == key
        {
            out.extend_from_slice(self.end.bytes());
            return Ok(framing);
        }
        let at = out.len();
        let framing = write_framing(resp, req, out);
        self.end.keep((key, framing), &out[at..]);
        Ok(framing)
    }

    /// The kept start, when `resp` at `second` would be written the same.
    fn start_of(&self, resp: &Response<'_>, second: u64) -> Option<&[u8]> {
        let from = self.start.from?;
        if from.status != resp.status || from.second != second || !resp.headers.is_empty() {
            return None;
        }
        let start = self.start.bytes();
        let same_type = match (from.content_type, &resp.content_type) {
            (None, None) => true,
            (Some((at, len)), Some((_, value))) => start.get(at..at + len) == Some(value.as_bytes()),
            _ => false,
        };
        same_type.then_some(start)
    }
}

fn field_line(name: &str, value: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn content_length(n: u64, out: &mut Vec<u8>) {
    // Three appends straight into the output. Assembling the line on the
    // stack and appending it once saves 9 instructions but makes memcpy's
    // 16-byte loads read the narrower stores that just built it, which the
    // CPU cannot forward: `perf` put memcpy at 3.9% of S2's samples against
    // 2.2%, most of the rise on that load.
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Frames `data` as one chunk. Empty data writes nothing: an empty chunk
/// would end the body.
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    chunk_header(data.len(), out);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The size line of a chunk of `len` bytes (for writing the data separately).
pub fn chunk_header(len: usize, out: &mut Vec<u8>) {
    let mut hex = [0u8; 16];
    let mut i = hex.len();
    let mut n = len;
    loop {
        i -= 1;
        hex[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&hex[i..]);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The interim response sent when a handler first reads a body the client
/// is holding back behind `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A complete error response for a rejected request; always closes. To a
/// HEAD request (`head`: known only when the head parsed and its body
/// failed), without the body.
pub fn encode_error(err: Error, date: &[u8], head: bool, out: &mut Vec<u8>) {
    encode_plain_close(err.status(), err.detail(), date, head, out);
}

/// A short text/plain response with `Connection: close`. To a HEAD request
/// (`head`), the same head without the body (RFC 9110 §9.3.2).
pub fn encode_plain_close(code: u16, text: &str, date: &[u8], head: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(code).as_bytes());
    out.push(b' ');
    out.extend_from_slice(status::reason(code).as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\nContent-Type: text/plain\r\n");
    content_length(text.len() as u64 + 1, out);
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    if !head {
        out.extend_from_slice(text.as_bytes());
        out.push(b'\n');
    }
}

/// A value with CR, LF or NUL would end the field or the head early (a
/// response splitting vector, if the value came from a client).
fn is_field_value(value: &str) -> bool {
    crate::proto::all_in(&FIELD_VALUE_BYTES, value.as_bytes())
}

/// Every byte but CR, LF and NUL, as a table: the content type is checked
/// on every response, and [`crate::proto::all_in`] checks it without a
/// branch per byte.
static FIELD_VALUE_BYTES: [bool; 256] = byte_table!(1..=9 | 11 | 12 | 14..=255);

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8; DATE_LEN] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn head(resp: Response<'_>, is_head: bool, minor: u8) -> Result<(String, Framing, bool), EncodeError> {
        let mut out = Vec::new();
        let (f, k) = encode_head(&resp, RequestInfo { is_head, minor, keep_alive: true }, DATE, &mut out)?;
        Ok((String::from_utf8(out).unwrap(), f, k))
    }

    #[test]
    fn content_type_keeps_its_place_among_the_fields() {
        let fields = |resp| {
            let (text, _, _) = head(resp, false, 1).unwrap();
            text.lines().skip(1).take_while(|l| !l.starts_with("Date")).map(str::to_string).collect::<Vec<_>>()
        };
        assert_eq!(
            fields(Response::new(200).header("A", "1").content_type("text/plain").header("B", "2")),
            ["A: 1", "Content-Type: text/plain", "B: 2"]
        );
        assert_eq!(
            fields(Response::new(200).content_type("text/plain").header("B", "2")),
            ["Content-Type: text/plain", "B: 2"]
        );
        assert_eq!(fields(Response::new(200).header("A", "1").content_type("a/b")), ["A: 1", "Content-Type: a/b"]);
        // A second call replaces the first, at its own place.
        assert_eq!(
            fields(Response::new(200).content_type("a/b").header("A", "1").content_type("c/d")),
            ["A: 1", "Content-Type: c/d"]
        );
        // Its value is checked like any other (response splitting), the
        // one that stands.
        let split = head(Response::new(200).content_type("text/plain\r\nX-Evil: 1"), false, 1);
        assert!(matches!(split, Err(EncodeError::InvalidHeader(h)) if h.starts_with("Content-Type")));
        assert!(head(Response::new(200).content_type("a\nb").content_type("c/d"), false, 1).is_ok());
    }

    /// Responses whose heads start alike or almost alike, for the memo.
    fn memo_cases() -> Vec<Response<'static>> {
        let text = || Response::new(200).content_type("text/plain");
        vec![
            text().content_length(13),
            text().content_length(5),
            text(),
            Response::new(200).content_type("text/plai").content_length(13),
            Response::new(200).content_type("text/plainx").content_length(13),
            Response::new(200).content_length(13),
            Response::new(404).content_type("text/plain").content_length(13),
            Response::new(599).content_type("text/plain").content_length(13),
            text().header("X", "1").content_length(13),
            Response::new(200).header("X", "1").content_type("text/plain").content_length(13),
            Response::new(200).header("Date", "custom").content_length(13),
            Response::new(200).content_type("a\nb").content_length(13),
            Response::new(200).content_type("t".repeat(MEMO_BYTES)).content_length(13),
            Response::new(204).content_type("text/plain"),
            text().close(),
        ]
    }

    #[test]
    fn a_kept_head_start_writes_what_encoding_anew_writes() {
        let seconds = [784_111_777, 784_111_778];
        let infos = [
            RequestInfo { is_head: false, minor: 1, keep_alive: true },
            RequestInfo { is_head: true, minor: 1, keep_alive: true },
            RequestInfo { is_head: false, minor: 0, keep_alive: false },
        ];
        let mut cases = Vec::new();
        for resp in memo_cases() {
            for second in seconds {
                for info in infos {
                    cases.push((resp.clone(), second, info));
                }
            }
        }
        // Every case after every case: each way a kept start can match or
        // not. The output buffer already holds bytes, as on a pipelined
        // connection.
        for (first, s1, i1) in &cases {
            for (next, s2, i2) in &cases {
                let mut memo = HeadMemo::default();
                let mut out = b"earlier".to_vec();
                let _ = memo.encode_head(first, *i1, *s1, &mut out);
                let mut fresh = out.clone();
                let got = memo.encode_head(next, *i2, *s2, &mut out);
                let want = encode_head(next, *i2, &date::at(*s2), &mut fresh);
                assert_eq!(got, want, "{first:?} then {next:?}");
                assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&fresh), "{first:?} then {next:?}");
            }
        }
    }

    #[test]
    fn a_head_start_is_copied_only_for_the_same_status_type_and_second() {
        let second = 784_111_777;
        let mut memo = HeadMemo::default();
        let text = Response::new(200).content_type("text/plain").content_length(13);
        memo.encode_head(&text, RequestInfo { is_head: false, minor: 1, keep_alive: true }, second, &mut Vec::new())
            .unwrap();
        assert!(memo.start_of(&text, second).is_some());
        assert!(memo.start_of(&Response::new(200).content_type("text/plain"), second).is_some());
        assert!(memo.start_of(&text, second + 1).is_none());
        assert!(memo.start_of(&Response::new(201).content_type("text/plain"), second).is_none());
        assert!(memo.start_of(&Response::new(200).content_type("text/plai"), second).is_none());
        assert!(memo.start_of(&Response::new(200), second).is_none());
        assert!(memo.start_of(&Response::new(200).content_type("text/plain").header("X", "1"), second).is_none());
    }

    #[test]
    fn framing_is_chosen_by_the_encoder() {
        let (text, f, keep) = head(Response::new(200).header("Content-Length", "5"), false, 1).unwrap();
        assert_eq!(text, "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 5\r\n\r\n");
        assert_eq!((f, keep), (Framing::Length(5), true));
        let (text, f, _) = head(Response::new(200).header("Transfer-Encoding", "gzip"), false, 1).unwrap();
        assert!(text.contains("Transfer-Encoding: chunked\r\n") && !text.contains("gzip"));
        assert_eq!(f, Framing::Chunked);
        let (text, f, keep) = head(Response::new(200), false, 0).unwrap();
        assert_eq!((f, keep), (Framing::UntilClose, false));
        assert!(text.contains("Connection: close"));
        let (text, f, _) = head(Response::new(204).content_length(3), false, 1).unwrap();
        assert_eq!(f, Framing::NoBody);
        assert!(!text.contains("Content-Length"), "no Content-Length in a 204");
        let (text, f, _) = head(Response::new(200).content_length(13), true, 1).unwrap();
        assert_eq!(f, Framing::NoBody);
        assert!(text.contains("Content-Length: 13"), "HEAD states the GET length");
    }

    #[test]
    fn handler_mistakes_are_refused() {
        assert!(matches!(
            head(Response::new(200).header("Content-Length", "12abc"), false, 1),
            Err(EncodeError::InvalidHeader(_))
        ));
        assert!(matches!(
            head(Response::new(200).header("X", "a\r\nInjected: 1"), false, 1),
            Err(EncodeError::InvalidHeader(_))
        ));
        assert!(matches!(
            head(Response::new(200).header("Bad Name", "v"), false, 1),
            Err(EncodeError::InvalidHeader(_))
        ));
        assert_eq!(head(Response::new(101), false, 1).unwrap_err(), EncodeError::InformationalStatus(101));
        assert_eq!(head(Response::new(42), false, 1).unwrap_err(), EncodeError::InvalidStatus(42));
    }

    #[test]
    fn cr_lf_and_nul_are_refused_at_any_position_in_a_value() {
        // Lengths 1 to 9 put the byte in the table check's groups of four
        // and in its remainder.
        for len in 1..10 {
            for at in 0..len {
                for bad in ['\r', '\n', '\0'] {
                    let mut value: Vec<char> = vec!['v'; len];
                    value[at] = bad;
                    let value: String = value.into_iter().collect();
                    assert!(!is_field_value(&value), "{value:?}");
                    let resp = Response::new(200).content_type(value.clone());
                    assert!(head(resp, false, 1).is_err(), "content type {value:?}");
                }
            }
        }
        // Tabs, spaces and non-ASCII are field content (obs-text).
        assert!(is_field_value("text/plain; charset=utf-8\t\u{e9}\u{7f}"));
    }

    #[test]
    fn content_length_is_written_exactly() {
        for n in [0, 7, 13, 10_000, u64::MAX] {
            let (text, _, _) = head(Response::new(200).content_length(n), false, 1).unwrap();
            assert!(text.ends_with(&format!("\r\nContent-Length: {n}\r\n\r\n")), "{text:?}");
        }
    }

    #[test]
    fn chunks_are_framed_in_hex() {
        let mut out = Vec::new();
        encode_chunk(&[b'x'; 300], &mut out);
        assert!(out.starts_with(b"12c\r\n") && out.ends_with(b"\r\n"));
        let mut empty = Vec::new();
        encode_chunk(b"", &mut empty);
        assert!(empty.is_empty(), "an empty chunk would end the body");
    }
}
