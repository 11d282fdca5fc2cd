//! Request heads: `httparse` for the syntax, then every framing and
//! smuggling rule of RFC 9112 in one function, [`parse`].

use std::mem::MaybeUninit;

use crate::config::{Limits, MAX_HEADERS_CAP};
use crate::proto::Error;

/// How the body of a request is framed (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No Content-Length and no Transfer-Encoding: no body (rule 7).
    Empty,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A byte range inside [`Request::head`]. `u32` because the head is bounded
/// by `max_head_bytes`, which is far below 4 GiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn of(base: &[u8], part: &[u8]) -> Span {
        // Both slices come from the same buffer; the offset is plain address
        // arithmetic, no pointer is dereferenced.
        let start = part.as_ptr() as usize - base.as_ptr() as usize;
        Span { start: start as u32, end: (start + part.len()) as u32 }
    }

    fn get(self, head: &[u8]) -> &[u8] {
        &head[self.start as usize..self.end as usize]
    }

    /// One 64-bit word, so the bytes are stored at once: built from two
    /// 4-byte halves, the memcpy that appends them loaded 8 bytes across two
    /// stores the CPU could not forward (`perf`: a fifth of memcpy's
    /// samples under S2).
    fn to_bytes(self) -> [u8; 8] {
        (u64::from(self.start) | u64::from(self.end) << 32).to_le_bytes()
    }

    fn from_bytes(b: &[u8]) -> Span {
        let word = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        // Truncations: the halves are the two u32s `to_bytes` packed.
        Span { start: word as u32, end: (word >> 32) as u32 }
    }
}

/// Bytes per header field in [`Request`]'s index: a name span and a value
/// span.
const FIELD_BYTES: usize = 16;

/// A parsed request head. It owns a copy of its bytes, so a handler can keep
/// it while the connection reads on.
///
/// One allocation holds the head's bytes followed by the index of its
/// header fields (their spans, [`FIELD_BYTES`] each), so the struct itself
/// stays small: it is moved by value from the parser to the handler, and a
/// 200-byte struct with the spans inline cost a `memcpy` at every step
/// (about 300 instructions per request, callgrind).
#[derive(Clone)]
pub struct Request {
    /// The head, then the field index. A `Vec`, not a boxed slice, so that
    /// its allocation can go back to [`SPARE_DATA`] when the request drops.
    data: Vec<u8>,
    head_len: u32,
    method: Span,
    target: Span,
    minor: u8,
    keep_alive: bool,
    expect_continue: bool,
    body: BodyKind,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method())
            .field("target", &self.target())
            .field("minor", &self.minor)
            .field("headers", &self.headers().map(|(n, v)| (n, String::from_utf8_lossy(v))).collect::<Vec<_>>())
            .field("body", &self.body)
            .finish()
    }
}

impl Request {
    /// The method token, e.g. `GET`.
    pub fn method(&self) -> &str {
        self.text(self.method)
    }

    /// The request target exactly as sent (origin, absolute, authority or
    /// asterisk form).
    pub fn target(&self) -> &str {
        self.text(self.target)
    }

    /// The path of the target, without query; for an absolute-form target
    /// (`http://host/p?q`) the path part (`/p`).
    pub fn path(&self) -> &str {
        let t = self.target();
        if t.starts_with('/') {
            return before_query(t);
        }
        let t = match t.find("://") {
            Some(i) => {
                // RFC 3986 §3.2: the authority ends at the first `/`, `?`
                // or `#`; only a `/` starts a path. (`http://a?/admin` has
                // the path `/` and the query `/admin`.)
                let rest = &t[i + 3..];
                match rest.bytes().position(|b| b == b'/' || b == b'?' || b == b'#') {
                    Some(j) if rest.as_bytes()[j] == b'/' => &rest[j..],
                    _ => "/",
                }
            }
            None => t,
        };
        before_query(t)
    }

    /// The query string after `?`, if any.
    pub fn query(&self) -> Option<&str> {
        // A `?` inside a fragment starts no query.
        let t = self.target();
        let t = t.split_once('#').map_or(t, |(t, _)| t);
        t.split_once('?').map(|(_, q)| q)
    }

    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub fn version_minor(&self) -> u8 {
        self.minor
    }

