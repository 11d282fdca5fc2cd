//! The HAProxy PROXY protocol, versions 1 and 2, without I/O: the header a
//! load balancer sends before the first byte of a relayed connection to say
//! whom the connection really comes from.
//!
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>,
//! cited below as "spec §n".
//!
//! [`parse`] looks at the start of a connection's input and answers
//! "complete", "need more" or "invalid", like [`super::head::parse`]. It keeps
//! no state between calls: a header is at most [`MAX_HEADER`] bytes, so
//! parsing the buffer again after every read costs little, and a parser
//! without state cannot give a different verdict for the same bytes split
//! differently. Every check runs as soon as the bytes it needs have arrived,
//! in wire order, so garbage is refused at once (spec §2.1: "abort the
//! connection as soon as possible") and the verdict on a prefix is never
//! contradicted by the rest of the input.
//!
//! The parser never guesses whether a header is present (spec §2: the
//! receiver "MUST not try to guess"): the caller decides by configuration
//! that every connection starts with one, and anything else is
//! [`ProxyError::NotProxy`]. Whether the peer may send the header at all
//! (only trusted proxies should) is the caller's policy, not the parser's.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The most bytes a caller must buffer before [`parse`] decides: 4 KiB.
///
/// A v1 line is at most 107 bytes (spec §2.1). A v2 header is 16 bytes
/// plus a 16-bit length, so up to 64 KiB on the wire, but its address block
/// is at most 216 bytes (AF_UNIX) and the spec designs the header to fit in
/// one 536-byte segment; only TLVs make it longer. The largest registered
/// TLVs a proxy sends (authority/SNI up to 255 bytes, unique ID up to 128,
/// SSL with version, cipher, algorithms and client CN: a few hundred) add up
/// to well under 1 KiB. 4 KiB leaves room for cloud load balancers' own TLVs
/// while bounding what an unauthenticated peer can make a connection buffer
/// before it is rejected; it is also the connection's initial read buffer
/// (`io.rs`), so a header alone never makes that buffer grow. Longer is
/// [`ProxyError::TooLong`].
pub const MAX_HEADER: usize = 4096;

/// Longest v1 line including CRLF: `PROXY UNKNOWN` with two full IPv6
/// addresses and ports (spec §2.1). "If the CRLF sequence is not found in
/// the first 107 characters, the receiver should declare the line invalid."
const V1_MAX: usize = 107;

/// What starts every v1 header: `PROXY` and exactly one space.
const V1_PREFIX: &[u8] = b"PROXY ";

/// The 12-byte v2 signature (spec §2.2); it contains a NUL byte and cannot
/// begin any text protocol.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Signature, version/command, family/transport and 16-bit length.
const V2_FIXED: usize = 16;

/// Whom the connection is from, as the proxy reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proxied {
    /// v1 `TCP4`/`TCP6`, or v2 `PROXY` over TCP (AF_INET/AF_INET6, STREAM):
    /// the original client (`source`) and the address it connected to.
    Addresses { source: SocketAddr, destination: SocketAddr },
    /// v1 `UNKNOWN`, v2 `LOCAL` (the proxy's own health checks), or v2
    /// `PROXY` with an unspecified family or transport or AF_UNIX: the
    /// header carries no usable address, so the socket's own peer address
    /// stands (spec §2.1 and §2.2 both say to use the real endpoints).
    Local,
}

/// Why the start of a connection is not an acceptable PROXY header. The
/// caller closes the connection in every case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyError {
    /// The bytes cannot be the start of a v1 or v2 header (e.g. a plain
    /// HTTP request): the peer does not speak the PROXY protocol.
    NotProxy,
    /// A v1 line (`PROXY ...\r\n`) that breaks the rule named.
    BadV1(&'static str),
    /// A v2 binary header that breaks the rule named.
    BadV2(&'static str),
    /// A v1 line without CRLF in its first 107 bytes, or a v2 header whose
    /// length field makes it longer than [`MAX_HEADER`].
    TooLong,
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::NotProxy => f.write_str("connection does not start with a PROXY protocol header"),
            ProxyError::BadV1(why) => write!(f, "invalid PROXY v1 header: {why}"),
            ProxyError::BadV2(why) => write!(f, "invalid PROXY v2 header: {why}"),
            ProxyError::TooLong => {
                write!(f, "PROXY header too long (v1 over {V1_MAX} bytes or v2 over {MAX_HEADER} bytes)")
            }
        }
    }
}

impl std::error::Error for ProxyError {}

/// Parses the PROXY header (v1 or v2, told apart by the first byte) at the
/// start of `buf`.
///
/// `Ok(None)`: every byte so far may start a valid header; read more (the
/// caller bounds the wait with a timeout, and never needs to buffer more
/// than [`MAX_HEADER`] bytes). `Ok(Some((header, n)))`: the header is the
/// first `n` bytes; the connection's own data starts at `buf[n]`. `Err`:
/// close the connection.
pub fn parse(buf: &[u8]) -> Result<Option<(Proxied, usize)>, ProxyError> {
    match detect(buf)? {
        Detected::NeedMore => Ok(None),
        Detected::V1 => parse_v1(buf),
        Detected::V2 => parse_v2(buf),
    }
}

