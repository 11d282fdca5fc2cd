//! The checks behind the fuzz targets in `fuzz/`, shared with the test that
//! replays the fuzz corpus on a stable toolchain. Each takes arbitrary bytes
//! and panics only if an invariant breaks.

use std::sync::OnceLock;

use crate::config::Limits;
use crate::proto::decode::{BodyDecoder, BodyLimits, Chunk};
use crate::proto::head::{self, BodyKind};
use crate::proto::proxy::{self, MAX_HEADER};
use crate::proto::stream::decode_pieces;

/// The head parser never panics, and what it accepts obeys the limits.
pub fn head(data: &[u8]) {
    static LIMITS: OnceLock<Limits> = OnceLock::new();
    let limits = LIMITS.get_or_init(|| Limits {
        max_request_line: 256,
        max_head_bytes: 1024,
        max_headers: 16,
        ..Limits::default()
    });
    if let Ok(Some((req, n))) = head::parse(data, limits) {
        assert!(n <= data.len() && n <= limits.max_head_bytes);
        assert!(req.headers().count() <= 16);
        let _ = (req.method(), req.path(), req.query(), req.header("host"), req.keep_alive());
    }
}

/// The body decoder never panics, never yields more than it consumed or
/// than the limit allows, and NeedMore always consumes everything.
pub fn body(data: &[u8]) {
    let Some((&mode, input)) = data.split_first() else { return };
    let kind = if mode & 1 == 0 { BodyKind::Chunked } else { BodyKind::Length(u64::from(mode) * 3) };
    let limits = BodyLimits { max_body_bytes: 4096, max_chunk_ext_bytes: 16, max_trailer_bytes: 64 };
    let mut decoder = BodyDecoder::new(kind, limits);
    // Pieces sized by the mode byte, as a socket would deliver them.
    let step = usize::from(mode >> 1).max(1);
    let mut buf: Vec<u8> = Vec::new();
    let mut total = 0u64;
    for piece in input.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&buf) {
                Ok((n, Chunk::Data(r))) => {
                    assert!(r.end == n && r.start <= r.end && n <= buf.len());
                    total += r.len() as u64;
                    assert!(total <= limits.max_body_bytes);
                    buf.drain(..n);
                }
                Ok((n, Chunk::NeedMore)) => {
                    assert_eq!(n, buf.len(), "NeedMore consumes everything");
                    buf.clear();
                    break;
                }
                Ok((n, Chunk::End)) => {
                    assert!(decoder.is_done() && n <= buf.len());
                    return;
                }
                Err(_) => return,
            }
        }
    }
}

/// Differential: a request stream decodes to the same events whether it
/// arrives whole or in pieces of the size the first byte chooses.
pub fn stream(data: &[u8]) {
    let Some((&cuts, input)) = data.split_first() else { return };
    static LIMITS: OnceLock<Limits> = OnceLock::new();
    let limits = LIMITS.get_or_init(|| Limits {
        max_request_line: 128,
        max_head_bytes: 512,
        max_headers: 8,
        max_body_bytes: 1024,
        ..Limits::default()
    });
    let whole = decode_pieces([input], limits);
    let pieces = input.chunks(usize::from(cuts).max(1));
    assert_eq!(decode_pieces(pieces, limits), whole);
}

/// The PROXY header parser never panics; a header it accepts lies within
/// the input and [`MAX_HEADER`] and is self-contained (its own bytes alone
/// give the same verdict); "need more" is only said below [`MAX_HEADER`]
/// bytes; and the verdict is the same whether the input arrives whole or in
/// pieces of the size the first byte chooses, each piece parsed again from
/// the start as a connection does.
pub fn proxy(data: &[u8]) {
    let Some((&cuts, input)) = data.split_first() else { return };
    let whole = proxy::parse(input);
    match whole {
        Ok(Some((_, n))) => {
            assert!(n <= input.len() && n <= MAX_HEADER, "consumed {n} of {}", input.len());
            assert_eq!(proxy::parse(&input[..n]), whole, "the header is its first {n} bytes");
        }
        Ok(None) => assert!(input.len() < MAX_HEADER, "undecided after {} bytes", input.len()),
        Err(_) => {}
    }
    let mut pieces = Ok(None);
    let mut received = 0;
    for piece in input.chunks(usize::from(cuts).max(1)) {
        received += piece.len();
        pieces = proxy::parse(&input[..received]);
        if pieces != Ok(None) {
            break;
        }
    }
    assert_eq!(pieces, whole, "pieces of {cuts} bytes");
}