    /// The first value of header `name` (case-insensitive), if it is valid
    /// UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_bytes(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first value of header `name` as raw bytes (values may carry
    /// obs-text).
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// All header fields in order, names as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let (head, index) = self.data.split_at(self.head_len as usize);
        index.chunks_exact(FIELD_BYTES).map(move |field| {
            let (name, value) = (Span::from_bytes(&field[..8]), Span::from_bytes(&field[8..]));
            (self.text(name), value.get(head))
        })
    }

    /// The text at `span`, one of the spans [`parse_with`] took from a
    /// `&str` that httparse returned: the method, the target or a field
    /// name.
    ///
    /// Not checked again: `from_utf8` on every `path()` call was about 70
    /// instructions per request (callgrind, S1), for bytes that were text
    /// when they were parsed.
    fn text(&self, span: Span) -> &str {
        let bytes = span.get(self.head());
        debug_assert!(std::str::from_utf8(bytes).is_ok());
        // SAFETY: `parse_with` makes these spans with `Span::of` from the
        // `&str`s httparse returned (so valid UTF-8, whatever httparse did
        // to check), all inside a head it refuses past `u32::MAX` bytes, so
        // the offsets are exact; it then copies those bytes unchanged into
        // `data`, and nothing writes to `data` after that. A span ends on
        // the end of its `str`, so it never splits a character.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    /// The head's bytes as received.
    fn head(&self) -> &[u8] {
        &self.data[..self.head_len as usize]
    }

    /// Whether the client allows the connection to stay open after this
    /// exchange (HTTP/1.1 default, or HTTP/1.0 with `Connection: keep-alive`).
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// How the body is framed.
    pub fn body_kind(&self) -> BodyKind {
        self.body
    }

    /// The declared body length, if the body is Content-Length framed.
    pub fn content_length(&self) -> Option<u64> {
        match self.body {
            BodyKind::Length(n) => Some(n),
            BodyKind::Empty => Some(0),
            BodyKind::Chunked => None,
        }
    }

    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub fn expects_continue(&self) -> bool {
        self.expect_continue
    }

    /// `HEAD` requests get a response head without body.
    pub fn is_head(&self) -> bool {
        self.method.get(self.head()) == b"HEAD"
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        let data = std::mem::take(&mut self.data);
        if data.capacity() <= SPARE_DATA_MAX {
            // Replaces the spare, if a handler held two requests at once.
            let _ = SPARE_DATA.try_with(|spare| spare.replace(data));
        }
    }
}

/// The largest request buffer kept for reuse: a typical browser head with
/// its index fits; a rare large one is freed.
const SPARE_DATA_MAX: usize = 4096;

thread_local! {
    // One buffer per thread: a handler usually drops its request before
    // the next is parsed, so the next request's copy reuses the allocation
    // instead of a malloc/free pair per request (about 5% of a pipelined
    // request's instructions, callgrind). Taken and given back without a
    // wait in between, so coroutines moving between threads do not matter.
    static SPARE_DATA: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Parses one request head from the start of `buf`.
///
/// `Ok(None)`: the head is not complete yet, read more. `Ok(Some((req, n)))`:
/// a head of `n` bytes; the body (if any) starts at `buf[n]`. `Err`: reject
/// the request with the error's status and close the connection.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(Request, usize)>, Error> {
    // A keep-alive connection asks once per request (after each response,
    // or each pipelined batch) with nothing buffered: without this, that
    // empty look ran the whole parser set-up: about 80 of a non-pipelined
    // request's 3,140 instructions (callgrind).
    if buf.is_empty() {
        return Ok(None);
    }
    // The verdict must depend on the bytes, never on how they arrived, so
    // limits are applied in the order the bytes cross them: first the
    // request-line zone (an invalid byte there is a 400; a line that does
    // not end there is a 414), then the rest of the head, of which nothing
    // past `max_head_bytes` is ever looked at (431).
    let window = &buf[..buf.len().min(limits.max_head_bytes.saturating_add(1))];
    let start = window.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(window.len());
    let zone = &window[..window.len().min(start.saturating_add(limits.max_request_line).saturating_add(2))];
    if zone.len() < window.len() {
        match parse_slots(zone, limits, false) {
            Ok(None) => {}
            done => return done,
        }
    }
    // Past `max_head_bytes`, a head still incomplete in the window is too
    // large. Decided inside the parser so that its result is returned as
    // it is: matched here, the `Request` was copied right after being
    // written, and that copy's 16-byte loads waited on the parser's
    // narrower stores (10% of the request loop's samples, perf).
    parse_slots(window, limits, buf.len() > limits.max_head_bytes)
}