/// Which version the first bytes announce.
enum Detected {
    /// The bytes so far are a prefix of one of the two signatures.
    NeedMore,
    /// `PROXY ` has arrived whole.
    V1,
    /// The 12-byte v2 signature has arrived whole.
    V2,
}

/// Tells the versions apart by signature (they differ in the first byte:
/// `P` or CR) and refuses anything else on its first wrong byte: a plain
/// `GET` fails on the `G`.
fn detect(buf: &[u8]) -> Result<Detected, ProxyError> {
    if buf.is_empty() {
        return Ok(Detected::NeedMore);
    }
    for (signature, version) in [(V1_PREFIX, Detected::V1), (V2_SIGNATURE, Detected::V2)] {
        match compare_prefix(buf, signature) {
            Prefix::Whole => return Ok(version),
            Prefix::Partial => return Ok(Detected::NeedMore),
            Prefix::Differs => {}
        }
    }
    Err(ProxyError::NotProxy)
}

/// How the start of the input relates to an expected constant.
enum Prefix {
    /// The input starts with the whole constant.
    Whole,
    /// The input is shorter than the constant and agrees with it so far.
    Partial,
    /// Some byte differs.
    Differs,
}

fn compare_prefix(input: &[u8], expected: &[u8]) -> Prefix {
    let n = input.len().min(expected.len());
    if input.iter().zip(expected).any(|(a, b)| a != b) {
        Prefix::Differs
    } else if n == expected.len() {
        Prefix::Whole
    } else {
        Prefix::Partial
    }
}

// ---------------------------------------------------------------------------
// Version 1: one line of text (spec §2.1).
// ---------------------------------------------------------------------------

/// The protocol word after `PROXY `.
#[derive(Clone, Copy)]
enum V1Protocol {
    Tcp4,
    Tcp6,
    Unknown,
}

/// The protocol words with the separator that must follow them. `UNKNOWN`
/// may be followed by anything up to CRLF, so its separator is checked apart.
const V1_PROTOCOLS: [(&[u8], V1Protocol); 3] =
    [(b"TCP4 ", V1Protocol::Tcp4), (b"TCP6 ", V1Protocol::Tcp6), (b"UNKNOWN", V1Protocol::Unknown)];

/// `buf` starts with `PROXY `.
fn parse_v1(buf: &[u8]) -> Result<Option<(Proxied, usize)>, ProxyError> {
    // Nothing past the longest legal line is ever looked at, so every call
    // with at least 107 bytes sees the same window and gives the same verdict.
    let window = buf.get(..V1_MAX).unwrap_or(buf);
    // The first LF ends the line. A bare LF is an error below rather than
    // something UNKNOWN may "ignore": the spec forbids a lone CR or LF as a
    // line end, and skipping to a later CRLF would swallow the start of the
    // connection's own data.
    let lf = window.iter().position(|&b| b == b'\n');
    let line = match lf {
        Some(i) => window.get(..i).unwrap_or_default(),
        None => window,
    };
    let rest = line.get(V1_PREFIX.len()..).unwrap_or_default();

    // Checks that hold for every prefix of a valid line, run on what has
    // arrived, complete or not.
    let protocol = v1_protocol(rest)?;
    if let Some(V1Protocol::Tcp4 | V1Protocol::Tcp6) = protocol {
        check_v1_chars(rest.get(5..).unwrap_or_default())?;
    }

    let Some(lf) = lf else {
        return if buf.len() >= V1_MAX { Err(ProxyError::TooLong) } else { Ok(None) };
    };
    let Some(rest) = rest.strip_suffix(b"\r") else {
        return Err(ProxyError::BadV1("line does not end with CRLF"));
    };
    let fields = rest.get(5..).unwrap_or_default();
    let header = match protocol {
        // "The receiver must ignore anything presented before the CRLF."
        Some(V1Protocol::Unknown) => Proxied::Local,
        Some(V1Protocol::Tcp4) => {
            let [src, dst, sport, dport] = v1_fields(fields)?;
            let (src, dst, sport, dport) = (v1_ipv4(src)?, v1_ipv4(dst)?, v1_port(sport)?, v1_port(dport)?);
            Proxied::Addresses {
                source: SocketAddrV4::new(src, sport).into(),
                destination: SocketAddrV4::new(dst, dport).into(),
            }
        }
        Some(V1Protocol::Tcp6) => {
            let [src, dst, sport, dport] = v1_fields(fields)?;
            let (src, dst, sport, dport) = (v1_ipv6(src)?, v1_ipv6(dst)?, v1_port(sport)?, v1_port(dport)?);
            Proxied::Addresses {
                source: SocketAddrV6::new(src, sport, 0, 0).into(),
                destination: SocketAddrV6::new(dst, dport, 0, 0).into(),
            }
        }
        // The line ended inside the protocol word (`PROXY TCP\r\n`).
        None => return Err(ProxyError::BadV1("unknown protocol")),
    };
    Ok(Some((header, lf + 1)))
}

