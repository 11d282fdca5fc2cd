//! The body decoder on arbitrary bytes: never panics, never yields more data
//! than it consumed, and stays within its limits.
#![no_main]

use http_cluster::proto::decode::{BodyDecoder, BodyLimits, Chunk};
use http_cluster::proto::head::BodyKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else { return };
    let kind = if mode & 1 == 0 { BodyKind::Chunked } else { BodyKind::Length(u64::from(mode) * 3) };
    let limits = BodyLimits { max_body_bytes: 4096, max_chunk_ext_bytes: 16, max_trailer_bytes: 64 };
    let mut decoder = BodyDecoder::new(kind, limits);
    // Feed in pieces sized by the mode byte, as a socket would deliver them.
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
                    assert!(total <= 4096);
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
});