/// What an incomplete head means: read more, or, with more than
/// `max_head_bytes` buffered (`over`), 431.
fn incomplete(over: bool) -> Result<Option<(Request, usize)>, Error> {
    if over { Err(Error::HeadTooLarge) } else { Ok(None) }
}

/// httparse over `input`, with header slots on the stack (or, past
/// those, on the heap: see [`parse_with`]).
fn parse_slots(input: &[u8], limits: &Limits, over: bool) -> Result<Option<(Request, usize)>, Error> {
    // Header slots live on the coroutine stack, whose touched pages stay
    // resident for the connection's life: a few, not all of them.
    let mut inline = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; INLINE_HEADERS];
    parse_with(input, limits, over, &mut inline[..header_slots(limits).min(INLINE_HEADERS)])
}

/// How many header fields a request may have: `max_headers`, within the
/// parser's hard cap.
fn header_slots(limits: &Limits) -> usize {
    (limits.max_headers as usize).min(MAX_HEADERS_CAP)
}

/// Header slots the parser keeps on the stack (1 KiB).
const INLINE_HEADERS: usize = 32;

/// [`parse_with`] again with all [`header_slots`] on the heap.
#[cold]
#[inline(never)]
fn parse_with_heap(input: &[u8], limits: &Limits, over: bool) -> Result<Option<(Request, usize)>, Error> {
    let mut heap = Vec::with_capacity(header_slots(limits));
    heap.resize_with(header_slots(limits), MaybeUninit::uninit);
    parse_with(input, limits, over, &mut heap)
}

/// Parses with `slots` for the header fields; with more fields than slots,
/// again with all `max_headers` slots, and 431 past those. An incomplete
/// head is 431 when `over` (see [`incomplete`]).
///
/// The retry and `over` are decided in here so that this result travels up
/// to the decoder as it is. When [`parse_slots`] had an error type of its
/// own to translate, the `Request` was copied out of one `Result` into
/// another right after being written, and that copy's 16-byte loads waited
/// on the narrower stores that had just built it (a third of
/// `parse_slots`'s samples, `perf`); [`parse`] had the same copy.
fn parse_with<'b>(
    buf: &'b [u8],
    limits: &Limits,
    over: bool,
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<(Request, usize)>, Error> {
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut req, buf, slots) {
        Ok(httparse::Status::Complete(n)) => {
            // A head no longer than the line limit cannot hold a line over it.
            if n > limits.max_request_line {
                check_request_line_len(buf, limits.max_request_line)?;
            }
            n
        }
        Ok(httparse::Status::Partial) => {
            check_request_line_len(buf, limits.max_request_line)?;
            return incomplete(over);
        }
        Err(httparse::Error::TooManyHeaders) => {
            check_request_line_len(buf, limits.max_request_line)?;
            return if slots.len() < header_slots(limits) {
                parse_with_heap(buf, limits, over)
            } else {
                Err(Error::HeadTooLarge)
            };
        }
        Err(httparse::Error::Version) => {
            // httparse fails on the first wrong byte; whether that is a
            // 505 or a 400 is only known once the line is complete.
            return match version_error(buf) {
                Some(e) => Err(e),
                None => {
                    check_request_line_len(buf, limits.max_request_line)?;
                    incomplete(over)
                }
            };
        }
        Err(httparse::Error::HeaderName) => return Err(Error::BadRequest("invalid header name")),
        Err(httparse::Error::HeaderValue) => return Err(Error::BadRequest("invalid header value")),
        Err(httparse::Error::NewLine) => return Err(Error::BadRequest("invalid line ending")),
        Err(_) => return Err(Error::BadRequest("invalid request line")),
    };
    // Spans are `u32` offsets, and `Request::text` relies on them being
    // exact: a head past 4 GiB (only possible with limits built by hand,
    // the command line caps them at 1 MiB) is refused, never wrapped.
    if len > limits.max_head_bytes || u32::try_from(len).is_err() {
        return Err(Error::HeadTooLarge);
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Error::BadRequest("invalid request line"));
    };
    check_target(method, target)?;

    let framing = Framing::of(req.headers, minor)?;
    let body = framing.body_kind(minor)?;
    if let BodyKind::Length(n) = body
        && n > limits.max_body_bytes
    {
        return Err(Error::PayloadTooLarge);
    }

    let base = &buf[..len];
    let mut data = SPARE_DATA.try_with(std::cell::Cell::take).unwrap_or_default();
    data.clear();
    data.reserve(len + req.headers.len() * FIELD_BYTES);
    data.extend_from_slice(base);
    // Values as httparse gives them, already without surrounding
    // whitespace (see `Framing::of`).
    for h in req.headers.iter() {
        data.extend_from_slice(&Span::of(base, h.name.as_bytes()).to_bytes());
        data.extend_from_slice(&Span::of(base, h.value).to_bytes());
    }
    let request = Request {
        data,
        // `len` fits a u32, checked above.
        head_len: len as u32,
        method: Span::of(base, method.as_bytes()),
        target: Span::of(base, target.as_bytes()),
        minor,
        keep_alive: framing.keep_alive(minor),
        expect_continue: minor >= 1 && framing.expect_continue,
        body,
    };
    Ok(Some((request, len)))
}