/// The protocol word at the start of `rest` (what follows `PROXY `), or
/// None while it is still incomplete. Matching is exact and case-sensitive:
/// the spec lists the bytes.
fn v1_protocol(rest: &[u8]) -> Result<Option<V1Protocol>, ProxyError> {
    for (word, protocol) in V1_PROTOCOLS {
        match compare_prefix(rest, word) {
            Prefix::Partial => return Ok(None),
            Prefix::Whole => {
                // `UNKNOWN` ends at CRLF or a space; `UNKNOWNX` is another word.
                if let (V1Protocol::Unknown, Some(&b)) = (protocol, rest.get(word.len()))
                    && b != b' '
                    && b != b'\r'
                {
                    return Err(ProxyError::BadV1("unknown protocol"));
                }
                return Ok(Some(protocol));
            }
            Prefix::Differs => {}
        }
    }
    Err(ProxyError::BadV1("unknown protocol"))
}

/// Addresses and ports use hex digits, dots, colons and spaces only; a CR
/// may only end the line. Checked byte by byte as the line arrives, so a
/// `PROXY TCP4 ` followed by anything else fails without waiting for 107
/// bytes.
fn check_v1_chars(fields: &[u8]) -> Result<(), ProxyError> {
    let last = fields.len().saturating_sub(1);
    for (i, &b) in fields.iter().enumerate() {
        match b {
            b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' | b'.' | b':' | b' ' => {}
            b'\r' if i == last => {}
            b'\r' => return Err(ProxyError::BadV1("CR not followed by LF")),
            _ => return Err(ProxyError::BadV1("invalid character in addresses or ports")),
        }
    }
    Ok(())
}

/// `src dst sport dport`: exactly four fields, exactly one space between
/// them and none around them.
fn v1_fields(fields: &[u8]) -> Result<[&[u8]; 4], ProxyError> {
    if fields.split(|&b| b == b' ').any(<[u8]>::is_empty) {
        return Err(ProxyError::BadV1("fields must be separated by exactly one space"));
    }
    let mut it = fields.split(|&b| b == b' ');
    match (it.next(), it.next(), it.next(), it.next(), it.next()) {
        (Some(src), Some(dst), Some(sport), Some(dport), None) => Ok([src, dst, sport, dport]),
        _ => Err(ProxyError::BadV1("expected source and destination addresses and ports")),
    }
}

/// Four decimal numbers 0-255 with single dots. The standard library's
/// parser refuses leading zeros, as the spec requires ("to avoid any
/// possible confusion with octal numbers").
fn v1_ipv4(field: &[u8]) -> Result<Ipv4Addr, ProxyError> {
    std::str::from_utf8(field)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ProxyError::BadV1("TCP4 address is not a dotted-quad IPv4 address"))
}

/// RFC 4291 text form with at most one `::`; the IPv4-suffixed form
/// (`::ffff:10.0.0.1`) is accepted since it also decodes to exactly 128
/// bits, as HAProxy's own `inet_pton` does. Zone ids (`%eth0`) never
/// reach here: `%` is refused by [`check_v1_chars`].
fn v1_ipv6(field: &[u8]) -> Result<Ipv6Addr, ProxyError> {
    std::str::from_utf8(field)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ProxyError::BadV1("TCP6 address is not an IPv6 address"))
}

/// A decimal port 0-65535. No sign (refused earlier by
/// [`check_v1_chars`]) and no leading zero: the spec forbids "heading
/// zeroes ... in front of numbers in order to avoid any possible confusion
/// with octal numbers", so `080` is an error, not 80 or 64.
fn v1_port(field: &[u8]) -> Result<u16, ProxyError> {
    if !field.iter().all(u8::is_ascii_digit) {
        return Err(ProxyError::BadV1("port is not a decimal number"));
    }
    if field.len() > 1 && field.starts_with(b"0") {
        return Err(ProxyError::BadV1("port has a leading zero"));
    }
    // At most 5 digits, so the u32 cannot overflow.
    if field.len() > 5 {
        return Err(ProxyError::BadV1("port out of range"));
    }
    let value = field.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    u16::try_from(value).map_err(|_| ProxyError::BadV1("port out of range"))
}

// ---------------------------------------------------------------------------
// Version 2: a binary header (spec §2.2).
// ---------------------------------------------------------------------------

/// What the v2 address block holds, from the command and the family and
/// transport byte.
#[derive(Clone, Copy)]
enum V2Block {
    /// `LOCAL`, or `PROXY` with AF_UNSPEC or an unspecified transport: the
    /// block (addresses and TLVs alike) is skipped unread.
    Ignored,
    /// TCP over IPv4: 4 + 4 address bytes, 2 + 2 port bytes, then TLVs.
    Inet,
    /// TCP over IPv6: 16 + 16 address bytes, 2 + 2 port bytes, then TLVs.
    Inet6,
    /// A UNIX stream socket: two 108-byte paths, then TLVs. No IP address
    /// to report.
    Unix,
}

impl V2Block {
    /// Bytes of addresses the length field must cover.
    fn address_len(self) -> usize {
        match self {
            V2Block::Ignored => 0,
            V2Block::Inet => 12,
            V2Block::Inet6 => 36,
            V2Block::Unix => 216,
        }
    }
}

