//! Long streaming responses, and the backpressure that keeps them cheap.
//!
//! Run it under the master: `http-cluster -- target/release/stream`, then
//! `curl -N 'http://127.0.0.1:8080/events?count=5&interval_ms=500'` or
//! `curl -o /dev/null 'http://127.0.0.1:8080/bytes?n=1073741824'`.
//!
//! - `GET /events?count=N&interval_ms=M` (defaults 10 and 1000):
//!   server-sent events (`text/event-stream`, chunked), one
//!   `id: i` / `data: tick i` event every M ms, each flushed as soon as it
//!   is written. Between events the coroutine waits with
//!   `may::coroutine::sleep`, so the worker's other connections keep
//!   running (`std::thread::sleep` would stop them all). A client that
//!   reconnects with `Last-Event-ID: i` resumes after event i; one that
//!   has seen the last event gets `204`, which tells an `EventSource` to
//!   stop reconnecting.
//! - `GET /bytes?n=N` (default 1 MiB): N bytes, sent chunked in 64 KiB
//!   pieces. Byte i is `i % 251`, so a client can check every byte.
//!
//! **Backpressure.** `write.body` returns only once the kernel took the
//! bytes; while the client's socket buffer is full, the write parks this
//! coroutine (other connections run) and nothing more is produced. A
//! client that stops reading a 1 GiB stream costs the socket buffers, not a
//! GiB of worker memory; after the server's write timeout (30 s by
//! default) the connection is dropped. A client that goes away makes the
//! next write fail: the handler returns the error, that connection closes,
//! the worker goes on.
//!
//! GET and HEAD only (HEAD answers the head alone); other methods `405`,
//! unknown paths `404`, bad parameters `400`.

use std::fmt;
use std::io;
use std::sync::LazyLock;
use std::time::Duration;

use http_cluster::{Request, Requests, Response, Responses};

/// Bytes per write of `/bytes`: one write per piece, large enough to go
/// straight from the pattern to the socket without a copy.
const PIECE: usize = 64 * 1024;

/// The period of the `/bytes` pattern (a prime, so it never lines up with
/// piece or buffer sizes and a misplaced piece shows).
const PERIOD: usize = 251;

/// Pieces written between voluntary yields: on a fast link writes never
/// wait, and may schedules cooperatively, so a stream that never yields
/// would keep the worker's other connections waiting.
const PIECES_PER_YIELD: u32 = 16;

/// Caps on `/events` parameters: typo guards (a stream of 10^9 events or a
/// week between two is not what anyone meant), not resource limits.
const MAX_EVENTS: u64 = 1_000_000;
const MAX_INTERVAL_MS: u64 = 60_000;

/// One piece of the pattern, plus a period so that a piece can start at
/// any phase: the piece at stream offset o is `PATTERN[o % PERIOD..][..len]`.
static PATTERN: LazyLock<Vec<u8>> = LazyLock::new(|| (0..PIECE + PERIOD).map(|i| (i % PERIOD) as u8).collect());

fn main() {
    http_cluster::worker::run(app)
}

fn app(read: &Requests, write: &Responses) -> io::Result<()> {
    for req in read {
        if !matches!(req.method(), "GET" | "HEAD") {
            refuse(write, Response::new(405).header("Allow", "GET, HEAD"), "only GET and HEAD are allowed\n")?;
            continue;
        }
        let params = Params(req.query().unwrap_or(""));
        match req.path() {
            "/events" => match EventsRequest::from(&req, params) {
                Ok(events) => send_events(&req, write, events)?,
                Err(e) => refuse(write, Response::new(400), &format!("{e}\n"))?,
            },
            "/bytes" => match params.number("n", 1 << 20, u64::MAX) {
                Ok(n) => send_bytes(&req, write, n)?,
                Err(e) => refuse(write, Response::new(400), &format!("{e}\n"))?,
            },
            _ => refuse(write, Response::new(404), "not found: try /events or /bytes\n")?,
        }
    }
    Ok(())
}