/// `target` up to its query or fragment. (Bytes, not a char pattern: it
/// runs on every request of most handlers.)
fn before_query(target: &str) -> &str {
    match target.bytes().position(|b| b == b'?' || b == b'#') {
        Some(i) => &target[..i],
        None => target,
    }
}

/// 414 as soon as `max` bytes of request line have arrived without its end,
/// so a client cannot make us buffer a huge line before we notice.
fn check_request_line_len(buf: &[u8], max: usize) -> Result<(), Error> {
    // RFC 9112 §2.2: a server SHOULD ignore empty lines before the request
    // line; httparse skips them too.
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    let line = &buf[start..];
    // Saturating: `Limits` built by hand may hold any `usize`.
    let window = &line[..line.len().min(max.saturating_add(2))];
    match window.iter().position(|&b| b == b'\n') {
        Some(lf) => {
            let len = if lf > 0 && window[lf - 1] == b'\r' { lf - 1 } else { lf };
            if len > max { Err(Error::UriTooLong) } else { Ok(()) }
        }
        None if window.len() > max.saturating_add(1) => Err(Error::UriTooLong),
        None => Ok(()),
    }
}

/// httparse only knows HTTP/1.0 and 1.1. A well-formed `HTTP/x.y` with
/// another version is refused with 505 (RFC 9110 §15.6.6); anything else in
/// the version position is a syntax error. `None` until the request line is
/// complete.
fn version_error(buf: &[u8]) -> Option<Error> {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    let line = &buf[start..];
    let line = &line[..line.iter().position(|&b| b == b'\n')?];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or(line);
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() && !(*major == b'1' && *minor <= b'1') =>
        {
            Some(Error::VersionNotSupported)
        }
        _ => Some(Error::BadRequest("invalid HTTP version")),
    }
}

/// RFC 9112 §3.2: origin-form for all methods, absolute-form for all
/// (servers MUST accept it), authority-form only for CONNECT, asterisk-form
/// only for OPTIONS.
///
/// A well-formed CONNECT is 501 (RFC 9110 §9.1, a method the server does
/// not implement): this server does not tunnel, and a handler's 2xx to it
/// would tell the client the connection had become a tunnel (§9.3.6)
/// while we went on parsing HTTP from it.
fn check_target(method: &str, target: &str) -> Result<(), Error> {
    if method == "CONNECT" {
        // authority-form = uri-host ":" port
        let authority = target.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
        });
        return if authority && !target.contains('/') {
            Err(Error::NotImplemented("CONNECT is not supported"))
        } else {
            Err(Error::BadRequest("invalid request target"))
        };
    }
    let ok = if target.starts_with('/') {
        true
    } else if target == "*" {
        method == "OPTIONS"
    } else {
        match target.split_once("://") {
            Some((scheme, rest)) => {
                !scheme.is_empty()
                    && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                    && !rest.is_empty()
            }
            None => false,
        }
    };
    if ok { Ok(()) } else { Err(Error::BadRequest("invalid request target")) }
}