/// `buf` starts with the 12-byte signature. Each check needs only the
/// bytes up to its field, so it runs as soon as that field has arrived.
fn parse_v2(buf: &[u8]) -> Result<Option<(Proxied, usize)>, ProxyError> {
    // 13th byte: version (high nibble) and command (low nibble).
    let Some(&version_command) = buf.get(12) else { return Ok(None) };
    if version_command >> 4 != 2 {
        // "It must always be sent as \x2 and the receiver must only accept this value."
        return Err(ProxyError::BadV2("version is not 2"));
    }
    let block = match version_command & 0x0F {
        // LOCAL: "discard the protocol block including the family which is ignored".
        0x0 => V2Block::Ignored,
        0x1 => {
            let Some(&family_transport) = buf.get(13) else { return Ok(None) };
            v2_block(family_transport)?
        }
        // "Receivers must drop connections presenting unexpected values here."
        _ => return Err(ProxyError::BadV2("unassigned command")),
    };

    // 15th and 16th bytes: the length of everything after the fixed part.
    let Some(&[hi, lo]) = buf.get(14..V2_FIXED) else { return Ok(None) };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    let total = V2_FIXED + len;
    if total > MAX_HEADER {
        return Err(ProxyError::TooLong);
    }
    if len < block.address_len() {
        return Err(ProxyError::BadV2("length too short for the address family"));
    }

    // "The receiver must not start to parse an address before the whole
    // address block is received."
    let Some(body) = buf.get(V2_FIXED..total) else { return Ok(None) };
    let header = match block {
        V2Block::Ignored => Proxied::Local,
        V2Block::Inet => {
            let (src, body) = take::<4>(body)?;
            let (dst, body) = take::<4>(body)?;
            let (sport, body) = take::<2>(body)?;
            let (dport, tlvs) = take::<2>(body)?;
            check_tlvs(tlvs)?;
            Proxied::Addresses {
                source: SocketAddrV4::new(src.into(), u16::from_be_bytes(sport)).into(),
                destination: SocketAddrV4::new(dst.into(), u16::from_be_bytes(dport)).into(),
            }
        }
        V2Block::Inet6 => {
            let (src, body) = take::<16>(body)?;
            let (dst, body) = take::<16>(body)?;
            let (sport, body) = take::<2>(body)?;
            let (dport, tlvs) = take::<2>(body)?;
            check_tlvs(tlvs)?;
            Proxied::Addresses {
                source: SocketAddrV6::new(src.into(), u16::from_be_bytes(sport), 0, 0).into(),
                destination: SocketAddrV6::new(dst.into(), u16::from_be_bytes(dport), 0, 0).into(),
            }
        }
        V2Block::Unix => {
            check_tlvs(body.get(V2Block::Unix.address_len()..).unwrap_or_default())?;
            Proxied::Local
        }
    };
    Ok(Some((header, total)))
}

/// The 14th byte of a `PROXY` command: address family (high nibble) and
/// transport (low nibble).
fn v2_block(family_transport: u8) -> Result<V2Block, ProxyError> {
    match (family_transport >> 4, family_transport & 0x0F) {
        // "Other values are unspecified ... and must be rejected as invalid by receivers."
        (4.., _) => Err(ProxyError::BadV2("unassigned address family")),
        (_, 3..) => Err(ProxyError::BadV2("unassigned transport protocol")),
        // The spec would let a receiver fall back to the real endpoints
        // here, but this server only relays TCP: a datagram header on a
        // stream connection means a misconfigured proxy.
        (_, 2) => Err(ProxyError::BadV2("DGRAM transport on a stream connection")),
        // AF_UNSPEC or transport UNSPEC: "the receiver is free to accept the
        // connection anyway and use the real endpoint addresses".
        (0, _) | (_, 0) => Ok(V2Block::Ignored),
        (1, _) => Ok(V2Block::Inet),
        (2, _) => Ok(V2Block::Inet6),
        (_, _) => Ok(V2Block::Unix),
    }
}

/// Splits `N` bytes off the front. The length check in [`parse_v2`] makes
/// the error unreachable; it is an error and not a panic all the same.
fn take<const N: usize>(bytes: &[u8]) -> Result<([u8; N], &[u8]), ProxyError> {
    let (head, rest) = bytes.split_first_chunk::<N>().ok_or(ProxyError::BadV2("address block truncated"))?;
    Ok((*head, rest))
}

