//! Decoder cases as tables of exact wire bytes. Every case is fed whole,
//! byte by byte, and split in two at every offset; all must give the same
//! events.

use crate::config::Limits;
use crate::proto::Error;
use crate::proto::stream::{Event, decode_pieces};

fn head(method: &str, target: &str, minor: u8, keep_alive: bool) -> Event {
    Event::Head { method: method.into(), target: target.into(), minor, keep_alive }
}
fn get(target: &str) -> Event {
    head("GET", target, 1, true)
}
fn data(d: &str) -> Event {
    Event::Data(d.as_bytes().to_vec())
}
const END: Event = Event::End;
fn bad(why: &'static str) -> Event {
    Event::Error(Error::BadRequest(why))
}

/// Feeds `wire` every way and checks each gives `expected`.
fn check(name: &str, wire: &[u8], expected: &[Event], limits: &Limits) {
    let whole = decode_pieces([wire], limits);
    assert_eq!(whole, expected, "{name}: whole");
    let bytes = decode_pieces(wire.chunks(1), limits);
    assert_eq!(bytes, expected, "{name}: byte by byte");
    for at in 0..=wire.len() {
        let (a, b) = wire.split_at(at);
        assert_eq!(decode_pieces([a, b], limits), expected, "{name}: split at {at}");
    }
}

fn check_all(cases: &[(&str, &[u8], Vec<Event>)]) {
    let limits = Limits::default();
    for (name, wire, expected) in cases {
        check(name, wire, expected, &limits);
    }
}

