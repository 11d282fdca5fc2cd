//! Request body decoding (RFC 9112 §6 and §7): Content-Length and chunked,
//! as a state machine over borrowed input. It never copies body data: it
//! says which bytes of the input are data and how many it consumed.

use std::ops::Range;

use crate::proto::Error;
use crate::proto::head::BodyKind;

/// What one call to [`BodyDecoder::decode`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Body data at this range of the input; consumed ends at `range.end`.
    Data(Range<usize>),
    /// All input consumed; the body continues in bytes not yet received.
    NeedMore,
    /// The body is complete; input after the consumed bytes belongs to the
    /// next request.
    End,
}

/// Bounds the decoder enforces while decoding.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    pub max_body_bytes: u64,
    pub max_chunk_ext_bytes: usize,
    pub max_trailer_bytes: usize,
}

impl From<&crate::config::Limits> for BodyLimits {
    fn from(l: &crate::config::Limits) -> Self {
        BodyLimits {
            max_body_bytes: l.max_body_bytes,
            max_chunk_ext_bytes: l.max_chunk_ext_bytes,
            max_trailer_bytes: l.max_trailer_bytes,
        }
    }
}

/// Where the chunked decoder is. One variant per grammar position of
/// RFC 9112 §7.1:
/// `chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF`,
/// `last-chunk = 1*"0" [ chunk-ext ] CRLF`, then `trailer-section CRLF`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkedState {
    /// Reading hex digits of the size; `digits` so far.
    Size {
        digits: u32,
    },
    /// Whitespace after the size: only legal before `;` (BWS).
    SizeBws,
    /// Inside the chunk extensions after a `;`, up to CR.
    Ext(Ext),
    /// Saw CR after the size line; LF must follow.
    SizeLf,
    /// Inside chunk data, `remaining` bytes to go.
    Data {
        remaining: u64,
    },
    /// After chunk data: CR must follow.
    DataCr,
    /// After chunk data and CR: LF must follow.
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer field's name, up to its colon.
    TrailerName,
    /// Inside a trailer field's value.
    TrailerLine,
    /// Saw CR ending a trailer line.
    TrailerLf,
    /// Saw CR of the final empty line.
    EndLf,
    Done,
}

/// Decodes one request body.
#[derive(Clone, Debug)]
pub struct BodyDecoder {
    kind: Kind,
    limits: BodyLimits,
}

#[derive(Clone, Debug)]
enum Kind {
    Length { remaining: u64 },
    Chunked { state: ChunkedState, size: u64, ext_bytes: usize, trailer_bytes: usize, total: u64 },
}

impl BodyDecoder {
    pub fn new(kind: BodyKind, limits: BodyLimits) -> BodyDecoder {
        let kind = match kind {
            BodyKind::Empty => Kind::Length { remaining: 0 },
            BodyKind::Length(n) => Kind::Length { remaining: n },
            BodyKind::Chunked => Kind::Chunked {
                state: ChunkedState::Size { digits: 0 },
                size: 0,
                ext_bytes: 0,
                trailer_bytes: 0,
                total: 0,
            },
        };
        BodyDecoder { kind, limits }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        matches!(self.kind, Kind::Length { remaining: 0 } | Kind::Chunked { state: ChunkedState::Done, .. })
    }

    /// Body bytes still expected, when known (Content-Length bodies).
    pub fn remaining(&self) -> Option<u64> {
        match self.kind {
            Kind::Length { remaining } => Some(remaining),
            Kind::Chunked { .. } => None,
        }
    }

