//! Idle keep-alive connections park without a coroutine after
//! `--park-idle-after` and are resumed on a fresh handler call: what the
//! connection carries (request count, client address, idle timeout) must
//! survive the move, and drains must treat parked connections as the idle
//! connections they are.

mod util;

use std::io::Write;
use std::time::{Duration, Instant};

use util::*;

fn faults() -> String {
    bin("faults").to_string_lossy().into_owned()
}

/// `/nth` on `r`: the index of this request within the current handler call.
fn nth<S: std::io::Read + Write>(r: &mut Reader<S>) -> (u64, Resp) {
    r.get_mut().write_all(b"GET /nth HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let resp = r.response(false).unwrap();
    assert_eq!(resp.status, 200);
    (String::from_utf8_lossy(&resp.body).parse().unwrap(), resp)
}

fn open_connections(server: &Server) -> u64 {
    let json = status_json(server);
    json["workers"].as_array().unwrap().iter().map(|w| w["connections"].as_u64().unwrap()).sum()
}

#[test]
fn a_parked_connection_resumes_on_a_new_handler_call_with_its_request_count() {
    let f = faults();
    let server =
        Server::start(&["--workers", "1", "--max-requests-per-conn", "4", "--park-idle-after", "200ms", "--", &f]);
    let mut r = Reader::new(server.connect());
    assert_eq!(nth(&mut r).0, 1);
    assert_eq!(nth(&mut r).0, 2);
    // Quiet well past --park-idle-after: the handler's loop ends and the
    // socket waits in the worker's parking lot, still counted as open.
    std::thread::sleep(Duration::from_millis(1000));
    assert!(wait_until(Duration::from_secs(3), || open_connections(&server) == 1), "parked connection not counted");
    let (n, resp) = nth(&mut r);
    assert_eq!(n, 1, "the next request starts a new handler call");
    assert_eq!(resp.header("connection"), None, "third of four requests keeps the connection");
    // The connection's request count survived the move: the 4th request is
    // its last.
    let (n, resp) = nth(&mut r);
    assert_eq!(n, 2);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(r.at_eof(), "closed after --max-requests-per-conn");
}

#[test]
fn with_parking_off_one_handler_call_serves_the_whole_connection() {
    let f = faults();
    let server = Server::start(&["--workers", "1", "--park-idle-after", "0", "--", &f]);
    let mut r = Reader::new(server.connect());
    assert_eq!(nth(&mut r).0, 1);
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(nth(&mut r).0, 2);
}

#[test]
fn parked_connections_keep_their_idle_timeout_pipelining_and_client_address() {
    let f = faults();
    let server = Server::start(&[
        "--workers",
        "1",
        "--park-idle-after",
        "300ms",
        "--idle-timeout",
        "2s",
        "--proxy-protocol",
        "--",
        &f,
    ]);
    let mut r = Reader::new(server.connect());
    r.get_mut()
        .write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 80\r\nGET /nth HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(r.response(false).unwrap().body, b"1");
    std::thread::sleep(Duration::from_millis(800));
    // Woken by a pipelined pair, sent in two pieces.
    r.get_mut().write_all(b"GET /peer HTTP/1.1\r\nHost: a\r\n\r\nGET /n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    r.get_mut().write_all(b"th HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(r.response(false).unwrap().body, b"203.0.113.7:40000", "the PROXY address survives parking");
    assert_eq!(r.response(false).unwrap().body, b"2");
    // Quiet again: parked after 300 ms, closed 2 s after it went idle.
    let idle_from = Instant::now();
    assert!(wait_until(Duration::from_secs(5), || r.at_eof()), "closed at the idle timeout");
    let idle = idle_from.elapsed();
    assert!(idle > Duration::from_millis(1500) && idle < Duration::from_millis(3000), "idle timeout after {idle:?}");
}

#[test]
fn sigterm_closes_parked_connections_at_once_and_finishes_in_flight_requests() {
    let f = faults();
    let mut server = Server::start(&["--workers", "1", "--park-idle-after", "200ms", "--", &f]);
    let (mut parked, mut witness) = (Reader::new(server.connect()), Reader::new(server.connect()));
    assert_eq!(nth(&mut parked).0, 1);
    assert_eq!(nth(&mut witness).0, 1);
    std::thread::sleep(Duration::from_millis(1000));
    // Its twin, idle as long, was parked: its next request starts a new
    // handler call.
    assert_eq!(nth(&mut witness).0, 1, "connections idle this long are parked");
    let mut busy = Reader::new(server.connect());
    busy.get_mut().write_all(b"GET /sleep?5000 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    parked.get_mut().set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let stop = Instant::now();
    server.signal(libc::SIGTERM);
    // Within the 1 s read timeout (`ending` panics past it), while the
    // in-flight request has seconds to go.
    assert_eq!(parked.ending(), Ending::Closed, "parked connection closed at once");
    assert!(stop.elapsed() < Duration::from_secs(1));
    let resp = busy.response(false).unwrap();
    assert_eq!((resp.status, resp.header("connection")), (200, Some("close")));
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    // Exits once the request is done, long before the 30 s graceful timeout.
    assert!(stop.elapsed() < Duration::from_secs(10), "stop took {:?}", stop.elapsed());
}

#[test]
fn a_parked_connection_that_wakes_during_a_reload_is_answered_by_its_old_worker() {
    let f = faults();
    let server = Server::start(&["--workers", "1", "--park-idle-after", "200ms", "--", &f]);
    let old = server.worker_pids();
    let mut r = Reader::new(server.connect());
    assert_eq!(nth(&mut r).0, 1);
    std::thread::sleep(Duration::from_millis(1000));
    server.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || server.stderr().contains("reload complete")),
        "no reload; stderr:\n{}",
        server.stderr()
    );
    // "reload complete" means the master told the old worker to stop; the
    // worker hears it a moment later. Its log line says the drain is on.
    assert!(
        wait_until(Duration::from_secs(5), || server.draining_logged(old[0])),
        "old worker never drained; stderr:\n{}",
        server.stderr()
    );
    // Inside the retiring worker's idle grace: its client's request is
    // served, with Connection: close, rather than reset.
    r.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let resp = r.response(false).unwrap();
    assert_eq!((resp.status, resp.header("connection")), (200, Some("close")));
    assert_eq!(String::from_utf8_lossy(&resp.body), format!("ok {}\n", old[0]));
    assert!(r.at_eof());
    assert!(wait_until(Duration::from_secs(10), || !alive(old[0])), "old worker exited");
}

#[test]
fn a_unix_socket_connection_parks_and_resumes_too() {
    let f = faults();
    let sock = temp_path("park.sock");
    let bind = format!("unix:{}", sock.display());
    let _server = Server::start(&["--workers", "1", "--bind", &bind, "--park-idle-after", "300ms", "--", &f]);
    let stream = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = Reader::new(stream);
    assert_eq!(nth(&mut r).0, 1);
    assert_eq!(nth(&mut r).0, 2);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(nth(&mut r).0, 1, "resumed on a new handler call");
    assert_eq!(nth(&mut r).0, 2);
}
