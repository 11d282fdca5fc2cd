//! A whole request stream decoded without I/O, fed in arbitrary pieces:
//! heads and bodies in sequence, as a connection decodes them. Tests,
//! property tests and fuzzers use it to check that where the input is split
//! never changes what is decoded.

use crate::config::Limits;
use crate::proto::Error;
use crate::proto::decode::{BodyDecoder, BodyLimits, Chunk};
use crate::proto::head;

/// What the decoder found, with consecutive body data merged (how data is
/// split into chunks depends on how the input arrived; its bytes do not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A request head: method, target, minor version, keep-alive.
    Head {
        method: String,
        target: String,
        minor: u8,
        keep_alive: bool,
    },
    Data(Vec<u8>),
    /// The end of one request's body.
    End,
    Error(Error),
}

/// Decodes the concatenation of `pieces`, delivered one piece at a time.
/// Stops at the first error, as a connection does.
pub fn decode_pieces<'a>(pieces: impl IntoIterator<Item = &'a [u8]>, limits: &Limits) -> Vec<Event> {
    let mut events = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut body: Option<BodyDecoder> = None;
    for piece in pieces {
        buf.extend_from_slice(piece);
        if !step(&mut buf, &mut body, &mut events, limits) {
            break;
        }
    }
    events
}

/// Decodes as much of `buf` as possible; false after an error.
fn step(buf: &mut Vec<u8>, body: &mut Option<BodyDecoder>, events: &mut Vec<Event>, limits: &Limits) -> bool {
    loop {
        match body {
            None => match head::parse(buf, limits) {
                Ok(Some((req, n))) => {
                    buf.drain(..n);
                    events.push(Event::Head {
                        method: req.method().to_string(),
                        target: req.target().to_string(),
                        minor: req.version_minor(),
                        keep_alive: req.keep_alive(),
                    });
                    // An empty body still goes through the decoder: it says
                    // End at once.
                    *body = Some(BodyDecoder::new(req.body_kind(), BodyLimits::from(limits)));
                }
                Ok(None) => return true,
                Err(e) => {
                    events.push(Event::Error(e));
                    return false;
                }
            },
            Some(decoder) => match decoder.decode(buf) {
                Ok((n, Chunk::Data(r))) => {
                    let data = buf[r].to_vec();
                    buf.drain(..n);
                    match events.last_mut() {
                        Some(Event::Data(prev)) => prev.extend_from_slice(&data),
                        _ => events.push(Event::Data(data)),
                    }
                }
                Ok((n, Chunk::NeedMore)) => {
                    buf.drain(..n);
                    return true;
                }
                Ok((n, Chunk::End)) => {
                    buf.drain(..n);
                    events.push(Event::End);
                    *body = None;
                }
                Err(e) => {
                    events.push(Event::Error(e));
                    return false;
                }
            },
        }
    }
}