    /// Advances over `input`. Returns how many bytes were consumed and what
    /// was found. Call again with the unconsumed rest (plus new bytes) until
    /// it says [`Chunk::End`].
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Chunk), Error> {
        self.decode_max(input, usize::MAX)
    }

    /// As [`BodyDecoder::decode`], but yields at most `max` data bytes.
    pub fn decode_max(&mut self, input: &[u8], max: usize) -> Result<(usize, Chunk), Error> {
        match &mut self.kind {
            Kind::Length { remaining } => {
                if *remaining == 0 {
                    return Ok((0, Chunk::End));
                }
                if input.is_empty() {
                    return Ok((0, Chunk::NeedMore));
                }
                let n = input.len().min(max).min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                *remaining -= n as u64;
                Ok((n, Chunk::Data(0..n)))
            }
            Kind::Chunked { .. } => self.decode_chunked(input, max),
        }
    }

    fn decode_chunked(&mut self, input: &[u8], max: usize) -> Result<(usize, Chunk), Error> {
        let limits = self.limits;
        let Kind::Chunked { state, size, ext_bytes, trailer_bytes, total } = &mut self.kind else {
            unreachable!("decode_chunked is only called for chunked bodies")
        };
        let mut pos = 0;
        loop {
            if *state == ChunkedState::Done {
                return Ok((pos, Chunk::End));
            }
            if let ChunkedState::Data { remaining } = state {
                if pos == input.len() {
                    return Ok((pos, Chunk::NeedMore));
                }
                let n = (input.len() - pos).min(max).min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                *remaining -= n as u64;
                if *remaining == 0 {
                    *state = ChunkedState::DataCr;
                }
                return Ok((pos + n, Chunk::Data(pos..pos + n)));
            }
            let Some(&b) = input.get(pos) else {
                return Ok((pos, Chunk::NeedMore));
            };
            pos += 1;
            *state = match *state {
                ChunkedState::Size { digits } => match hex_value(b) {
                    // Leading zeros are legal but endless ones are a way to
                    // make us work without progress: 16 hex digits fit any
                    // u64, 32 leave room for padding.
                    Some(_) if digits >= MAX_SIZE_DIGITS => return Err(Error::BadRequest("chunk size too long")),
                    Some(v) => {
                        // checked arithmetic: a long run of hex digits must
                        // not wrap around into a small, attacker-chosen size.
                        *size = size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(u64::from(v)))
                            .ok_or(Error::BadRequest("chunk size overflow"))?;
                        ChunkedState::Size { digits: digits + 1 }
                    }
                    None if digits == 0 => return Err(Error::BadRequest("invalid chunk size")),
                    None => match b {
                        b'\r' => ChunkedState::SizeLf,
                        b';' => ChunkedState::Ext(Ext::NameStart),
                        b' ' | b'\t' => {
                            ext_byte(ext_bytes, limits)?;
                            ChunkedState::SizeBws
                        }
                        _ => return Err(Error::BadRequest("invalid chunk size")),
                    },
                },
                // Whitespace before `;` counts as extension bytes: it is
                // framing too, and uncounted it was a way to keep a
                // connection busy without end (one space at a time, each
                // read resetting the body timeout).
                ChunkedState::SizeBws => match b {
                    b' ' | b'\t' => {
                        ext_byte(ext_bytes, limits)?;
                        ChunkedState::SizeBws
                    }
                    b';' => ChunkedState::Ext(Ext::NameStart),
                    _ => return Err(Error::BadRequest("invalid chunk size")),
                },
                ChunkedState::Ext(at) => {
                    ext_byte(ext_bytes, limits)?;
                    match at.next(b) {
                        Some(Ext::End) => ChunkedState::SizeLf,
                        Some(next) => ChunkedState::Ext(next),
                        None => return Err(Error::BadRequest("invalid chunk extension")),
                    }
                }
                ChunkedState::SizeLf => {
                    expect(b, b'\n')?;
                    if *size == 0 {
                        ChunkedState::TrailerStart
                    } else {
                        *total = total.checked_add(*size).ok_or(Error::PayloadTooLarge)?;
                        if *total > limits.max_body_bytes {
                            return Err(Error::PayloadTooLarge);
                        }
                        let remaining = std::mem::take(size);
                        ChunkedState::Data { remaining }
                    }
                }
                ChunkedState::DataCr => {
                    expect(b, b'\r')?;
                    ChunkedState::DataLf
                }
                ChunkedState::DataLf => {
                    expect(b, b'\n')?;
                    ChunkedState::Size { digits: 0 }
                }
                // RFC 9112 §7.1.2: trailer lines are field lines, `name:
                // value` with the name a token right at the line's start
                // (no obs-fold). Checked although they are discarded: a
                // request line here ends a body that another parser, one
                // that stops at `0\r\n`, would read as a second request.
                ChunkedState::TrailerStart => match b {
                    b'\r' => ChunkedState::EndLf,
                    _ => trailer_name_byte(b, trailer_bytes, limits)?,
                },
                ChunkedState::TrailerName => match b {
                    b':' => {
                        count_trailer_byte(trailer_bytes, limits)?;
                        ChunkedState::TrailerLine
                    }
                    _ => trailer_name_byte(b, trailer_bytes, limits)?,
                },
                ChunkedState::TrailerLine => match b {
                    b'\r' => ChunkedState::TrailerLf,
                    _ => trailer_value_byte(b, trailer_bytes, limits)?,
                },
                ChunkedState::TrailerLf => {
                    expect(b, b'\n')?;
                    ChunkedState::TrailerStart
                }
                ChunkedState::EndLf => {
                    expect(b, b'\n')?;
                    ChunkedState::Done
                }
                ChunkedState::Data { .. } | ChunkedState::Done => unreachable!("handled above"),
            };
        }
    }
}