#[test]
fn well_formed_requests() {
    check_all(&[
        ("simple get", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", vec![get("/"), END]),
        ("leading empty lines are ignored", b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", vec![get("/"), END]),
        ("host name in any case", b"GET / HTTP/1.1\r\nhOsT: a\r\n\r\n", vec![get("/"), END]),
        ("host name in capitals", b"GET / HTTP/1.1\r\nHOST: a\r\n\r\n", vec![get("/"), END]),
        // Counted as Host, these would make the one Host a repeated one.
        ("four-letter names near host", b"GET / HTTP/1.1\r\nHose: b\r\nHosT: a\r\nGost: c\r\n\r\n", vec![get("/"), END]),
        // Each has the length and first letter of a framing field, so it
        // reaches the name comparison: taken for the field, it would close
        // the connection, wait for a body, or refuse the expectation (417).
        (
            "names near the framing fields",
            b"GET / HTTP/1.1\r\nHost: a\r\nCxnnection: close\r\nContent-Lengtx: 5\r\nTransfer-Encodinx: chunked\r\nExpecx: x\r\n\r\n",
            vec![get("/"), END],
        ),
        ("bare LF line ends (RFC 9112 2.2 MAY)", b"GET / HTTP/1.1\nHost: a\n\n", vec![get("/"), END]),
        ("http/1.0 closes by default", b"GET /x HTTP/1.0\r\n\r\n", vec![head("GET", "/x", 0, false), END]),
        (
            "http/1.0 keep-alive",
            b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
            vec![head("GET", "/", 0, true), END],
        ),
        ("connection close", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", vec![head("GET", "/", 1, false), END]),
        (
            "connection token list",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade, Close\r\n\r\n",
            vec![head("GET", "/", 1, false), END],
        ),
        // The two values compared whole (`eq_lower`), in any case, and
        // values one bit away from them: each byte of `keep-alive` and
        // `close` OR 0x20 is itself, so a byte that differs from the
        // pattern only in bit 0x20 is an uppercase letter or, for `-`, a
        // CR; `=` is `-` with another bit changed.
        ("connection close in capitals", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: CLOSE\r\n\r\n", vec![head("GET", "/", 1, false), END]),
        ("http/1.0 keep-alive in capitals", b"GET / HTTP/1.0\r\nConnection: KEEP-ALIVE\r\n\r\n", vec![head("GET", "/", 0, true), END]),
        ("http/1.0 keep=alive is not keep-alive", b"GET / HTTP/1.0\r\nConnection: keep=alive\r\n\r\n", vec![head("GET", "/", 0, false), END]),
        ("http/1.0 keep-alive with a prefix", b"GET / HTTP/1.0\r\nConnection: xkeep-alive\r\n\r\n", vec![head("GET", "/", 0, false), END]),
        ("closed is not close", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", vec![get("/"), END]),
        ("clos^ is not close", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: clos^\r\n\r\n", vec![get("/"), END]),
        (
            "http/1.0 keep-alive among tokens",
            b"GET / HTTP/1.0\r\nConnection: foo, Keep-Alive\r\n\r\n",
            vec![head("GET", "/", 0, true), END],
        ),
        (
            "names one letter off the framing fields, in capitals",
            b"GET / HTTP/1.1\r\nHost: a\r\nCONNECTIOM: close\r\nCONTENT_LENGTH: 5\r\nTRANSFER-ENCODINF: chunked\r\nEXPECU: x\r\n\r\n",
            vec![get("/"), END],
        ),
        (
            "content-length body",
            b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            vec![head("POST", "/e", 1, true), data("hello"), END],
        ),
        ("zero length body", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", vec![head("POST", "/", 1, true), END]),
        (
            "identical duplicate content-length (RFC 9110 8.6)",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            vec![head("POST", "/", 1, true), data("abc"), END],
        ),
        (
            "identical content-length list",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
            vec![head("POST", "/", 1, true), data("abc"), END],
        ),
        (
            "chunked with extensions and trailers",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n6 ; x\r\n world\r\nA\r\n0123456789\r\n0\r\nT: v\r\nU: w\r\n\r\n",
            vec![head("POST", "/", 1, true), data("hello world0123456789"), END],
        ),
        (
            "chunked, upper-case coding and leading zeros",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n0003\r\nabc\r\n000\r\n\r\n",
            vec![head("POST", "/", 1, true), data("abc"), END],
        ),
        (
            "pipelined requests",
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET /3 HTTP/1.1\r\nHost: a\r\n\r\n",
            vec![get("/1"), END, head("POST", "/2", 1, true), data("hi"), END, get("/3"), END],
        ),
        ("absolute-form target", b"GET http://a.example/p?q HTTP/1.1\r\nHost: a.example\r\n\r\n", vec![get("http://a.example/p?q"), END]),
        ("asterisk-form for OPTIONS", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", vec![head("OPTIONS", "*", 1, true), END]),
        // This server does not tunnel: CONNECT is 501 (RFC 9110 §9.1), so
        // no handler can answer it 2xx (which makes the connection a
        // tunnel, RFC 9110 §9.3.6); origin-form CONNECT stays a 400.
        ("authority-form CONNECT is not implemented", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", vec![Event::Error(Error::NotImplemented("CONNECT is not supported"))]),
        ("origin-form CONNECT is malformed", b"CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n", vec![bad("invalid request target")]),
        ("CONNECT without a port is malformed", b"CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n", vec![bad("invalid request target")]),
        ("CONNECT with a bad port is malformed", b"CONNECT a:x1 HTTP/1.1\r\nHost: a\r\n\r\n", vec![bad("invalid request target")]),
        ("extension method", b"PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n", vec![head("PURGE", "/x", 1, true), END]),
        ("ipv6 host", b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", vec![get("/"), END]),
        ("empty host is allowed", b"GET / HTTP/1.1\r\nHost:\r\n\r\n", vec![get("/"), END]),
        ("expect 100-continue", b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nx", vec![head("PUT", "/", 1, true), data("x"), END]),
        ("expectations are ignored in HTTP/1.0", b"GET / HTTP/1.0\r\nExpect: magic\r\n\r\n", vec![head("GET", "/", 0, false), END]),
        (
            "empty transfer-coding list elements are ignored",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n0\r\n\r\n",
            vec![head("POST", "/", 1, true), END],
        ),
    ]);
}

#[test]
fn smuggling_shapes_are_rejected() {
    check_all(&[
        (
            "CL and TE together (RFC 9112 6.3 rule 3)",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX",
            vec![bad("both Content-Length and Transfer-Encoding")],
        ),
        (
            "TE and CL, other order",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n",
            vec![bad("both Content-Length and Transfer-Encoding")],
        ),
        (
            "differing duplicate CL",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            vec![bad("conflicting Content-Length")],
        ),
        (
            "differing CL list",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n",
            vec![bad("conflicting Content-Length")],
        ),
        (
            "CL with sign",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
            vec![bad("invalid Content-Length")],
        ),
        (
            "negative CL",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            vec![bad("invalid Content-Length")],
        ),
        (
            "CL with junk",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3x\r\n\r\nabc",
            vec![bad("invalid Content-Length")],
        ),
        (
            "hex CL",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc",
            vec![bad("invalid Content-Length")],
        ),
        (
            "CL with inner space",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n",
            vec![bad("invalid Content-Length")],
        ),
        ("empty CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", vec![bad("invalid Content-Length")]),
        (
            "CL overflowing u64",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            vec![bad("invalid Content-Length")],
        ),
        (
            "TE not ending in chunked (RFC 9112 6.3 rule 4)",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            vec![bad("Transfer-Encoding does not end in chunked")],
        ),
        (
            "TE identity",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
            vec![bad("Transfer-Encoding does not end in chunked")],
        ),
        (
            "TE chunked twice",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            vec![bad("chunked applied more than once")],
        ),
        (
            "TE unknown coding before chunked",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            vec![Event::Error(Error::NotImplemented("unsupported transfer coding"))],
        ),
        // RFC 9112 §7.1: chunked defines no parameters; any is an error.
        (
            "TE chunked with a parameter",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;foo=bar\r\n\r\n0\r\n\r\n",
            vec![bad("parameters on chunked")],
        ),
        (
            "TE chunked with a spaced parameter",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked ; q=1\r\n\r\n0\r\n\r\n",
            vec![bad("parameters on chunked")],
        ),
        (
            "TE parameters on another coding",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip;level=1, chunked\r\n\r\n",
            vec![Event::Error(Error::NotImplemented("unsupported transfer coding"))],
        ),
        (
            "TE on HTTP/1.0",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            vec![bad("Transfer-Encoding in HTTP/1.0")],
        ),
        (
            "TE with space before colon",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
            vec![bad("invalid header name")],
        ),
        (
            "obs-fold (RFC 9112 5.2)",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
            vec![bad("invalid header name")],
        ),
    ]);
}

#[test]
fn bad_chunked_framing_is_rejected() {
    let post = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let with = |body: &str| format!("{post}{body}").into_bytes();
    let h = || head("POST", "/", 1, true);
    let cases: Vec<(&str, Vec<u8>, Vec<Event>)> = vec![
        ("non-hex size", with("zz\r\n"), vec![h(), bad("invalid chunk size")]),
        ("empty size", with("\r\n"), vec![h(), bad("invalid chunk size")]),
        ("size overflow", with("10000000000000000\r\n"), vec![h(), bad("chunk size overflow")]),
        ("size with sign", with("+5\r\nhello\r\n"), vec![h(), bad("invalid chunk size")]),
        ("size with 0x", with("0x5\r\nhello\r\n"), vec![h(), bad("invalid chunk size")]),
        ("space then CRLF", with("5 \r\nhello\r\n"), vec![h(), bad("invalid chunk size")]),
        ("bare LF after size", with("5\nhello\r\n0\r\n\r\n"), vec![h(), bad("invalid chunk size")]),
        ("data longer than size", with("3\r\nhello\r\n"), vec![h(), data("hel"), bad("invalid chunked framing")]),
        ("bare LF after data", with("3\r\nabc\n0\r\n\r\n"), vec![h(), data("abc"), bad("invalid chunked framing")]),
        ("NUL in extension", with("3;\0\r\nabc\r\n"), vec![h(), bad("invalid chunk extension")]),
        // chunk-ext grammar (RFC 9112 §7.1.1): names and values are tokens
        // or quoted strings, whitespace only before `;` and `=`.
        (
            "extensions in every legal form",
            with("3 ; a ; b = c;d=\"x y\\\"z;\" ;e=\"\"\r\nabc\r\n0\r\n\r\n"),
            vec![h(), data("abc"), END],
        ),
        ("empty extension name", with("3;\r\nabc\r\n"), vec![h(), bad("invalid chunk extension")]),
        ("extension name not a token", with("3;a(b\r\nabc\r\n"), vec![h(), bad("invalid chunk extension")]),
        ("empty extension value", with("3;a=\r\nabc\r\n"), vec![h(), bad("invalid chunk extension")]),
        ("two semicolons", with("3;;a\r\nabc\r\n"), vec![h(), bad("invalid chunk extension")]),
        ("unterminated quote", with("3;a=\"x\r\nabc\r\n"), vec![h(), bad("invalid chunk extension")]),
        ("text after a quoted value", with("3;a=\"x\"y\r\nabc\r\n"), vec![h(), bad("invalid chunk extension")]),
        ("whitespace before the line end", with("3;a=b \r\nabc\r\n"), vec![h(), bad("invalid chunk extension")]),
        ("bare name then whitespace", with("3;a \r\nabc\r\n"), vec![h(), bad("invalid chunk extension")]),
        (
            "endless leading zeros",
            with(&format!("{}5\r\nhello\r\n", "0".repeat(40))),
            vec![h(), bad("chunk size too long")],
        ),
        (
            "32 digits of padding are fine",
            with(&format!("{}5\r\nhello\r\n0\r\n\r\n", "0".repeat(31))),
            vec![h(), data("hello"), END],
        ),
        ("bare LF in trailer", with("0\r\nT: v\n\r\n"), vec![h(), bad("invalid trailer")]),
        // Trailer lines are field lines (RFC 9112 §7.1.2): a request line
        // after the last chunk is refused, not skipped as a trailer.
        ("request line as trailer", with("0\r\nGET /admin HTTP/1.1\r\n\r\n"), vec![h(), bad("invalid trailer")]),
        ("trailer without colon", with("0\r\nNoColon\r\n\r\n"), vec![h(), bad("invalid trailer")]),
        ("trailer with empty name", with("0\r\n: v\r\n\r\n"), vec![h(), bad("invalid trailer")]),
        ("obs-fold in trailer", with("0\r\nT: v\r\n  w\r\n\r\n"), vec![h(), bad("invalid trailer")]),
        ("space before trailer colon", with("0\r\nT : v\r\n\r\n"), vec![h(), bad("invalid trailer")]),
        ("control byte in trailer value", with("0\r\nT: a\x01\r\n\r\n"), vec![h(), bad("invalid trailer")]),
        ("trailers with empty and odd values", with("0\r\nA:\r\nB-c!: x y\té\r\n\r\n"), vec![h(), END]),
    ];
    let limits = Limits::default();
    for (name, wire, expected) in &cases {
        check(name, wire, expected, &limits);
    }
}

#[test]
fn malformed_heads_are_rejected() {
    check_all(&[
        ("missing host in 1.1", b"GET / HTTP/1.1\r\n\r\n", vec![bad("missing or repeated Host")]),
        (
            "a name near host is not host",
            b"GET / HTTP/1.1\r\nHoSu: a\r\nXost: a\r\nHos: a\r\nHosts: a\r\n\r\n",
            vec![bad("missing or repeated Host")],
        ),
        ("two hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", vec![bad("missing or repeated Host")]),
        ("two hosts in 1.0", b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", vec![bad("missing or repeated Host")]),
        ("invalid host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", vec![bad("invalid Host")]),
        ("host with path", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", vec![bad("invalid Host")]),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", vec![bad("invalid header name")]),
        ("NUL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", vec![bad("invalid header value")]),
        ("CR in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", vec![bad("invalid header value")]),
        // `eq_lower` would take a CR for the `-` of `keep-alive`: the
        // parser must refuse it before.
        (
            "CR inside keep-alive",
            b"GET / HTTP/1.0\r\nConnection: keep\ralive\r\n\r\n",
            vec![bad("invalid header value")],
        ),
        // Likewise 0x11, which it would take for the `1` of `100-continue`.
        (
            "control byte inside 100-continue",
            b"GET / HTTP/1.1\r\nHost: a\r\nExpect: \x1100-continue\r\n\r\n",
            vec![bad("invalid header value")],
        ),
        ("empty header name", b"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", vec![bad("invalid header name")]),
        ("no colon", b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", vec![bad("invalid header name")]),
        ("bad method token", b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", vec![bad("invalid request line")]),
        ("double space", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", vec![bad("invalid request line")]),
        ("target without slash", b"GET foo HTTP/1.1\r\nHost: a\r\n\r\n", vec![bad("invalid request target")]),
        ("asterisk for GET", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", vec![bad("invalid request target")]),
        ("lower-case version", b"GET / http/1.1\r\nHost: a\r\n\r\n", vec![bad("invalid HTTP version")]),
        ("junk version", b"GET / HTTP/1.1x\r\nHost: a\r\n\r\n", vec![bad("invalid line ending")]),
        ("missing version", b"GET /\r\nHost: a\r\n\r\n", vec![bad("invalid request line")]),
        ("HTTP/2.0 (505)", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", vec![Event::Error(Error::VersionNotSupported)]),
        ("HTTP/3.0 (505)", b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", vec![Event::Error(Error::VersionNotSupported)]),
        ("HTTP/0.9 (505)", b"GET / HTTP/0.9\r\n\r\n", vec![Event::Error(Error::VersionNotSupported)]),
        (
            "unknown expectation (417)",
            b"GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n",
            vec![Event::Error(Error::ExpectationFailed)],
        ),
        ("bare CR line end", b"GET / HTTP/1.1\rHost: a\r\n\r\n", vec![bad("invalid line ending")]),
    ]);
}

#[test]
fn limits_give_their_status() {
    let limits = Limits {
        max_request_line: 32,
        max_head_bytes: 128,
        max_headers: 4,
        max_body_bytes: 10,
        max_chunk_ext_bytes: 8,
        max_trailer_bytes: 16,
        ..Limits::default()
    };
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(40));
    let long_head = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "v".repeat(120));
    let many = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n";
    let big_cl = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n";
    let big_chunked =
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n5\r\nabcde\r\n0\r\n\r\n";
    let long_ext = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;abcdefghij\r\nx\r\n0\r\n\r\n";
    let long_trailer =
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nTrailer: 0123456789abcdef\r\n\r\n";
    let endless_bws = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1{}", " ".repeat(9));
    let h = || head("POST", "/", 1, true);
    let cases: Vec<(&str, &[u8], Vec<Event>)> = vec![
        ("request line > max (414)", long_target.as_bytes(), vec![Event::Error(Error::UriTooLong)]),
        ("request line never ending (414)", &long_target.as_bytes()[..36], vec![Event::Error(Error::UriTooLong)]),
        // Found by the stream fuzzer: the invalid byte arrives before the
        // line is too long, so it decides, whole or split.
        (
            "invalid byte in an overlong line (400)",
            b"\x88OST /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            vec![bad("invalid request line")],
        ),
        ("head > max (431)", long_head.as_bytes(), vec![Event::Error(Error::HeadTooLarge)]),
        ("too many headers (431)", many.as_bytes(), vec![Event::Error(Error::HeadTooLarge)]),
        ("CL > max body (413)", big_cl.as_bytes(), vec![Event::Error(Error::PayloadTooLarge)]),
        (
            "chunked > max body (413)",
            big_chunked.as_bytes(),
            vec![h(), data("abcdef"), Event::Error(Error::PayloadTooLarge)],
        ),
        ("chunk extension > max", long_ext.as_bytes(), vec![h(), bad("chunk extension too long")]),
        // Whitespace before `;` is framing too: without a bound, one space
        // at a time kept a connection busy forever.
        ("whitespace after a chunk size counts", endless_bws.as_bytes(), vec![h(), bad("chunk extension too long")]),
        (
            "whitespace before an extension is fine within the bound",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 \t;ab\r\nx\r\n0\r\n\r\n",
            vec![h(), data("x"), END],
        ),
        (
            "extensions add up over the body",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;abcd\r\nx\r\n1;efgh\r\ny\r\n0\r\n\r\n",
            vec![h(), data("x"), bad("chunk extension too long")],
        ),
        ("trailers > max (431)", long_trailer.as_bytes(), vec![h(), Event::Error(Error::HeadTooLarge)]),
    ];
    for (name, wire, expected) in &cases {
        check(name, wire, expected, &limits);
    }
}

/// `Limits` built by hand may hold any value: the largest request line
/// must not overflow the parser's arithmetic (it made every request a 414
/// in release builds, a panic in debug ones).
#[test]
fn unbounded_request_line_limit_does_not_overflow() {
    let limits = Limits { max_request_line: usize::MAX, ..Limits::default() };
    let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    check("max_request_line usize::MAX", get, &[head("GET", "/", 1, true), END], &limits);
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(20_000));
    check("long line, max usize::MAX", long.as_bytes(), &[Event::Error(Error::HeadTooLarge)], &limits);
}

/// The parser uses field values as httparse gives them: without the
/// optional whitespace around them (RFC 9112 §5.1). Were httparse to keep
/// it, Host would be refused (space is not a Host byte), the framing fields
/// misread and the accessors would return it.
#[test]
fn field_values_come_without_surrounding_whitespace() {
    let wire = b"POST / HTTP/1.1\r\nHost: \t h.example \t\r\nX: \t v w \t\r\nContent-Length:\t 5 \t\r\nConnection:  close \r\nE: \t \r\n\r\n";
    let (req, n) = crate::proto::head::parse(wire, &Limits::default()).unwrap().unwrap();
    assert_eq!(n, wire.len());
    assert_eq!(req.header("host"), Some("h.example"));
    assert_eq!(req.header("x"), Some("v w"), "inner whitespace stays");
    assert_eq!(req.header("e"), Some(""));
    assert_eq!(req.content_length(), Some(5));
    assert!(!req.keep_alive());
}

/// RFC 3986 §3.2: an absolute-form target's authority ends at the first
/// `/`, `?` or `#`, and only a `/` starts its path. Routing on a path taken
/// from after a `?` would disagree with every proxy in front.
#[test]
fn absolute_form_path_and_query() {
    let cases: [(&str, &str, Option<&str>); 8] = [
        ("http://a/b/c?x", "/b/c", Some("x")),
        ("http://a?/admin", "/", Some("/admin")),
        ("http://a#/x", "/", None),
        ("http://a", "/", None),
        ("http://a:80/p#f?q", "/p", None),
        ("http://a/p?q#f?r", "/p", Some("q")),
        ("/p#f?q", "/p", None),
        ("/p?q/r", "/p", Some("q/r")),
    ];
    for (target, path, query) in cases {
        let wire = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
        let (req, _) = crate::proto::head::parse(wire.as_bytes(), &Limits::default()).unwrap().unwrap();
        assert_eq!((req.path(), req.query()), (path, query), "{target}");
    }
}

#[test]
fn request_accessors() {
    let wire = b"GET http://h.example/a/b?x=1&y#frag HTTP/1.1\r\nHost: h.example\r\nX-Two: 1\r\nx-two: 2\r\nContent-Length: 0\r\nV: \xff\r\n\r\n";
    let (req, n) = crate::proto::head::parse(wire, &Limits::default()).unwrap().unwrap();
    assert_eq!(n, wire.len());
    assert_eq!(req.path(), "/a/b");
    assert_eq!(req.query(), Some("x=1&y"));
    assert_eq!(req.header("x-two"), Some("1"));
    assert_eq!(req.headers().filter(|(n, _)| n.eq_ignore_ascii_case("x-two")).count(), 2);
    assert_eq!(req.header("v"), None, "non-UTF-8 value is not a str");
    assert_eq!(req.header_bytes("v"), Some(&b"\xff"[..]));
    assert_eq!(req.content_length(), Some(0));
    assert!(!req.is_head());
}

#[test]
fn a_target_is_text_as_sent_and_one_that_is_not_utf8_is_rejected() {
    // Targets carry non-ASCII bytes in the wild; UTF-8 ones come back as
    // they were sent, in the method, target and field names the parser
    // returned as text.
    let wire = "GET /caf\u{e9}/\u{1f600}?q=\u{fc} HTTP/1.1\r\nHost: a\r\nX-Name: v\r\n\r\n".as_bytes();
    let (req, _) = crate::proto::head::parse(wire, &Limits::default()).unwrap().unwrap();
    assert_eq!(req.method(), "GET");
    assert_eq!(req.target(), "/caf\u{e9}/\u{1f600}?q=\u{fc}");
    assert_eq!(req.path(), "/caf\u{e9}/\u{1f600}");
    assert_eq!(req.query(), Some("q=\u{fc}"));
    assert_eq!(req.headers().map(|(n, _)| n).collect::<Vec<_>>(), ["Host", "X-Name"]);
    for target in [&b"/\xff"[..], b"/caf\xc3", b"/\xc3(", b"/\xed\xa0\x80"] {
        let mut wire = b"GET ".to_vec();
        wire.extend_from_slice(target);
        wire.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
        let got = crate::proto::head::parse(&wire, &Limits::default());
        assert!(matches!(got, Err(Error::BadRequest(_))), "{target:?}: {got:?}");
    }
}

#[test]
fn many_headers_spill_from_the_stack_slots_to_the_heap() {
    let limits = Limits::default(); // max_headers 100
    let with = |n: usize| {
        let mut wire = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..n {
            wire.extend_from_slice(format!("X-H{i}: {i}\r\n").as_bytes());
        }
        wire.extend_from_slice(b"\r\n");
        wire
    };
    let (req, _) = crate::proto::head::parse(&with(60), &limits).unwrap().unwrap();
    assert_eq!(req.headers().count(), 61);
    assert_eq!(req.header("x-h59"), Some("59"));
    check("99 headers", &with(99), &[get("/"), END], &limits);
    check(
        "100 headers plus Host",
        &with(100),
        &[Event::Error(Error::HeadTooLarge)],
        &Limits { max_head_bytes: 1 << 20, ..limits.clone() },
    );
    // A limit below the stack's slots never reaches the heap.
    let few = Limits { max_headers: 10, ..limits };
    check("9 headers plus Host", &with(9), &[get("/"), END], &few);
    check("10 headers plus Host", &with(10), &[Event::Error(Error::HeadTooLarge)], &few);
}

#[test]
fn a_request_reusing_a_dropped_requests_buffer_holds_only_its_own_head() {
    let limits = Limits::default();
    let parse = |wire: &[u8]| crate::proto::head::parse(wire, &limits).unwrap().unwrap().0;
    let long = parse(b"POST /a/long/path HTTP/1.1\r\nHost: first\r\nX-One: 1\r\nX-Two: 2\r\nContent-Length: 3\r\n\r\n");
    let kept = long.clone();
    drop(long); // its buffer is now this thread's spare
    let short = parse(b"GET /b HTTP/1.0\r\n\r\n");
    assert_eq!((short.method(), short.target(), short.version_minor()), ("GET", "/b", 0));
    assert_eq!(short.headers().count(), 0);
    assert_eq!(short.content_length(), Some(0));
    let next = parse(b"GET /c HTTP/1.1\r\nhost: third\r\n\r\n");
    assert_eq!(next.headers().collect::<Vec<_>>(), [("host", &b"third"[..])]);
    // Requests still held are untouched by the ones parsed after them.
    assert_eq!(short.target(), "/b");
    assert_eq!(kept.target(), "/a/long/path");
    assert_eq!(kept.header("x-two"), Some("2"));
    assert_eq!(kept.content_length(), Some(3));
}