/// What `/events` was asked for.
struct EventsRequest {
    /// The first event to send (after a `Last-Event-ID`).
    first: u64,
    count: u64,
    interval: Duration,
}

impl EventsRequest {
    fn from(req: &Request, params: Params<'_>) -> Result<EventsRequest, ParamError> {
        let count = params.number("count", 10, MAX_EVENTS)?;
        let interval = Duration::from_millis(params.number("interval_ms", 1000, MAX_INTERVAL_MS)?);
        // Resume after the last event the client saw (after the last one:
        // the stream is over). An id this server did not send (not a
        // number, or not below `count`) is ignored: start over.
        let first = req
            .header("last-event-id")
            .and_then(|id| id.trim().parse::<u64>().ok())
            .and_then(|id| id.checked_add(1))
            .filter(|&next| next <= count)
            .unwrap_or(0);
        Ok(EventsRequest { first, count, interval })
    }
}

fn send_events(req: &Request, write: &Responses, events: EventsRequest) -> io::Result<()> {
    if events.first >= events.count {
        // The client saw the whole stream: 204 stops EventSource's reconnects.
        return write.head(Response::new(204)).and_then(|()| write.end());
    }
    let head = Response::new(200)
        .content_type("text/event-stream")
        .header("Cache-Control", "no-cache")
        // nginx buffers proxied responses by default, which would hold
        // events back; this header turns that off for this response.
        .header("X-Accel-Buffering", "no");
    write.head(head)?;
    if req.is_head() {
        return write.end();
    }
    for id in events.first..events.count {
        if id > events.first {
            pause(events.interval);
        }
        write.body(format!("id: {id}\ndata: tick {id}\n\n").as_bytes())?;
        // Small writes wait in the output buffer until it fills; an event
        // must leave now.
        write.flush()?;
    }
    write.end()
}

/// Waits between events without holding the worker's thread.
fn pause(interval: Duration) {
    if interval.is_zero() {
        may::coroutine::yield_now();
    } else {
        may::coroutine::sleep(interval);
    }
}

fn send_bytes(req: &Request, write: &Responses, n: u64) -> io::Result<()> {
    // No Content-Length: the body goes out chunked, as a generated stream
    // of unknown length would.
    write.head(Response::new(200).content_type("application/octet-stream"))?;
    if req.is_head() {
        return write.end();
    }
    let mut sent = 0u64;
    let mut pieces = 0u32;
    while sent < n {
        let len = (n - sent).min(PIECE as u64) as usize;
        let phase = (sent % PERIOD as u64) as usize;
        // Blocks (parks the coroutine) while the client does not read.
        write.body(&PATTERN[phase..phase + len])?;
        sent += len as u64;
        pieces += 1;
        if pieces.is_multiple_of(PIECES_PER_YIELD) {
            may::coroutine::yield_now();
        }
    }
    write.end()
}

fn refuse(write: &Responses, head: Response<'_>, text: &str) -> io::Result<()> {
    write.respond(head.content_type("text/plain; charset=utf-8"), text.as_bytes())
}

/// A query string, `name=value&…` (the parameters here are numbers, so no
/// percent-decoding is needed).
#[derive(Clone, Copy)]
struct Params<'q>(&'q str);

/// A parameter that cannot be used.
#[derive(Debug)]
enum ParamError {
    NotANumber(&'static str),
    TooLarge { name: &'static str, max: u64 },
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamError::NotANumber(name) => write!(f, "{name} must be a whole number"),
            ParamError::TooLarge { name, max } => write!(f, "{name} must be at most {max}"),
        }
    }
}

impl Params<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.split('&').filter_map(|pair| pair.split_once('=')).find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Parameter `name` as a number up to `max`; `default` when absent.
    fn number(&self, name: &'static str, default: u64, max: u64) -> Result<u64, ParamError> {
        let Some(value) = self.get(name) else { return Ok(default) };
        let n: u64 = value.parse().map_err(|_| ParamError::NotANumber(name))?;
        if n > max { Err(ParamError::TooLarge { name, max }) } else { Ok(n) }
    }
}