/// Where in `chunk-ext` (RFC 9112 §7.1.1) the decoder is, after a `;`:
/// `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`.
/// Extensions are discarded, but held to their grammar: a parser in front
/// that reads them differently (a quote, a stray byte) must not be able to
/// disagree with us about where the chunk size line ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ext {
    /// After `;`: whitespace, then a name.
    NameStart,
    Name,
    /// Whitespace after a name: `=` or `;` must follow.
    AfterName,
    /// After `=`: whitespace, then a token or a quoted string.
    ValueStart,
    Token,
    Quoted,
    /// After a backslash inside a quoted string.
    QuotedPair,
    /// After a quoted string's closing quote.
    AfterQuoted,
    /// Whitespace after a value: `;` must follow.
    AfterValue,
    /// The CR ending the size line.
    End,
}

impl Ext {
    fn next(self, b: u8) -> Option<Ext> {
        let token = crate::proto::TOKEN_BYTES[usize::from(b)];
        let ws = b == b' ' || b == b'\t';
        Some(match self {
            Ext::NameStart if ws => Ext::NameStart,
            Ext::NameStart if token => Ext::Name,
            Ext::Name if token => Ext::Name,
            Ext::Name | Ext::AfterName if ws => Ext::AfterName,
            Ext::Name | Ext::AfterName if b == b'=' => Ext::ValueStart,
            Ext::ValueStart if ws => Ext::ValueStart,
            Ext::ValueStart if b == b'"' => Ext::Quoted,
            Ext::ValueStart if token => Ext::Token,
            Ext::Token if token => Ext::Token,
            Ext::Quoted => match b {
                b'"' => Ext::AfterQuoted,
                b'\\' => Ext::QuotedPair,
                b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => Ext::Quoted,
                _ => return None,
            },
            Ext::QuotedPair => match b {
                b'\t' | b' '..=b'~' | 0x80..=0xff => Ext::Quoted,
                _ => return None,
            },
            Ext::Token | Ext::AfterQuoted | Ext::AfterValue if ws => Ext::AfterValue,
            Ext::Name | Ext::AfterName | Ext::Token | Ext::AfterQuoted | Ext::AfterValue if b == b';' => Ext::NameStart,
            // The line ends after a name or a value, not after whitespace
            // (BWS only comes before `;` or `=`).
            Ext::Name | Ext::Token | Ext::AfterQuoted if b == b'\r' => Ext::End,
            _ => return None,
        })
    }
}

/// Counts one byte of chunk extensions (and the whitespace before them)
/// against their bound.
fn ext_byte(ext_bytes: &mut usize, limits: BodyLimits) -> Result<(), Error> {
    *ext_bytes += 1;
    if *ext_bytes > limits.max_chunk_ext_bytes {
        return Err(Error::BadRequest("chunk extension too long"));
    }
    Ok(())
}

/// Counts one byte of the trailer section against its bound (trailer
/// fields are discarded, but bounded).
fn count_trailer_byte(trailer_bytes: &mut usize, limits: BodyLimits) -> Result<(), Error> {
    *trailer_bytes += 1;
    if *trailer_bytes > limits.max_trailer_bytes {
        return Err(Error::HeadTooLarge);
    }
    Ok(())
}

/// One byte of a trailer field's name: a token character.
fn trailer_name_byte(b: u8, trailer_bytes: &mut usize, limits: BodyLimits) -> Result<ChunkedState, Error> {
    count_trailer_byte(trailer_bytes, limits)?;
    if crate::proto::TOKEN_BYTES[usize::from(b)] {
        Ok(ChunkedState::TrailerName)
    } else {
        Err(Error::BadRequest("invalid trailer"))
    }
}

/// One byte of a trailer field's value: no control bytes but HTAB.
fn trailer_value_byte(b: u8, trailer_bytes: &mut usize, limits: BodyLimits) -> Result<ChunkedState, Error> {
    count_trailer_byte(trailer_bytes, limits)?;
    match b {
        b'\t' | b' '..=b'~' | 0x80..=0xff => Ok(ChunkedState::TrailerLine),
        _ => Err(Error::BadRequest("invalid trailer")),
    }
}

/// Chunked framing requires CRLF exactly: a bare LF or CR is how parsers
/// are made to disagree about where a chunk ends.
fn expect(got: u8, want: u8) -> Result<(), Error> {
    if got == want { Ok(()) } else { Err(Error::BadRequest("invalid chunked framing")) }
}

/// Most hex digits accepted in one chunk size.
const MAX_SIZE_DIGITS: u32 = 32;

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