/// The header fields [`Framing::add`] reads (Host is checked in
/// [`Framing::of`] itself).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    ContentLength,
    TransferEncoding,
    Connection,
    Expect,
}

/// What the framing-related header fields say, gathered in one pass.
#[derive(Default)]
struct Framing {
    content_length: Option<u64>,
    transfer_encoding: bool,
    /// Codings in order across all Transfer-Encoding lines.
    chunked_count: u32,
    last_is_chunked: bool,
    unknown_coding: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

impl Framing {
    /// httparse gives each value without the optional whitespace around
    /// it (RFC 9112 §5.1), so values are used as they come; the test
    /// `field_values_come_without_surrounding_whitespace` holds httparse
    /// to that (trimming them again cost 47 instructions per request).
    ///
    /// Inlined into the parser: out of line, the result was built on the
    /// stack with narrow stores and returned by 16-byte copies, whose loads
    /// waited on those stores (half of this function's samples, perf).
    #[inline(always)]
    fn of(headers: &[httparse::Header<'_>], minor: u8) -> Result<Framing, Error> {
        let mut f = Framing::default();
        // A local, not a field: `f` lives in memory (`add` takes it by
        // reference), and it is zeroed by overlapping stores, so an
        // increment of a field read back across two of them and waited
        // for both (an eighth of the parser's samples, perf).
        let mut hosts = 0u32;
        for h in headers {
            let name = h.name.as_bytes();
            // Only five names matter here. Their lengths and first letters
            // rule out every other header without a comparison, and pick
            // the one name to compare.
            let field = match (name.len(), name.first().map_or(0, |b| b | 0x20)) {
                (4, b'h') if eq_lower(name, b"host") => {
                    // The one field of nearly every request: checked here,
                    // the other four out of line.
                    hosts += 1;
                    if !crate::proto::all_in(&HOST_BYTES, h.value) {
                        return Err(Error::BadRequest("invalid Host"));
                    }
                    continue;
                }
                (6, b'e') => Field::Expect,
                (10, b'c') => Field::Connection,
                (14, b'c') => Field::ContentLength,
                (17, b't') => Field::TransferEncoding,
                _ => continue,
            };
            f.add(field, name, h.value, minor)?;
        }
        // RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host and for
        // any request with more than one.
        if hosts > 1 || (minor >= 1 && hosts == 0) {
            return Err(Error::BadRequest("missing or repeated Host"));
        }
        Ok(f)
    }

    /// The framing fields other than Host, `field` being the one `name`
    /// may be by its length and first letter. Out of line, the name's
    /// comparison included: their loops (list splitting, digit checks)
    /// would otherwise make every request pay their set-up in
    /// [`Framing::of`] (about 80 instructions, callgrind), and the
    /// comparisons' vector constants were loaded on every call (12).
    #[inline(never)]
    fn add(&mut self, field: Field, name: &[u8], value: &[u8], minor: u8) -> Result<(), Error> {
        let expected: &[u8] = match field {
            Field::Expect => b"expect",
            Field::Connection => b"connection",
            Field::ContentLength => b"content-length",
            Field::TransferEncoding => b"transfer-encoding",
        };
        if !eq_lower(name, expected) {
            return Ok(());
        }
        let f = self;
        match field {
            Field::ContentLength => {
                // RFC 9110 §8.6: a list of identical values may be accepted
                // as one; differing values are unrecoverable framing errors
                // (RFC 9112 §6.3 rule 5), the classic smuggling vector.
                for item in value.split(|&b| b == b',') {
                    let n = parse_content_length(trim_ows(item))?;
                    match f.content_length {
                        Some(prev) if prev != n => return Err(Error::BadRequest("conflicting Content-Length")),
                        _ => f.content_length = Some(n),
                    }
                }
            }
            Field::TransferEncoding => {
                f.transfer_encoding = true;
                for coding in value.split(|&b| b == b',').map(trim_ows) {
                    if coding.is_empty() {
                        continue; // RFC 9110 §5.6.1: empty list elements are ignored
                    }
                    // A coding may carry parameters; only its name matters,
                    // except that chunked defines none, and RFC 9112 §7.1
                    // says to treat any as an error: a front end that
                    // rejects `chunked;x` and one that ignores the `;x`
                    // would frame the body differently.
                    let mut parts = coding.splitn(2, |&b| b == b';');
                    let coding_name = trim_ows(parts.next().unwrap_or(coding));
                    f.last_is_chunked = eq_lower(coding_name, b"chunked");
                    if f.last_is_chunked && parts.next().is_some() {
                        return Err(Error::BadRequest("parameters on chunked"));
                    }
                    if f.last_is_chunked {
                        f.chunked_count += 1;
                    } else {
                        f.unknown_coding = true;
                    }
                }
            }
            Field::Connection => {
                // Nearly every Connection field is one of these two alone
                // (every request of HTTP/1.0 keep-alive clients and of
                // clients that close): compared whole before the list is
                // split.
                if eq_lower(value, b"close") {
                    f.close = true;
                } else if eq_lower(value, b"keep-alive") {
                    f.keep_alive = true;
                } else {
                    for token in value.split(|&b| b == b',').map(trim_ows) {
                        f.close |= eq_lower(token, b"close");
                        f.keep_alive |= eq_lower(token, b"keep-alive");
                    }
                }
            }
            Field::Expect => {
                // RFC 9110 §10.1.1: 100-continue is the only expectation;
                // others get 417. HTTP/1.0 ignores expectations entirely.
                if eq_lower(value, b"100-continue") {
                    f.expect_continue = true;
                } else if minor >= 1 {
                    return Err(Error::ExpectationFailed);
                }
            }
        }
        Ok(())
    }

    fn body_kind(&self, minor: u8) -> Result<BodyKind, Error> {
        if !self.transfer_encoding {
            return Ok(self.content_length.map_or(BodyKind::Empty, BodyKind::Length));
        }
        // RFC 9112 §6.1: a server that receives Transfer-Encoding in an
        // HTTP/1.0 message MUST treat the framing as faulty: refuse it.
        if minor == 0 {
            return Err(Error::BadRequest("Transfer-Encoding in HTTP/1.0"));
        }
        if self.content_length.is_some() {
            // RFC 9112 §6.3 rule 3: CL with TE "ought to be handled as an
            // error" — a request smuggling attempt. We reject outright.
            return Err(Error::BadRequest("both Content-Length and Transfer-Encoding"));
        }
        // RFC 9112 §6.3 rule 4: if chunked is not the final coding of a
        // request, the length cannot be determined: 400 and close.
        if !self.last_is_chunked {
            return Err(Error::BadRequest("Transfer-Encoding does not end in chunked"));
        }
        // RFC 9112 §7: chunked must not be applied more than once.
        if self.chunked_count > 1 {
            return Err(Error::BadRequest("chunked applied more than once"));
        }
        // RFC 9112 §6.1: a coding we do not understand gets 501.
        if self.unknown_coding {
            return Err(Error::NotImplemented("unsupported transfer coding"));
        }
        Ok(BodyKind::Chunked)
    }

    fn keep_alive(&self, minor: u8) -> bool {
        // RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only
        // with "keep-alive".
        !self.close && (minor >= 1 || self.keep_alive)
    }
}

/// `bytes.eq_ignore_ascii_case(lower)` for `lower` made of lowercase
/// letters, digits and `-`, on bytes httparse accepted in a field name or
/// value, a word at a time: OR-ing 0x20 lowercases a letter, and maps onto
/// a pattern byte only that byte and its uppercase form, or, for a digit or
/// `-`, a control character (0x10-0x19, CR), which httparse refuses in
/// names and values. (`eq_ignore_ascii_case` went byte by byte, both sides
/// lowercased: `Connection: close` cost about 300 instructions, callgrind.)
/// The tail is one more word, overlapping the last: `Host`, on every
/// request, is one 4-byte comparison.
#[inline(always)]
fn eq_lower(bytes: &[u8], lower: &[u8]) -> bool {
    debug_assert!(lower.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
    let n = bytes.len();
    if n != lower.len() {
        return false;
    }
    let diff = match n {
        0..4 => bytes.iter().zip(lower).fold(0, |d, (&g, &w)| d | u64::from((g | 0x20) ^ w)),
        4..8 => {
            let at = |i| (word::<4>(bytes, i) | 0x2020_2020) ^ word::<4>(lower, i);
            at(0) | at(n - 4)
        }
        _ => {
            let at = |i| (word::<8>(bytes, i) | 0x2020_2020_2020_2020) ^ word::<8>(lower, i);
            (0..n - 8).step_by(8).fold(at(n - 8), |d, i| d | at(i))
        }
    };
    let equal = diff == 0;
    debug_assert!(
        equal == bytes.eq_ignore_ascii_case(lower) || bytes.iter().any(|&b| b < 0x20 && b != b'\t'),
        "eq_lower({bytes:?}, {lower:?})"
    );
    equal
}

/// The `N` bytes of `b` from `at`, little-endian, widened to a `u64`.
#[inline(always)]
fn word<const N: usize>(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w[..N].copy_from_slice(&b[at..at + N]);
    u64::from_le_bytes(w)
}

/// `Content-Length = 1*DIGIT`: no sign, no spaces inside, no hex, and it
/// must fit in u64.
fn parse_content_length(value: &[u8]) -> Result<u64, Error> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(Error::BadRequest("invalid Content-Length"));
    }
    value
        .iter()
        .try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
        .ok_or(Error::BadRequest("invalid Content-Length"))
}

/// Bytes allowed in a Host value: uri-host (reg-name, IP literal) and port
/// (RFC 3986 §3.2.2). A table, since every request's Host is checked byte
/// by byte.
static HOST_BYTES: [bool; 256] = byte_table!(b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~'
    | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'%' | b'[' | b']');

/// Strips optional whitespace (SP / HTAB) from both ends.
pub(crate) fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(v.len());
    let end = v.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::eq_lower;

