//! HTTP/1.1 conformance against the running master and built-in app, over
//! raw sockets: every rejected request gets one short response with the
//! right status and `Connection: close`, then the connection closes.

mod util;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use util::*;

/// Sends `request`, reads exactly one response, and reports whether the
/// server then closed the connection.
fn one_response(server: &Server, request: &[u8]) -> (Resp, bool) {
    let mut reader = Reader::new(server.connect());
    reader.get_mut().write_all(request).unwrap();
    let resp = reader.response(request.starts_with(b"HEAD")).unwrap();
    let closed = reader.at_eof();
    (resp, closed)
}

fn assert_rejected(server: &Server, name: &str, request: &[u8], status: u16) {
    let (resp, closed) = one_response(server, request);
    assert_eq!(resp.status, status, "{name}: status");
    assert_eq!(resp.header("connection"), Some("close"), "{name}: Connection: close");
    assert!(closed, "{name}: connection closed after the error response");
}

#[test]
fn rejected_requests_get_their_status_and_a_close() {
    let server = Server::start(&["--workers", "2", "--max-body-bytes", "1000"]);
    let cases: &[(&str, &[u8], u16)] = &[
        (
            "CL+TE",
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        ("differing CL", b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
        ("CL with sign", b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: +2\r\n\r\nab", 400),
        ("CL junk", b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2a\r\n\r\nab", 400),
        ("TE not chunked last", b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400),
        ("TE unknown coding", b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ("TE in HTTP/1.0", b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (
            "bad chunk size",
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        (
            "chunk size overflow",
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\n",
            400,
        ),
        (
            "chunk missing CRLF",
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            400,
        ),
        ("missing Host", b"GET / HTTP/1.1\r\n\r\n", 400),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("space before colon", b"GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n", 400),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400),
        ("NUL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n", 400),
        ("bad method", b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("bad version", b"GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400),
        ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ("unknown expectation", b"GET / HTTP/1.1\r\nHost: a\r\nExpect: tea\r\n\r\n", 417),
        ("CL over max body", b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n", 413),
        ("chunked over max body", b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n", 413),
        ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
        // The server does not tunnel.
        ("CONNECT", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501),
        ("CONNECT without a port", b"CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ];
    for (name, request, status) in cases {
        assert_rejected(&server, name, request, *status);
    }
}

#[test]
fn size_limits_from_flags() {
    let server =
        Server::start(&["--workers", "1", "--max-request-line", "64", "--max-head-bytes", "256", "--max-headers", "4"]);
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(100));
    assert_rejected(&server, "414", long_uri.as_bytes(), 414);
    let big_head = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "h".repeat(300));
    assert_rejected(&server, "431 bytes", big_head.as_bytes(), 431);
    assert_rejected(&server, "431 count", b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", 431);
    // Limits do not reject what fits.
    let (ok, _) = one_response(&server, b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nConnection: close\r\n\r\n");
    assert_eq!(ok.status, 200);
}

#[test]
fn chunked_framing_limits_from_flags() {
    let server = Server::start(&["--workers", "1", "--max-chunk-ext-bytes", "16", "--max-trailer-bytes", "32"]);
    let post = |chunks: &str| {
        format!("POST /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}")
    };
    // One chunk's extensions (11 bytes) fit; two chunks' together do not.
    let (ok, _) = one_response(&server, post("2;abcdefghij\r\nhi\r\n0\r\n\r\n").as_bytes());
    assert_eq!((ok.status, ok.body.as_slice()), (200, &b"hi"[..]));
    assert_rejected(
        &server,
        "chunk extensions",
        post("2;abcdefghij\r\nhi\r\n2;abcdefghij\r\nhi\r\n0\r\n\r\n").as_bytes(),
        400,
    );
    // One trailer line (23 bytes) fits; two do not.
    let (ok, _) = one_response(&server, post("2\r\nhi\r\n0\r\nX-Trailer: 0123456789\r\n\r\n").as_bytes());
    assert_eq!(ok.status, 200);
    let long = post("2\r\nhi\r\n0\r\nX-Trailer: 0123456789\r\nX-Trailer: 0123456789\r\n\r\n");
    assert_rejected(&server, "trailers", long.as_bytes(), 431);
}

#[test]
fn an_unsized_response_to_http_1_0_is_delimited_by_the_close() {
    // HTTP/1.0 has no chunked coding: a response without a length is sent
    // as is, and the end of the connection marks its end, even when the
    // client asked for keep-alive.
    let faults = bin("faults");
    let server = Server::start(&["--workers", "1", "--", faults.to_str().unwrap()]);
    for request in [&b"GET /chunked HTTP/1.0\r\n\r\n"[..], b"GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"] {
        let raw = exchange_raw(&server, request);
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").expect("a whole head");
        assert!(head.starts_with("HTTP/1.1 200 "), "{text}");
        let head = head.to_ascii_lowercase();
        assert!(!head.contains("transfer-encoding") && !head.contains("content-length"), "{text}");
        assert!(!head.contains("connection: keep-alive"), "{text}");
        assert_eq!(body, "hello", "the body as written, no chunk framing");
    }
}

#[test]
fn a_smuggled_second_request_is_never_answered() {
    let server = Server::start(&["--workers", "1"]);
    let attack = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let raw = exchange_raw(&server, attack);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "exactly one response: {text}");

    // CL.CL: two differing Content-Lengths, one of which would make the
    // second request a body. Rejected whole; nothing after it is read.
    let attack = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 36\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let raw = exchange_raw(&server, attack);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(text.contains("Connection: close\r\n"), "{text}");
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "exactly one response: {text}");
}

#[test]
fn expect_100_continue_is_sent_when_the_handler_reads_the_body() {
    let server = Server::start(&["--workers", "1"]);
    let mut s = server.connect();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").unwrap();
    let mut reader = Reader::new(s);
    let resp = reader.response(false).unwrap();
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"hello"[..]));
}

#[test]
fn no_100_continue_when_the_handler_answers_without_reading() {
    let server = Server::start(&["--workers", "1"]);
    let mut s = server.connect();
    // The built-in app answers POST / with 404 and never reads the body.
    s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 404 "), "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
    assert!(text.contains("Connection: close"), "the unsent body makes the connection unusable: {text}");
}

#[test]
fn an_unread_body_is_drained_before_the_next_pipelined_request() {
    let server = Server::start(&["--workers", "1"]);
    let mut reader = Reader::new(server.connect());
    // POST / is answered 404 without reading its body; the body must not be
    // mistaken for the next request.
    reader
        .get_mut()
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 31\r\n\r\nGET /evil HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(reader.response(false).unwrap().status, 404);
    let second = reader.response(false).unwrap();
    assert_eq!((second.status, second.body.as_slice()), (200, &b"Hello, world!"[..]));

    // A chunked unread body is drained too.
    reader
        .get_mut()
        .write_all(b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(reader.response(false).unwrap().status, 404);
    assert_eq!(reader.response(false).unwrap().status, 200);
}

#[test]
fn an_undrainable_body_is_announced_in_the_response_head() {
    let server = Server::start(&["--workers", "1", "--max-drain-bytes", "1000"]);
    let mut reader = Reader::new(server.connect());
    // Only the head arrives; the answer must say the connection ends, and
    // the body we then send must not reset the connection under it.
    reader.get_mut().write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n").unwrap();
    let resp = reader.response(false).unwrap();
    assert_eq!(resp.status, 404);
    assert_eq!(resp.header("connection"), Some("close"));
    reader.get_mut().write_all(&vec![b'x'; 100_000]).unwrap();
    // The server lingers, discarding what comes, then closes: a FIN after
    // our last byte, not a reset.
    assert_eq!(reader.ending(), Ending::Closed);
}

#[test]
fn an_unread_body_over_the_drain_limit_closes_the_connection() {
    let server = Server::start(&["--workers", "1", "--max-drain-bytes", "1000"]);
    let mut reader = Reader::new(server.connect());
    reader.get_mut().write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n").unwrap();
    reader.get_mut().write_all(&vec![b'x'; 5000]).unwrap();
    let resp = reader.response(false).unwrap();
    assert_eq!(resp.status, 404);
    assert_eq!(resp.header("connection"), Some("close"), "the unread body is over the drain limit");
    // Closed, rather than waiting for the other 95 kB of the body: a
    // server that kept the connection to drain it would time out the read.
    assert_eq!(reader.ending(), Ending::Closed);
}

#[test]
fn no_body_for_204_and_304_and_a_short_body_closes() {
    let faults = bin("faults");
    let server = Server::start(&["--workers", "1", "--", faults.to_str().unwrap()]);
    for status in [204u16, 304] {
        let mut reader = Reader::new(server.connect());
        reader
            .get_mut()
            .write_all(
                format!("GET /status?{status} HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
            )
            .unwrap();
        let resp = reader.response(false).unwrap();
        assert_eq!(resp.status, status);
        if status == 204 {
            assert_eq!(resp.header("content-length"), None, "no Content-Length in a 204");
        }
        // The next response starts right after the head: no stray body bytes.
        let next = reader.response(false).unwrap();
        assert_eq!(next.status, 200, "{status}: body bytes leaked into the stream");
    }
    // Fewer bytes than the declared Content-Length: the connection closes
    // instead of the next response being read as the rest of this body.
    let raw = exchange_raw(&server, b"GET /short HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.ends_with("12345"), "{text}");
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");
}

#[test]
fn a_body_error_after_the_response_started_just_closes() {
    let server = Server::start(&["--workers", "1"]);
    let mut s = server.connect();
    let mut req = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    // More than the echo holds back (64 KiB), so the 200 is on its way,
    // then a broken chunk.
    for _ in 0..20 {
        req.extend_from_slice(format!("{:x}\r\n", 4096).as_bytes());
        req.extend_from_slice(&[b'a'; 4096]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"zz\r\n");
    let mut w = s.try_clone().unwrap();
    let t = std::thread::spawn(move || {
        let _ = w.write_all(&req);
    });
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    t.join().unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 "), "{}", &text[..text.len().min(200)]);
    assert!(!text.contains("HTTP/1.1 400"), "no second status line after the first was sent");
    assert!(!text.ends_with("0\r\n\r\n"), "the chunked body is not terminated: the client sees the failure");
}

#[test]
fn max_requests_per_connection() {
    let server = Server::start(&["--workers", "1", "--max-requests-per-conn", "3"]);
    let mut reader = Reader::new(server.connect());
    for i in 1..=3 {
        reader.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let resp = reader.response(false).unwrap();
        assert_eq!(resp.header("connection"), if i == 3 { Some("close") } else { None });
    }
    assert!(reader.at_eof());
}

#[test]
fn timeouts_close_slow_and_idle_connections() {
    let server =
        Server::start(&["--workers", "1", "--head-timeout", "1s", "--idle-timeout", "1s", "--body-timeout", "1s"]);
    let started = Instant::now();
    // Idle keep-alive connection: closed silently.
    let mut idle = Reader::new(server.connect());
    idle.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    idle.response(false).unwrap();
    // Half a head: 408, then closed.
    let mut partial = server.connect();
    partial.write_all(b"GET / HTTP/1.1\r\nHost:").unwrap();
    // Half a body: 408 too (the echo reads before it answers).
    let mut body = server.connect();
    body.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc").unwrap();

    assert!(idle.at_eof(), "idle connection closed");
    let mut got = Vec::new();
    partial.read_to_end(&mut got).unwrap();
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 408 "), "{}", String::from_utf8_lossy(&got));
    let mut got = Vec::new();
    let _ = body.read_to_end(&mut got);
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 408 "), "{}", String::from_utf8_lossy(&got));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after the timeouts: {waited:?}"
    );
}

#[test]
fn slowloris_connections_do_not_delay_others_and_are_closed() {
    let server = Server::start(&["--workers", "1", "--head-timeout", "3s"]);
    let mut trickles: Vec<_> = (0..50).map(|_| server.connect()).collect();
    let stop_at = Instant::now() + Duration::from_secs(6);
    let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ";
    let mut sent = 0;
    let mut slowest = Duration::ZERO;
    let mut closed = vec![false; trickles.len()];
    while Instant::now() < stop_at && closed.iter().any(|c| !c) {
        // One byte per connection per round...
        for (i, s) in trickles.iter_mut().enumerate() {
            if !closed[i] && s.write_all(&[head[sent.min(head.len() - 1)]]).is_err() {
                closed[i] = true;
            }
        }
        sent += 1;
        // ...while a normal client is served promptly.
        let t = Instant::now();
        let (resp, _) = one_response(&server, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert_eq!(resp.status, 200);
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(500));
    }
    // Served in far less than the 3 s head timeout the trickles could
    // hold a worker for.
    assert!(slowest < Duration::from_secs(2), "a normal request took {slowest:?} during the slowloris");
    // Past the head timeout every trickling connection was closed (a 408,
    // then EOF), whether or not our writes noticed yet.
    for (i, s) in trickles.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut got = Vec::new();
        let r = s.read_to_end(&mut got);
        assert!(r.is_ok() || closed[i], "slowloris connection {i} still open after the head timeout: {r:?}");
    }
}

#[test]
fn a_client_that_half_closes_after_its_request_is_answered_and_closed_at_once() {
    // The request and the client's FIN often arrive together: the server
    // must see the end of the stream right after answering, not at its
    // next timer (the buffer release stage is 1 s).
    let server = Server::start(&["--workers", "1"]);
    for i in 0..20 {
        let mut s = server.connect();
        let started = Instant::now();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        let took = started.elapsed();
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200 "), "{}", String::from_utf8_lossy(&got));
        // Missing the FIN would mean waiting for the next 1 s timer.
        assert!(took < Duration::from_millis(900), "connection {i} closed after {took:?}");
    }
}

#[test]
fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let server = Server::start(&["--workers", "1", "--write-timeout", "1s"]);
    let mut s = server.connect();
    // Upload a large body to /echo and never read the echo: the server's
    // writes stall, it gives up, and our upload fails.
    let len = 64 << 20;
    s.write_all(format!("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n").as_bytes()).unwrap();
    let chunk = vec![b'w'; 1 << 16];
    let started = Instant::now();
    let mut failed = false;
    for _ in 0..(len / chunk.len()) {
        if s.write_all(&chunk).is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "the server kept the stalled connection");
    assert!(started.elapsed() < Duration::from_secs(9), "dropped in {:?}", started.elapsed());
}

#[test]
fn a_connection_quiet_past_the_buffer_release_is_served_and_still_times_out_on_time() {
    // Quiet for more than a second, a connection gives its buffers back and
    // waits without them; its next request and its idle timeout must not
    // notice.
    let server = Server::start(&["--workers", "1", "--idle-timeout", "3s"]);
    let mut r = Reader::new(server.connect());
    r.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(r.response(false).unwrap().status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    r.get_mut().write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Le").unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    r.get_mut().write_all(b"ngth: 5\r\n\r\nhel").unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    r.get_mut().write_all(b"loGET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let echo = r.response(false).unwrap();
    assert_eq!((echo.status, echo.body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(r.response(false).unwrap().status, 200);
    let idle_from = Instant::now();
    assert!(wait_until(Duration::from_secs(6), || r.at_eof()), "closed at the idle timeout");
    let idle = idle_from.elapsed();
    assert!(idle > Duration::from_millis(2500) && idle < Duration::from_millis(4000), "idle timeout after {idle:?}");
}
