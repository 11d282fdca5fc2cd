//! HTTP/1.1 without I/O: bytes in, requests and body chunks out; responses
//! in, bytes out; and the PROXY protocol header ([`proxy`]) a load balancer
//! may send before the first request. Nothing here touches a socket, a
//! clock other than through [`date`], or the may runtime, so every function
//! can be fed arbitrary bytes by unit tests, property tests and fuzzers.

/// A `[bool; 256]` marking the bytes that match `pattern`, built at compile
/// time: the per-byte checks on every request and response are one load.
macro_rules! byte_table {
    ($($pattern:tt)+) => {{
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            table[b] = matches!(b as u8, $($pattern)+);
            b += 1;
        }
        table
    }};
}

/// Whether every byte of `bytes` is in `table`. Without an early exit, so
/// the loop has no branch per byte and unrolls: these checks run on every
/// request's Host and every response's header names, short strings where a
/// per-byte branch costs more than the few bytes it might skip.
fn all_in(table: &[bool; 256], bytes: &[u8]) -> bool {
    let hit = |b: u8| table[usize::from(b)];
    let mut quads = bytes.chunks_exact(4);
    let mut ok = true;
    for q in &mut quads {
        ok &= hit(q[0]) & hit(q[1]) & hit(q[2]) & hit(q[3]);
    }
    quads.remainder().iter().fold(ok, |ok, &b| ok & hit(b))
}

/// RFC 9110 §5.6.2 tchar, as a table: header names are checked on every
/// response, and trailer field names on every chunked request body.
static TOKEN_BYTES: [bool; 256] = byte_table!(b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'!' | b'#' | b'$' | b'%'
    | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~');

pub mod date;
pub mod decode;
pub mod encode;
#[doc(hidden)]
pub mod fuzzing;
pub mod head;
pub mod proxy;
pub mod status;
pub mod stream;

#[cfg(test)]
mod tests;

use std::fmt;

/// Why a request was rejected. Each variant maps to one response status;
/// the connection is always closed after the error response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// 400: malformed syntax or framing; the text says which rule.
    BadRequest(&'static str),
    /// 413: the body is larger than `max_body_bytes`.
    PayloadTooLarge,
    /// 414: the request line is longer than `max_request_line`.
    UriTooLong,
    /// 417: an `Expect` other than `100-continue`.
    ExpectationFailed,
    /// 431: the head exceeds `max_head_bytes` or `max_headers`.
    HeadTooLarge,
    /// 501: a transfer coding this server does not implement.
    NotImplemented(&'static str),
    /// 505: an HTTP major version other than 1.
    VersionNotSupported,
}

impl Error {
    pub fn status(self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::PayloadTooLarge => 413,
            Error::UriTooLong => 414,
            Error::ExpectationFailed => 417,
            Error::HeadTooLarge => 431,
            Error::NotImplemented(_) => 501,
            Error::VersionNotSupported => 505,
        }
    }

    /// A short human-readable explanation, sent as the error response body.
    pub fn detail(self) -> &'static str {
        match self {
            Error::BadRequest(why) | Error::NotImplemented(why) => why,
            Error::PayloadTooLarge => "request body too large",
            Error::UriTooLong => "request line too long",
            Error::ExpectationFailed => "unsupported expectation",
            Error::HeadTooLarge => "request head too large",
            Error::VersionNotSupported => "HTTP version not supported",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.detail())
    }
}

impl std::error::Error for Error {}