    /// The patterns `eq_lower` is called with.
    const PATTERNS: [&[u8]; 9] = [
        b"host",
        b"expect",
        b"connection",
        b"content-length",
        b"transfer-encoding",
        b"close",
        b"keep-alive",
        b"chunked",
        b"100-continue",
    ];

    /// A byte httparse accepts in a field value (its names take fewer):
    /// HTAB, SP, visible ASCII and obs-text.
    fn value_byte() -> impl Strategy<Value = u8> {
        prop_oneof![Just(b'\t'), 0x20u8..=0x7e, 0x80u8..=0xff]
    }

    proptest! {
        /// On what httparse accepts, `eq_lower` is `eq_ignore_ascii_case`:
        /// for arbitrary bytes, and for each pattern with bytes flipped in
        /// bit 0x20 or replaced, the near misses a word compare could get
        /// wrong.
        #[test]
        fn eq_lower_is_eq_ignore_ascii_case_on_field_bytes(
            pattern in 0..PATTERNS.len(),
            edits in proptest::collection::vec((0usize..32, prop_oneof![Just(None), value_byte().prop_map(Some)]), 0..4),
            noise in proptest::collection::vec(value_byte(), 0..20),
        ) {
            let lower = PATTERNS[pattern];
            let mut bytes = lower.to_vec();
            for (at, with) in edits {
                let at = at % bytes.len();
                bytes[at] = with.unwrap_or(bytes[at] ^ 0x20);
                // A flip can make a control byte, which httparse refuses.
                if bytes[at] < 0x20 && bytes[at] != b'\t' {
                    bytes[at] ^= 0x20;
                }
            }
            prop_assert_eq!(eq_lower(&bytes, lower), bytes.eq_ignore_ascii_case(lower), "{:?}", bytes);
            prop_assert_eq!(eq_lower(&noise, lower), noise.eq_ignore_ascii_case(lower));
        }
    }
}