/// TLVs fill the rest of the header (spec §2.2): one type byte, a 16-bit
/// length, the value. Their contents are skipped (the spec allows
/// ignoring any), but their framing must fill the header exactly, as
/// HAProxy checks too: a TLV that overruns the header means the sender and
/// this parser disagree about where the connection's data begins.
fn check_tlvs(mut tlvs: &[u8]) -> Result<(), ProxyError> {
    while !tlvs.is_empty() {
        let Some((&[_kind, hi, lo], rest)) = tlvs.split_first_chunk::<3>() else {
            return Err(ProxyError::BadV2("truncated TLV"));
        };
        let Some(rest) = rest.get(usize::from(u16::from_be_bytes([hi, lo]))..) else {
            return Err(ProxyError::BadV2("TLV longer than the header"));
        };
        tlvs = rest;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Cases as tables of exact wire bytes. Every case is fed whole, byte by
    //! byte, and split in two at every offset, parsing the accumulated
    //! buffer after each piece as a connection does; all must agree.

    use super::*;

    type Outcome = Result<Option<(Proxied, usize)>, ProxyError>;

    /// What a case must give.
    enum Expect {
        /// The header (the whole case) gives these addresses.
        Addresses(&'static str, &'static str),
        /// The header (the whole case) gives `Proxied::Local`.
        Local,
        /// The case is rejected.
        Error(ProxyError),
        /// The case is a valid prefix: more bytes are needed.
        NeedMore,
    }

    /// What a connection sends after the header; it must never be consumed.
    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

    /// Parses the concatenation of `pieces` delivered one at a time; the first
    /// verdict other than "need more" is final.
    fn feed<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
        let mut buf = Vec::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            match parse(&buf) {
                Ok(None) => {}
                verdict => return verdict,
            }
        }
        Ok(None)
    }

    fn check_split(name: &str, wire: &[u8], expected: Outcome) {
        assert_eq!(feed([wire]), expected, "{name}: whole");
        assert_eq!(feed(wire.chunks(1)), expected, "{name}: byte by byte");
        for at in 0..=wire.len() {
            let (a, b) = wire.split_at(at);
            assert_eq!(feed([a, b]), expected, "{name}: split at {at}");
        }
    }

    fn check_all(cases: &[(&str, Vec<u8>, Expect)]) {
        for (name, wire, expect) in cases {
            let expected = match expect {
                Expect::Addresses(src, dst) => {
                    let header = Proxied::Addresses { source: src.parse().unwrap(), destination: dst.parse().unwrap() };
                    Ok(Some((header, wire.len())))
                }
                Expect::Local => Ok(Some((Proxied::Local, wire.len()))),
                Expect::Error(e) => Err(*e),
                Expect::NeedMore => Ok(None),
            };
            check_split(name, wire, expected);
            // What follows a header, or follows the point where the input
            // went wrong, changes nothing.
            if !matches!(expect, Expect::NeedMore) {
                check_split(name, &[wire.as_slice(), REQUEST].concat(), expected);
            }
        }
    }

    fn bad_v1(why: &'static str) -> Expect {
        Expect::Error(ProxyError::BadV1(why))
    }
    fn bad_v2(why: &'static str) -> Expect {
        Expect::Error(ProxyError::BadV2(why))
    }

    /// A v2 header: signature, version/command, family/transport, the
    /// length of `block`, then `block`.
    fn v2(version_command: u8, family_transport: u8, block: &[u8]) -> Vec<u8> {
        let len = u16::try_from(block.len()).unwrap();
        v2_len(version_command, family_transport, len, block)
    }

    /// A v2 header whose length field says `len`, whatever `block` holds.
    fn v2_len(version_command: u8, family_transport: u8, len: u16, block: &[u8]) -> Vec<u8> {
        let mut wire = V2_SIGNATURE.to_vec();
        wire.extend_from_slice(&[version_command, family_transport]);
        wire.extend_from_slice(&len.to_be_bytes());
        wire.extend_from_slice(block);
        wire
    }

    /// 127.0.0.1:56324 → 10.0.0.1:443 as a v2 AF_INET block.
    const INET: [u8; 12] = [127, 0, 0, 1, 10, 0, 0, 1, 0xDC, 0x04, 0x01, 0xBB];

    /// [2001:db8::1]:65535 → [::1]:80 as a v2 AF_INET6 block.
    fn inet6() -> Vec<u8> {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst = Ipv6Addr::LOCALHOST;
        [&src.octets()[..], &dst.octets(), &[0xFF, 0xFF], &[0, 80]].concat()
    }

    /// Three TLVs: ALPN `h2`, an empty NOOP, authority `example.com`.
    fn tlvs() -> Vec<u8> {
        [&[0x01, 0, 2][..], b"h2", &[0x04, 0, 0], &[0x02, 0, 11], b"example.com"].concat()
    }

    fn text(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn v1_accepted() {
        check_all(&[
            (
                "spec example",
                text("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"),
                Expect::Addresses("192.168.0.1:56324", "192.168.0.11:443"),
            ),
            (
                "tcp4 extremes",
                text("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"),
                Expect::Addresses("0.0.0.0:0", "255.255.255.255:65535"),
            ),
            (
                "tcp6 compressed",
                text("PROXY TCP6 2001:db8::1 ::1 65535 80\r\n"),
                Expect::Addresses("[2001:db8::1]:65535", "[::1]:80"),
            ),
            (
                "tcp6 longest form, upper case (104 bytes)",
                text(
                    "PROXY TCP6 FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe 65535 65535\r\n",
                ),
                Expect::Addresses(
                    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65535",
                ),
            ),
            (
                "tcp6 ipv4-mapped",
                text("PROXY TCP6 ::ffff:10.0.0.1 ::ffff:10.0.0.2 1 2\r\n"),
                Expect::Addresses("[::ffff:10.0.0.1]:1", "[::ffff:10.0.0.2]:2"),
            ),
            ("unknown, short form", text("PROXY UNKNOWN\r\n"), Expect::Local),
            (
                "unknown, longest line (107 bytes)",
                text(
                    "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
                ),
                Expect::Local,
            ),
            ("unknown ignores anything before CRLF", b"PROXY UNKNOWN x\x00\xff\r \r\n".to_vec(), Expect::Local),
        ]);
    }

    #[test]
    fn v1_rejected() {
        let tcp4 = |fields: &str| text(&format!("PROXY TCP4 {fields}\r\n"));
        let tcp6 = |fields: &str| text(&format!("PROXY TCP6 {fields}\r\n"));
        check_all(&[
            ("plain http", REQUEST.to_vec(), Expect::Error(ProxyError::NotProxy)),
            ("lower-case signature", text("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), Expect::Error(ProxyError::NotProxy)),
            ("no space after PROXY", text("PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n"), Expect::Error(ProxyError::NotProxy)),
            ("unknown protocol word", text("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), bad_v1("unknown protocol")),
            ("lower-case protocol word", text("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n"), bad_v1("unknown protocol")),
            ("two spaces after PROXY", text("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), bad_v1("unknown protocol")),
            ("protocol word cut short", text("PROXY TCP\r\n"), bad_v1("unknown protocol")),
            ("nothing after PROXY", text("PROXY \r\n"), bad_v1("unknown protocol")),
            ("tcp4 without fields", text("PROXY TCP4\r\n"), bad_v1("unknown protocol")),
            ("UNKNOWN glued to more", text("PROXY UNKNOWNX\r\n"), bad_v1("unknown protocol")),
            ("bare LF", text("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), bad_v1("line does not end with CRLF")),
            ("bare LF after UNKNOWN", text("PROXY UNKNOWN\n"), bad_v1("line does not end with CRLF")),
            ("CR then junk", text("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\r\n"), bad_v1("CR not followed by LF")),
            (
                "double space between fields",
                tcp4("1.2.3.4  5.6.7.8 1 2"),
                bad_v1("fields must be separated by exactly one space"),
            ),
            ("trailing space", tcp4("1.2.3.4 5.6.7.8 1 2 "), bad_v1("fields must be separated by exactly one space")),
            (
                "tab separator",
                text("PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n"),
                bad_v1("invalid character in addresses or ports"),
            ),
            (
                "extra field",
                tcp4("1.2.3.4 5.6.7.8 1 2 3"),
                bad_v1("expected source and destination addresses and ports"),
            ),
            ("missing port", tcp4("1.2.3.4 5.6.7.8 1"), bad_v1("expected source and destination addresses and ports")),
            ("ipv6 in TCP4", tcp4("::1 5.6.7.8 1 2"), bad_v1("TCP4 address is not a dotted-quad IPv4 address")),
            ("ipv4 in TCP6", tcp6("1.2.3.4 ::1 1 2"), bad_v1("TCP6 address is not an IPv6 address")),
            (
                "ipv4 leading zero (octal?)",
                tcp4("01.2.3.4 5.6.7.8 1 2"),
                bad_v1("TCP4 address is not a dotted-quad IPv4 address"),
            ),
            (
                "ipv4 octet over 255",
                tcp4("1.2.3.256 5.6.7.8 1 2"),
                bad_v1("TCP4 address is not a dotted-quad IPv4 address"),
            ),
            ("ipv4 three octets", tcp4("1.2.3 5.6.7.8 1 2"), bad_v1("TCP4 address is not a dotted-quad IPv4 address")),
            ("ipv6 two double colons", tcp6("1::2::3 ::1 1 2"), bad_v1("TCP6 address is not an IPv6 address")),
            ("ipv6 zone id", tcp6("fe80::1%eth0 ::1 1 2"), bad_v1("invalid character in addresses or ports")),
            ("port with leading zero", tcp4("1.2.3.4 5.6.7.8 080 2"), bad_v1("port has a leading zero")),
            ("port 00", tcp4("1.2.3.4 5.6.7.8 1 00"), bad_v1("port has a leading zero")),
            ("port over 65535", tcp4("1.2.3.4 5.6.7.8 65536 2"), bad_v1("port out of range")),
            ("port of six digits", tcp4("1.2.3.4 5.6.7.8 100000 2"), bad_v1("port out of range")),
            ("port with plus sign", tcp4("1.2.3.4 5.6.7.8 +80 2"), bad_v1("invalid character in addresses or ports")),
            ("negative port", tcp4("1.2.3.4 5.6.7.8 -1 2"), bad_v1("invalid character in addresses or ports")),
            ("hex port", tcp4("1.2.3.4 5.6.7.8 1f 2"), bad_v1("port is not a decimal number")),
            (
                "http after TCP4",
                text("PROXY TCP4 GET / HTTP/1.1\r\n"),
                bad_v1("invalid character in addresses or ports"),
            ),
            (
                "no CRLF in 107 bytes",
                [&b"PROXY UNKNOWN "[..], &[b'x'; 93]].concat(),
                Expect::Error(ProxyError::TooLong),
            ),
            (
                "CRLF at bytes 108 and 109",
                [&b"PROXY UNKNOWN "[..], &[b'x'; 94], b"\r\n"].concat(),
                Expect::Error(ProxyError::TooLong),
            ),
            (
                "tcp6 line of valid characters over 107 bytes",
                [&b"PROXY TCP6 "[..], &[b'0'; 100]].concat(),
                Expect::Error(ProxyError::TooLong),
            ),
        ]);
    }

    #[test]
    fn v1_incomplete() {
        check_all(&[
            ("nothing yet", Vec::new(), Expect::NeedMore),
            ("P", text("P"), Expect::NeedMore),
            ("signature", text("PROXY "), Expect::NeedMore),
            ("protocol word", text("PROXY TCP"), Expect::NeedMore),
            ("up to CR", text("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"), Expect::NeedMore),
            ("unknown up to CR", text("PROXY UNKNOWN\r"), Expect::NeedMore),
            ("106 bytes without CRLF", [&b"PROXY UNKNOWN "[..], &[b'x'; 92]].concat(), Expect::NeedMore),
        ]);
    }

    #[test]
    fn v2_accepted() {
        let big_noop = [&[0x04u8][..], &u16::try_from(MAX_HEADER - 16 - 12 - 3).unwrap().to_be_bytes()].concat();
        let big_noop = [big_noop, vec![0; MAX_HEADER - 16 - 12 - 3]].concat();
        check_all(&[
            ("PROXY TCP4", v2(0x21, 0x11, &INET), Expect::Addresses("127.0.0.1:56324", "10.0.0.1:443")),
            (
                "PROXY TCP4 with TLVs",
                v2(0x21, 0x11, &[&INET[..], &tlvs()].concat()),
                Expect::Addresses("127.0.0.1:56324", "10.0.0.1:443"),
            ),
            ("PROXY TCP6", v2(0x21, 0x21, &inet6()), Expect::Addresses("[2001:db8::1]:65535", "[::1]:80")),
            (
                "PROXY TCP6 with TLVs",
                v2(0x21, 0x21, &[inet6(), tlvs()].concat()),
                Expect::Addresses("[2001:db8::1]:65535", "[::1]:80"),
            ),
            (
                "header of exactly MAX_HEADER bytes",
                v2(0x21, 0x11, &[&INET[..], &big_noop].concat()),
                Expect::Addresses("127.0.0.1:56324", "10.0.0.1:443"),
            ),
            ("LOCAL, empty", v2(0x20, 0x00, &[]), Expect::Local),
            ("LOCAL skips an address block", v2(0x20, 0x11, &INET), Expect::Local),
            // "discard the protocol block including the family which is ignored"
            ("LOCAL ignores family and contents", v2(0x20, 0xFF, &[0xFF; 5]), Expect::Local),
            ("PROXY AF_UNSPEC", v2(0x21, 0x00, &[]), Expect::Local),
            ("PROXY AF_UNSPEC skips what follows", v2(0x21, 0x01, &[1, 2, 3, 4]), Expect::Local),
            ("PROXY AF_INET transport UNSPEC", v2(0x21, 0x10, &INET), Expect::Local),
            ("PROXY AF_UNIX stream", v2(0x21, 0x31, &[b'/'; 216]), Expect::Local),
            ("PROXY AF_UNIX stream with TLVs", v2(0x21, 0x31, &[vec![0; 216], tlvs()].concat()), Expect::Local),
        ]);
    }

    #[test]
    fn v2_rejected() {
        let not_proxy = Expect::Error(ProxyError::NotProxy);
        check_all(&[
            ("blank lines then http", text("\r\n\r\nGET / HTTP/1.1\r\n\r\n"), not_proxy),
            ("signature's last byte wrong", [&V2_SIGNATURE[..11], b"\r"].concat(), Expect::Error(ProxyError::NotProxy)),
            ("version 1", v2(0x11, 0x11, &INET), bad_v2("version is not 2")),
            ("version 3", v2(0x31, 0x11, &INET), bad_v2("version is not 2")),
            ("command 2", v2(0x22, 0x11, &INET), bad_v2("unassigned command")),
            ("command 15", v2(0x2F, 0x00, &[]), bad_v2("unassigned command")),
            ("UDP over IPv4", v2(0x21, 0x12, &INET), bad_v2("DGRAM transport on a stream connection")),
            ("UDP over IPv6", v2(0x21, 0x22, &inet6()), bad_v2("DGRAM transport on a stream connection")),
            ("UNIX datagram", v2(0x21, 0x32, &[0; 216]), bad_v2("DGRAM transport on a stream connection")),
            ("family 4", v2(0x21, 0x41, &INET), bad_v2("unassigned address family")),
            ("transport 3", v2(0x21, 0x13, &INET), bad_v2("unassigned transport protocol")),
            ("AF_INET block too short", v2(0x21, 0x11, &INET[..11]), bad_v2("length too short for the address family")),
            ("AF_INET6 block too short", v2(0x21, 0x21, &INET), bad_v2("length too short for the address family")),
            ("AF_UNIX block too short", v2(0x21, 0x31, &[0; 215]), bad_v2("length too short for the address family")),
            ("length over MAX_HEADER", v2_len(0x21, 0x11, u16::MAX, &INET), Expect::Error(ProxyError::TooLong)),
            (
                "one byte over MAX_HEADER",
                v2_len(0x20, 0x00, u16::try_from(MAX_HEADER - 16 + 1).unwrap(), &[]),
                Expect::Error(ProxyError::TooLong),
            ),
            (
                "TLV overruns the header",
                v2(0x21, 0x11, &[&INET[..], &[0x01, 0, 5, b'h', b'2']].concat()),
                bad_v2("TLV longer than the header"),
            ),
            ("TLV header truncated", v2(0x21, 0x11, &[&INET[..], &[0x04, 0]].concat()), bad_v2("truncated TLV")),
            (
                "TLV after a good one truncated",
                v2(0x21, 0x21, &[inet6(), tlvs(), vec![0x04]].concat()),
                bad_v2("truncated TLV"),
            ),
        ]);
    }

    #[test]
    fn v2_incomplete() {
        check_all(&[
            ("CR", text("\r"), Expect::NeedMore),
            ("signature", V2_SIGNATURE.to_vec(), Expect::NeedMore),
            ("fixed part", v2_len(0x21, 0x11, 12, &[]), Expect::NeedMore),
            ("address block less a byte", v2(0x21, 0x11, &INET)[..27].to_vec(), Expect::NeedMore),
            ("LOCAL with unread block", v2_len(0x20, 0x00, 100, &[0; 99]), Expect::NeedMore),
        ]);
    }

    /// How many bytes `parse` needs before it gives a verdict on `wire`.
    fn decided_after(wire: &[u8]) -> Option<usize> {
        (0..=wire.len()).find(|&n| parse(&wire[..n]) != Ok(None))
    }

    /// Garbage is refused on the first byte that proves it, without waiting
    /// for a line end or a length's worth of bytes.
    #[test]
    fn rejected_as_soon_as_possible() {
        let cases: &[(&str, Vec<u8>, usize)] = &[
            ("plain GET on its first byte", REQUEST.to_vec(), 1),
            ("TLS ClientHello", vec![0x16, 0x03, 0x01, 0x02, 0x00], 1),
            ("blank lines then GET, on the G", text("\r\n\r\nGET /"), 5),
            ("PROXZ", text("PROXZ TCP4"), 5),
            ("unknown protocol word", text("PROXY TCP5 1.2.3.4"), 10),
            ("bare-LF-terminated line", text("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nGET"), 31),
            ("letters where addresses go", text("PROXY TCP4 GET / HTTP/1.1"), 12),
            ("v2 version", v2(0x11, 0x11, &INET), 13),
            ("v2 command", v2(0x23, 0x11, &INET), 13),
            ("v2 DGRAM", v2(0x21, 0x12, &INET), 14),
            ("v2 length over MAX_HEADER", v2_len(0x21, 0x11, u16::MAX, &INET), 16),
            ("v2 length short for AF_INET6", v2(0x21, 0x21, &INET), 16),
        ];
        for (name, wire, at) in cases {
            assert_eq!(decided_after(wire), Some(*at), "{name}");
            assert!(parse(&wire[..*at]).is_err(), "{name}");
        }
    }

    #[test]
    fn consumes_only_the_header() {
        let wire = [&b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"[..], REQUEST].concat();
        let Ok(Some((_, n))) = parse(&wire) else { panic!("not parsed") };
        assert_eq!(&wire[n..], REQUEST);
        let wire = [v2(0x21, 0x11, &[&INET[..], &tlvs()].concat()), REQUEST.to_vec()].concat();
        let Ok(Some((_, n))) = parse(&wire) else { panic!("not parsed") };
        assert_eq!(&wire[n..], REQUEST);
    }

    #[test]
    fn limits_cover_every_legal_header() {
        const { assert!(V1_MAX <= MAX_HEADER && V2_FIXED + 216 <= MAX_HEADER) };
    }

    #[test]
    fn errors_display() {
        assert_eq!(ProxyError::BadV1("port out of range").to_string(), "invalid PROXY v1 header: port out of range");
        assert_eq!(ProxyError::TooLong.to_string(), "PROXY header too long (v1 over 107 bytes or v2 over 4096 bytes)");
    }

    /// The fuzz target's invariants on every table case, every way of
    /// cutting it into pieces, and on every prefix: no panic, consumed
    /// within bounds, same verdict however the bytes arrive.
    #[test]
    fn fuzz_invariants_on_prefixes() {
        let wires = [
            text("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET"),
            text("PROXY TCP6 ::1 ::1 1 2\r\n"),
            text("PROXY UNKNOWN\r\n"),
            v2(0x21, 0x21, &[inet6(), tlvs()].concat()),
            v2(0x20, 0x00, &[]),
            v2(0x21, 0x11, &[&INET[..], &[0x01, 0, 5, b'h', b'2']].concat()),
        ];
        for wire in &wires {
            for end in 0..=wire.len() {
                for cuts in [0u8, 1, 2, 3, 7, 16, 255] {
                    crate::proto::fuzzing::proxy(&[&[cuts][..], &wire[..end]].concat());
                }
            }
        }
    }
}
