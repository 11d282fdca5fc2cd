//! One HTTP connection's life: the request decoder and response encoder
//! that `chain` wires around the handler, keep-alive, draining unread
//! bodies, `100 Continue`, timeouts, and one error response then close.
//!
//! The decoder and encoder of a connection share an [`Exchange`]: what the
//! encoder needs to know about the request being answered (HEAD? HTTP/1.0?
//! keep-alive?) and what the decoder needs to know about the response
//! before it reads the next request (finished? keep the connection?).

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use slab::Slab;

use crate::access_log::{self, AccessLog, Entry};
use crate::alarm::Alarms;
use crate::clock::Moment;
use crate::codec::{Decoded, Decoder, Encoder, Filled, Read, StreamError, Write, chain};
use crate::config::Limits;
use crate::io::{Close, Io, ReadBuf};
use crate::net::{FirstRead, Stream};
use crate::park::{Parked, ParkingLot};
use crate::proto::decode::{BodyDecoder, BodyLimits, Chunk};
use crate::proto::encode::{self, EncodeError, Framing, RequestInfo, Response};
use crate::proto::head::{self, BodyKind, Request};
use crate::proto::proxy::{self, Proxied, ProxyError};
use crate::proto::{self, date};

/// The read side a handler gets: `for req in read { … }`.
pub type Requests<'io> = Read<'io, RequestDecoder<'io>>;
/// The write side a handler gets: `write.head(…)`, `write.body(…)`.
pub type Responses<'io> = Write<'io, ResponseEncoder<'io>>;

/// A request handler: a plain function of the read and write sides. It is
/// called once per burst of requests: when a connection sits idle past
/// `--park-idle-after`, the `for req in read` loop ends, and if the handler
/// then returns `Ok`, the connection parks and a later request calls it
/// again ([`Read::is_parked`] tells this apart from the end of the
/// connection).
pub trait App: Fn(&Requests<'_>, &Responses<'_>) -> io::Result<()> + Send + Sync + 'static {}
impl<F> App for F where F: Fn(&Requests<'_>, &Responses<'_>) -> io::Result<()> + Send + Sync + 'static {}

/// Process-wide state the connections of a worker share: the drain flag,
/// counters reported to the master, and the open connections (so a drain can
/// close the idle ones at once).
#[derive(Debug, Default)]
pub struct ServerState {
    /// Set when the worker stops: in-flight requests are answered with
    /// `Connection: close` and no further request is read.
    pub draining: AtomicBool,
    /// Set when idle connections are to close rather than wait for one
    /// more request (the end of a drain's idle grace).
    closing_idle: AtomicBool,
    pub connections: AtomicUsize,
    pub requests: AtomicU64,
    /// A slab, not a map: its key is the entry's index, so registering
    /// and releasing hash nothing (SipHash and the probe were about 100
    /// instructions per connection, callgrind).
    open: Mutex<Slab<Arc<ConnSlot>>>,
    /// The deadlines of the open connections' waits, rung by the worker's
    /// sweep.
    pub alarms: Arc<Alarms>,
    /// Where idle connections wait without a coroutine; unset (tests, or a
    /// worker that could not create it): connections idle on their own
    /// coroutine.
    pub parking: OnceLock<ParkingLot>,
}

/// One counted connection (see [`ServerState::admit`]).
#[derive(Debug)]
pub struct Admission(Arc<ServerState>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A registered connection: its socket and whether it waits for a request.
#[derive(Debug)]
struct ConnSlot {
    fd: RawFd,
    idle: AtomicBool,
}

impl ConnSlot {
    /// Clears the idle mark. Only a change is stored: the store must be
    /// sequentially consistent (see [`ServerState::close_idle`]), which is
    /// a locked instruction, and a pipelined batch would otherwise pay it
    /// per request. Only the connection itself writes its mark, so the
    /// relaxed load sees its own last store.
    fn set_busy(&self) {
        if self.idle.load(Ordering::Relaxed) {
            self.idle.store(false, Ordering::SeqCst);
        }
    }
    /// Shuts the connection's read side, unless input already waits in the
    /// socket: how a drain closes an idle connection without a reset (its
    /// loop reads what is queued, then sees the end of the stream). Input
    /// waiting may be the first part of a request whose rest is still on
    /// its way; after a shut, a read that finds the queue empty says "end
    /// of stream", so that rest would never be read and the request would
    /// go unanswered. Such a connection is left open: it is answered with
    /// `Connection: close` like any other during a drain. (Input arriving
    /// between the look and the shut is the ordinary keep-alive race.)
    fn shut_read_if_quiet(&self) {
        if !crate::net::input_waiting(self.fd) {
            let _ = nix::sys::socket::shutdown(self.fd, nix::sys::socket::Shutdown::Read);
        }
    }
}

/// A connection's entry in its worker's registry, through which
/// [`ServerState::close_idle`] reaches the connection's socket by number.
/// The entry must go before the socket closes, or `close_idle` could shut
/// down an unrelated connection that reused the number. So it is created
/// after the connection's [`Io`] and is always dropped before it (also
/// when a panic unwinds past the handler's guard); the normal paths
/// release it explicitly before they close or park the socket.
#[derive(Debug)]
struct Registration {
    server: Arc<ServerState>,
    key: usize,
    slot: Arc<ConnSlot>,
    active: Cell<bool>,
}

impl Registration {
    fn release(&self) {
        if self.active.replace(false) {
            // The registry lock is what keeps `close_idle` from touching a
            // descriptor number after this returns.
            self.server.open.lock().unwrap_or_else(|p| p.into_inner()).remove(self.key);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.release();
    }
}

impl ServerState {
    /// Registers the connection whose socket `io` holds.
    fn register(self: &Arc<Self>, io: &Io) -> Registration {
        let slot = Arc::new(ConnSlot { fd: io.as_raw_fd(), idle: AtomicBool::new(true) });
        let key = self.open.lock().unwrap_or_else(|p| p.into_inner()).insert(slot.clone());
        Registration { server: self.clone(), key, slot, active: Cell::new(true) }
    }

    /// Counts an accepted connection until the returned token is dropped:
    /// taken in the accept loop before the connection's coroutine exists,
    /// dropped after its last byte is flushed, so a draining worker never
    /// exits with a connection accepted but unserved or a response unsent.
    pub fn admit(self: &Arc<Self>) -> Admission {
        self.connections.fetch_add(1, Ordering::SeqCst);
        Admission(self.clone())
    }

    /// Starts a drain: every response from now on says `Connection: close`,
    /// and a connection that finishes its exchange closes instead of
    /// waiting for another request.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Closes the connections idling between requests (their read side is
    /// shut, so their coroutine sees end-of-stream and exits). Connections
    /// that go idle later close by themselves: a decoder marks itself idle
    /// before it checks `closing_idle`, and we set that flag before reading
    /// the idle marks, so one of the two always sees the other. Until then
    /// a draining worker's idle connections wait: one whose last response
    /// still promised keep-alive may have the client's next request already
    /// in flight, which gets answered (with `Connection: close`) instead of
    /// a reset.
    pub fn close_idle(&self) {
        self.closing_idle.store(true, Ordering::SeqCst);
        if let Some(lot) = self.parking.get() {
            lot.close_all();
        }
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for (_, slot) in open.iter() {
            if slot.idle.load(Ordering::SeqCst) {
                slot.shut_read_if_quiet();
            }
        }
    }
}

/// `100 Continue` bookkeeping (RFC 9110 §10.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Continue {
    NotExpected,
    /// The client waits for `100 Continue` before sending the body.
    Pending,
    Sent,
}

/// How much of the current request's body has not been read yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unread {
    Nothing,
    Bytes(u64),
    /// A chunked body not yet at its end.
    Unknown,
}

/// Where the response to the current request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Writing {
    /// No request is being answered.
    Idle,
    /// A request was handed to the handler; no response head yet.
    AwaitingHead,
    /// The head is written; the body follows with this framing (for
    /// `Length`, the bytes still owed).
    Body(Framing),
    /// The response is complete.
    Done,
    /// The handler broke the framing (wrote too much): close.
    Broken,
}

/// State shared by the decoder and encoder of one connection.
pub struct Exchange {
    limits: Arc<Limits>,
    body_limits: BodyLimits,
    request: Cell<RequestInfo>,
    writing: Cell<Writing>,
    /// Whether the connection stays open after the current response, as
    /// announced in its head.
    keep_alive: Cell<bool>,
    /// The client said the current request is its last (`Connection:
    /// close`, or HTTP/1.0 without keep-alive): nothing may follow it.
    client_done: Cell<bool>,
    expect: Cell<Continue>,
    /// The protocol error that ended the connection, to be answered.
    error: Cell<Option<proto::Error>>,
    served: Cell<u64>,
    /// How much of `served` the worker's request counter already has: the
    /// counter is a shared atomic, so it is added to once per batch of
    /// requests, when the connection waits for input, rather than once per
    /// request (a locked instruction each).
    counted: Cell<u64>,
    /// When the connection went idle between requests: when it first
    /// waited for the next one. `None` until then, so that answering a
    /// pipelined batch reads the clock once, not once per request.
    idle_since: Cell<Option<Moment>>,
    /// The connection's entry in its worker's registry, and the worker's
    /// shared state. Dropped with the exchange, which `run` declares after
    /// the `Io`.
    registration: Registration,
    /// Body bytes discarded for the current request.
    drained: Cell<u64>,
    unread: Cell<Unread>,
    peer: Option<SocketAddr>,
    /// The access log, and what its line for the current request records.
    access: Option<&'static AccessLog>,
    entry: RefCell<Entry>,
}

impl Exchange {
    fn new(limits: Arc<Limits>, registration: Registration, conn: &ConnState) -> Exchange {
        Exchange {
            body_limits: BodyLimits::from(&*limits),
            limits,
            request: Cell::new(RequestInfo { is_head: false, minor: 1, keep_alive: false }),
            writing: Cell::new(Writing::Idle),
            keep_alive: Cell::new(false),
            client_done: Cell::new(false),
            expect: Cell::new(Continue::NotExpected),
            error: Cell::new(None),
            served: Cell::new(conn.served),
            counted: Cell::new(conn.served),
            idle_since: Cell::new(Some(conn.idle_since)),
            registration,
            drained: Cell::new(0),
            unread: Cell::new(Unread::Nothing),
            peer: conn.peer,
            access: access_log::get(),
            entry: RefCell::new(Entry::default()),
        }
    }

    /// Adds the requests served since the last call to the worker's counter.
    fn count_requests(&self) {
        let served = self.served.get();
        let new = served - self.counted.get();
        if new > 0 {
            self.registration.server.requests.fetch_add(new, Ordering::Relaxed);
            self.counted.set(served);
        }
    }

    /// Writes the access log line of the current request (with `status`
    /// when the server, not the handler, answered). Each request is logged
    /// once; an error answered before any request was parsed is logged with
    /// `"-"` as its request line.
    fn log_access(&self, status: Option<u16>) {
        let Some(log) = self.access else { return };
        let mut entry = self.entry.borrow_mut();
        if !entry.open && status.is_none() {
            return;
        }
        if let Some(s) = status {
            entry.status = s;
        }
        log.record(self.peer, &entry);
        entry.reset();
    }

    /// Counts response body bytes for the access log.
    fn count_body(&self, len: usize) {
        if self.access.is_some() {
            self.entry.borrow_mut().bytes += len as u64;
        }
    }

    /// Completes the response to the previous request before the next one is
    /// read, and decides whether there is a next one. This is the one place
    /// keep-alive is decided once a response exists.
    fn finish_response(&self, output: &mut Vec<u8>) -> bool {
        self.log_access((self.writing.get() == Writing::AwaitingHead).then_some(500));
        let keep = match self.writing.get() {
            Writing::Idle => true,
            Writing::AwaitingHead => {
                log::warn!("handler read the next request without answering the previous one; sending 500");
                let head = self.request.get().is_head;
                encode::encode_plain_close(500, "handler sent no response", &date::now(), head, output);
                false
            }
            Writing::Body(Framing::Chunked) => {
                output.extend_from_slice(encode::LAST_CHUNK);
                self.keep_alive.get()
            }
            Writing::Body(Framing::NoBody | Framing::Length(0)) | Writing::Done => self.keep_alive.get(),
            // A short body or a close-delimited one: only closing the
            // connection ends the message.
            Writing::Body(Framing::Length(_) | Framing::UntilClose) | Writing::Broken => false,
        };
        self.writing.set(if keep { Writing::Idle } else { Writing::Broken });
        keep
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.count_requests();
    }
}

/// Where the request side of the connection is.
enum Reading {
    /// Between requests, since `Exchange::idle_since` (keep-alive idle
    /// timeout).
    Idle,
    /// Receiving a head that started arriving at this instant (head
    /// timeout: the slowloris defence).
    Head { since: Moment },
    /// The handler may read this request's body.
    Body(BodyDecoder),
    /// No further request will be read.
    Closed,
}

/// Decodes requests for `for req in read`; bodies are read through
/// [`Requests::body`].
pub struct RequestDecoder<'a> {
    ex: &'a Exchange,
    reading: Reading,
}

impl RequestDecoder<'_> {
    /// [`RequestDecoder::drain_body`] over what is buffered, on a
    /// connection about to close. Out of line and cold, so that the one
    /// call on every request's path keeps `drain_body` inlined (two calls
    /// had it outlined: some 30 instructions more per request, callgrind).
    #[cold]
    #[inline(never)]
    fn drain_buffered_body(&mut self, input: &mut ReadBuf) {
        let _ = self.drain_body(input);
    }

    /// Discards what the handler left of the previous body so the next
    /// request can be parsed. `Ok(false)`: the connection must close instead.
    #[inline(always)]
    fn drain_body(&mut self, input: &mut ReadBuf) -> Result<Option<bool>, proto::Error> {
        let Reading::Body(body) = &mut self.reading else { return Ok(Some(true)) };
        if body.is_done() {
            self.ex.unread.set(Unread::Nothing);
            return Ok(Some(true));
        }
        // A client still waiting for 100 Continue may or may not send the
        // body now; the connection's framing is unknowable: close.
        if self.ex.expect.get() == Continue::Pending {
            return Ok(Some(false));
        }
        let limit = self.ex.limits.max_drain_bytes;
        loop {
            let drained = self.ex.drained.get();
            if body.remaining().is_some_and(|r| drained.saturating_add(r) > limit) {
                return Ok(Some(false));
            }
            let (n, chunk) = body.decode(input.data())?;
            input.consume(n);
            match chunk {
                Chunk::Data(r) => {
                    let drained = drained.saturating_add(r.len() as u64);
                    self.ex.drained.set(drained);
                    if drained > limit {
                        return Ok(Some(false));
                    }
                }
                Chunk::NeedMore => return Ok(None),
                Chunk::End => {
                    self.ex.unread.set(Unread::Nothing);
                    return Ok(Some(true));
                }
            }
        }
    }

    fn start_request(&mut self, req: &Request) {
        let ex = &self.ex;
        let served = ex.served.get() + 1;
        ex.served.set(served);
        ex.drained.set(0);
        if ex.access.is_some() {
            ex.entry.borrow_mut().start(req);
        }
        let max = ex.limits.max_requests_per_conn;
        let keep_alive =
            req.keep_alive() && (max == 0 || served < max) && !ex.registration.server.draining.load(Ordering::Relaxed);
        ex.request.set(RequestInfo { is_head: req.is_head(), minor: req.version_minor(), keep_alive });
        ex.client_done.set(!req.keep_alive());
        ex.writing.set(Writing::AwaitingHead);
        let unread = match req.body_kind() {
            BodyKind::Empty | BodyKind::Length(0) => Unread::Nothing,
            BodyKind::Length(n) => Unread::Bytes(n),
            BodyKind::Chunked => Unread::Unknown,
        };
        ex.unread.set(unread);
        let pending = req.expects_continue() && unread != Unread::Nothing;
        ex.expect.set(if pending { Continue::Pending } else { Continue::NotExpected });
        self.reading = Reading::Body(BodyDecoder::new(req.body_kind(), ex.body_limits));
    }
}

impl Decoder for RequestDecoder<'_> {
    type Item = Request;
    type Error = proto::Error;

    fn decode(&mut self, input: &mut ReadBuf, output: &mut Vec<u8>) -> Result<Decoded<Request>, proto::Error> {
        if let Reading::Body(_) = self.reading {
            // The handler asked for the next request, so its response is
            // complete: ended here (a chunked one's last chunk) before the
            // rest of the body is drained, so that it leaves with the next
            // flush instead of waiting behind a body that may come slowly
            // or never (and be cut off by the body timeout). The response
            // head already carried the request's keep-alive wish;
            // finish_response is where it is decided. (Called again on each
            // pass while the body drains: once finished, it only repeats
            // its answer.)
            if !self.ex.finish_response(output) {
                // What of the body is already buffered is taken, without
                // waiting for more: a small body that came with its head is
                // then not unread input, which would make the close linger.
                self.drain_buffered_body(input);
                self.reading = Reading::Closed;
                return Ok(Decoded::End);
            }
            match self.drain_body(input) {
                Ok(None) => return Ok(Decoded::NeedMore),
                Ok(Some(true)) => {}
                // A broken body after the handler answered: nothing more to
                // say, just close.
                Ok(Some(false)) | Err(_) => {
                    self.reading = Reading::Closed;
                    return Ok(Decoded::End);
                }
            }
            self.ex.idle_since.set(None);
            self.reading = Reading::Idle;
        }
        match self.reading {
            Reading::Closed | Reading::Body(_) => return Ok(Decoded::End),
            _ => {}
        }
        let parsed = head::parse(input.data(), &self.ex.limits);
        if let Ok(Some((req, n))) = &parsed {
            self.ex.registration.slot.set_busy();
            input.consume(*n);
            self.start_request(req);
        }
        match parsed {
            // Moved out of the parse result only now: moved right after the
            // parser wrote it, the copy's 16-byte loads waited on those
            // narrower stores (5% of the request loop's samples, perf).
            Ok(Some((req, _))) => Ok(Decoded::Item(req)),
            Ok(None) => {
                self.ex.count_requests();
                if input.is_empty() {
                    input.release_if_empty();
                    self.ex.registration.slot.idle.store(true, Ordering::SeqCst);
                    // Idle connections are being closed, and that sweep may
                    // have missed us while we were busy: shut our read side
                    // as it does, unless input waits. Not an end right here:
                    // a connection just handed to this coroutine, or resumed
                    // from the parking lot, has not read its socket yet, and
                    // closing on a request already there would reset the
                    // connection. Input already queued is still read and
                    // answered (with `Connection: close`); then the end of
                    // the stream ends the loop.
                    if self.ex.registration.server.closing_idle.load(Ordering::SeqCst) {
                        self.ex.registration.slot.shut_read_if_quiet();
                    }
                } else {
                    self.ex.registration.slot.set_busy();
                    if let Reading::Idle = self.reading {
                        self.reading = Reading::Head { since: Moment::now() };
                    }
                }
                Ok(Decoded::NeedMore)
            }
            Err(e) => {
                self.ex.error.set(Some(e));
                self.reading = Reading::Closed;
                Err(e)
            }
        }
    }

    fn decode_eof(&mut self, input: &mut ReadBuf) -> Result<Option<Request>, StreamError<proto::Error>> {
        self.reading = Reading::Closed;
        if input.is_empty() { Ok(None) } else { Err(StreamError::Truncated) }
    }

    fn read_deadline(&self, now: Moment) -> Option<Moment> {
        let l = &self.ex.limits;
        match self.reading {
            Reading::Idle => {
                // The idle clock starts at the first wait (see idle_since).
                let since = self.ex.idle_since.get().unwrap_or_else(|| {
                    self.ex.idle_since.set(Some(now));
                    now
                });
                Some(since + l.idle_timeout)
            }
            Reading::Head { since } => Some(since + l.head_timeout),
            Reading::Body(_) => Some(now + l.body_timeout),
            Reading::Closed => Some(now),
        }
    }

    /// Between requests, unless parking is off or the worker drains (its
    /// idle connections are about to be closed anyway).
    fn park_after(&self) -> Option<Duration> {
        let ex = &self.ex;
        let after = ex.limits.park_idle_after;
        let parkable = matches!(self.reading, Reading::Idle)
            && !after.is_zero()
            && ex.registration.server.parking.get().is_some()
            && !ex.registration.server.draining.load(Ordering::Relaxed);
        parkable.then_some(after)
    }
}

/// Encodes response heads ([`Response`]) and body bytes (`&[u8]`), and
/// [`End`] of the body.
pub struct ResponseEncoder<'a> {
    ex: &'a Exchange,
}

thread_local! {
    // One per thread, not per connection: every connection's responses
    // then copy from the same few cache lines. Per connection, at 1000
    // connections (S3), reading the memo's cold lines cost three more
    // last-level cache misses per request than it saved (cachegrind, 2 MiB).
    // Used without a wait in between, so coroutines moving between threads
    // do not matter.
    static HEAD_MEMO: RefCell<encode::HeadMemo> = const { RefCell::new(encode::HeadMemo::new()) };
}

/// [`encode::HeadMemo::encode_head`] with this thread's memo.
fn encode_head(resp: &Response<'_>, info: RequestInfo, output: &mut Vec<u8>) -> Result<(Framing, bool), EncodeError> {
    let second = date::second();
    let memoized = HEAD_MEMO
        .try_with(|memo| memo.try_borrow_mut().ok().map(|mut memo| memo.encode_head(resp, info, second, output)));
    // Without the memo (the thread is exiting, or it is in use): anew.
    memoized.ok().flatten().unwrap_or_else(|| encode::encode_head(resp, info, &date::at(second), output))
}

/// Ends the current response body (writes the last chunk when chunked).
#[derive(Clone, Copy, Debug)]
pub struct End;

fn misuse(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

impl ResponseEncoder<'_> {
    /// Framing before `len` body bytes. `Ok(false)`: drop the bytes (HEAD,
    /// 204, 304 responses carry no body).
    fn body_prefix(&mut self, len: usize, output: &mut Vec<u8>) -> io::Result<bool> {
        let ex = &self.ex;
        match ex.writing.get() {
            Writing::Body(Framing::NoBody) => Ok(false),
            Writing::Body(Framing::Length(owed)) => {
                if len as u64 > owed {
                    ex.writing.set(Writing::Broken);
                    return Err(misuse("response body longer than its Content-Length"));
                }
                ex.writing.set(Writing::Body(Framing::Length(owed - len as u64)));
                ex.count_body(len);
                Ok(len > 0)
            }
            Writing::Body(Framing::Chunked) => {
                if len > 0 {
                    encode::chunk_header(len, output);
                }
                ex.count_body(len);
                Ok(len > 0)
            }
            Writing::Body(Framing::UntilClose) => {
                ex.count_body(len);
                Ok(len > 0)
            }
            Writing::AwaitingHead => Err(misuse("response body written before its head")),
            Writing::Idle | Writing::Done | Writing::Broken => Err(misuse("no response in progress")),
        }
    }

    fn body_suffix(&mut self, len: usize, output: &mut Vec<u8>) {
        if len > 0 && self.ex.writing.get() == Writing::Body(Framing::Chunked) {
            output.extend_from_slice(b"\r\n");
        }
    }
}

impl Encoder<Response<'_>> for ResponseEncoder<'_> {
    type Error = io::Error;

    fn encode(&mut self, resp: Response<'_>, output: &mut Vec<u8>) -> io::Result<()> {
        self.head(&resp, output)
    }
}

impl ResponseEncoder<'_> {
    /// The response head, from a borrowed [`Response`]: the struct is over
    /// a hundred bytes, and each move of it by value was a copy whose
    /// loads stalled on the narrower stores that had just built it (two
    /// instructions held 11% of a pipelined request's time, perf).
    fn head(&mut self, resp: &Response<'_>, output: &mut Vec<u8>) -> io::Result<()> {
        let ex = &self.ex;
        if ex.writing.get() != Writing::AwaitingHead {
            return Err(misuse("no request awaiting a response head"));
        }
        let mut info = ex.request.get();
        // This is the last response on the connection, and must say so, when
        // the client still holds back a body behind 100-continue (it may or
        // may not send it), when the unread body is too large to drain, or
        // when the worker is draining.
        let undrainable = matches!(ex.unread.get(), Unread::Bytes(n) if n > ex.limits.max_drain_bytes);
        if ex.expect.get() == Continue::Pending
            || undrainable
            || ex.registration.server.draining.load(Ordering::Relaxed)
        {
            info.keep_alive = false;
        }
        let (framing, keep_alive) = encode_head(resp, info, output).map_err(|e| misuse(&e.to_string()))?;
        ex.keep_alive.set(keep_alive);
        ex.writing.set(Writing::Body(framing));
        if ex.access.is_some() {
            ex.entry.borrow_mut().status = resp.status();
        }
        Ok(())
    }
}

impl Encoder<&[u8]> for ResponseEncoder<'_> {
    type Error = io::Error;

    fn encode(&mut self, data: &[u8], output: &mut Vec<u8>) -> io::Result<()> {
        if self.body_prefix(data.len(), output)? {
            output.extend_from_slice(data);
            self.body_suffix(data.len(), output);
        }
        Ok(())
    }
}

impl Encoder<End> for ResponseEncoder<'_> {
    type Error = io::Error;

    fn encode(&mut self, _: End, output: &mut Vec<u8>) -> io::Result<()> {
        let ex = &self.ex;
        match ex.writing.get() {
            Writing::Body(Framing::Chunked) => output.extend_from_slice(encode::LAST_CHUNK),
            Writing::Body(Framing::Length(owed)) if owed > 0 => {
                ex.writing.set(Writing::Broken);
                return Err(misuse("response body shorter than its Content-Length"));
            }
            Writing::Body(_) => {}
            Writing::Done => return Ok(()),
            Writing::AwaitingHead => return Err(misuse("response ended before its head")),
            Writing::Idle | Writing::Broken => return Err(misuse("no response in progress")),
        }
        // A close-delimited body ends when the connection does.
        if ex.writing.get() != Writing::Body(Framing::UntilClose) {
            ex.writing.set(Writing::Done);
        }
        Ok(())
    }
}

/// The HTTP methods of the read side.
impl<'io> Read<'io, RequestDecoder<'io>> {
    /// The current request's body as a stream of chunks (also readable with
    /// `std::io::Read`). Reading it first sends `100 Continue` when the
    /// client asked for it. Body data is never buffered whole.
    pub fn body(&self) -> Body<'_, 'io> {
        Body { read: self }
    }

    /// The client's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.decoder.borrow().ex.peer
    }

    /// Runs `take` on the next piece of body data (at most `max` bytes).
    /// `None`: the body is complete.
    fn body_step<T>(&self, max: usize, take: impl FnOnce(&[u8]) -> T) -> Option<io::Result<T>> {
        loop {
            {
                let mut decoder = self.decoder.borrow_mut();
                let decoder = &mut *decoder;
                let ex = &decoder.ex;
                let Reading::Body(body) = &mut decoder.reading else { return None };
                if body.is_done() {
                    return None;
                }
                let mut io = self.io.borrow_mut();
                if ex.expect.get() == Continue::Pending && ex.writing.get() == Writing::AwaitingHead {
                    io.out().extend_from_slice(encode::CONTINUE);
                    ex.expect.set(Continue::Sent);
                }
                match body.decode_max(io.rbuf.data(), max) {
                    Ok((n, Chunk::Data(r))) => {
                        let out = take(&io.rbuf.data()[r]);
                        io.rbuf.consume(n);
                        if let Some(left) = body.remaining() {
                            ex.unread.set(if left == 0 { Unread::Nothing } else { Unread::Bytes(left) });
                        }
                        return Some(Ok(out));
                    }
                    Ok((n, Chunk::End)) => {
                        io.rbuf.consume(n);
                        ex.unread.set(Unread::Nothing);
                        return None;
                    }
                    Ok((n, Chunk::NeedMore)) => io.rbuf.consume(n),
                    Err(e) => {
                        ex.error.set(Some(e));
                        decoder.reading = Reading::Closed;
                        self.fail(StreamError::Decode(e));
                        return Some(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                    }
                }
            }
            let (failure, cause) = match self.fill() {
                Ok(Filled::More) => continue,
                // (Quiet cannot happen: a decoder in a body never parks.)
                Ok(Filled::Closed | Filled::Quiet) => (
                    io::Error::new(io::ErrorKind::UnexpectedEof, "client closed during the body"),
                    StreamError::Truncated,
                ),
                // The handler gets a copy; the connection keeps the cause
                // (a timeout is answered 408).
                Err(e) => (io::Error::new(e.kind(), e.to_string()), StreamError::Io(e)),
            };
            self.decoder.borrow_mut().reading = Reading::Closed;
            self.fail(cause);
            return Some(Err(failure));
        }
    }
}

/// A request body: an iterator of chunks and a `std::io::Read`.
pub struct Body<'r, 'io> {
    read: &'r Requests<'io>,
}

impl Iterator for Body<'_, '_> {
    type Item = io::Result<Bytes>;
    fn next(&mut self) -> Option<io::Result<Bytes>> {
        self.read.body_step(usize::MAX, Bytes::copy_from_slice)
    }
}

impl io::Read for Body<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.read.body_step(buf.len(), |data| {
            buf[..data.len()].copy_from_slice(data);
            data.len()
        }) {
            Some(r) => r,
            None => Ok(0),
        }
    }
}

/// The HTTP methods of the write side.
impl Write<'_, ResponseEncoder<'_>> {
    /// Writes the response head. Without a Content-Length the body is sent
    /// chunked (HTTP/1.1) or until close (HTTP/1.0).
    pub fn head(&self, resp: Response<'_>) -> io::Result<()> {
        self.write(resp)
    }

    /// Writes body bytes, framed as the head said. Large bodies are written
    /// straight from `data`, without copying into the output buffer.
    pub fn body(&self, data: &[u8]) -> io::Result<()> {
        // The framing goes into the output buffer; `Io::send` copies small
        // data after it and writes large data straight from `data`.
        let mut io = self.io.borrow_mut();
        let mut encoder = self.encoder.borrow_mut();
        if encoder.body_prefix(data.len(), io.out())? {
            io.send(data)?;
            encoder.body_suffix(data.len(), io.out());
        }
        Ok(())
    }

    /// Ends the response body. Optional: reading the next request or
    /// returning from the handler ends it too.
    pub fn end(&self) -> io::Result<()> {
        self.write(End)
    }

    /// Head, sized body and end in one call: what [`Write::head`],
    /// [`Write::body`] and [`Write::end`] do, with the connection's buffer
    /// and encoder borrowed once rather than three times.
    pub fn respond(&self, mut resp: Response<'_>, body: &[u8]) -> io::Result<()> {
        resp.set_content_length(body.len() as u64);
        let mut io = self.io.borrow_mut();
        let mut encoder = self.encoder.borrow_mut();
        encoder.head(&resp, io.out())?;
        if encoder.body_prefix(body.len(), io.out())? {
            io.send(body)?;
            encoder.body_suffix(body.len(), io.out());
        }
        encoder.encode(End, io.out())?;
        io.flush_if_full()
    }
}

/// Serves one connection with `app` until it closes or parks. Never
/// panics: a panicking handler ends this connection only.
/// `peer` is the address accept() returned (asking the socket again would
/// cost a syscall per connection); `first_read` says whether the request
/// is likely there already.
pub fn serve(
    stream: Stream,
    peer: Option<SocketAddr>,
    first_read: FirstRead,
    app: &dyn App,
    limits: &Arc<Limits>,
    admission: Admission,
) {
    let server = &admission.0;
    let mut io = Io::new(stream, limits.max_head_bytes + 1, limits.write_timeout, &server.alarms);
    // Declared after `io`, so dropped before it (see `Registration`).
    let registration = server.register(&io);
    if first_read == FirstRead::AfterEvent {
        io.await_first_input();
    }
    // The head timeout runs from accept: a PROXY header does not extend it.
    let accepted = Moment::now();
    let peer = if limits.proxy_protocol {
        match read_proxy_header(&mut io, accepted + limits.head_timeout) {
            Ok(Proxied::Addresses { source, .. }) => Some(source),
            // The proxy's own connection (health checks): keep its address.
            Ok(Proxied::Local) => peer,
            Err(e) => {
                log::debug!("closing a connection from {peer:?}: PROXY header: {e}");
                registration.release();
                io.close(Close::Now);
                return;
            }
        }
    } else {
        peer
    };
    let conn = ConnState { peer, served: 0, idle_since: accepted };
    run(io, registration, &conn, Reading::Head { since: accepted }, app, limits, admission);
}

/// Serves a parked connection again (its next request has arrived, or its
/// client closed), on the calling coroutine: a new call of `app`.
pub fn resume(parked: Parked, app: &dyn App, limits: &Arc<Limits>) {
    let (stream, conn, admission) = match parked.into_parts() {
        Ok(parts) => parts,
        Err(e) => {
            log::error!("cannot resume a parked connection: {e}");
            return;
        }
    };
    let io = Io::new(stream, limits.max_head_bytes + 1, limits.write_timeout, &admission.0.alarms);
    let registration = admission.0.register(&io);
    run(io, registration, &conn, Reading::Idle, app, limits, admission);
}

/// What a connection carries from one handler call to the next (through
/// the parking lot).
pub struct ConnState {
    peer: Option<SocketAddr>,
    /// Requests served so far (for `--max-requests-per-conn`).
    served: u64,
    /// When the connection last went idle: its idle timeout runs from here.
    idle_since: Moment,
}

#[cfg(test)]
impl ConnState {
    /// A connection that went idle now, with nothing served.
    pub(crate) fn idle_now() -> ConnState {
        ConnState { peer: None, served: 0, idle_since: Moment::now() }
    }
}

/// Runs the handler chain on a connection, then closes it, or parks it if
/// the handler's loop ended on a quiet pause.
fn run(
    io: Io,
    registration: Registration,
    conn: &ConnState,
    reading: Reading,
    app: &dyn App,
    limits: &Arc<Limits>,
    admission: Admission,
) {
    let mut io = RefCell::new(io);
    // Declared after `io` and never moved out of this frame, so a panic in
    // this function drops the registration before the socket.
    // On the stack, lent to the decoder and the encoder: an `Rc` was an
    // allocation and a free per connection (about 200 instructions,
    // callgrind).
    let ex = Exchange::new(limits.clone(), registration, conn);
    let decoder = RequestDecoder { ex: &ex, reading };
    let encoder = ResponseEncoder { ex: &ex };
    let run = chain(
        decoder,
        |read: &Requests<'_>, write: &Responses<'_>| {
            let result = app(read, write);
            (result, read.take_error(), read.is_parked())
        },
        encoder,
    );
    let outcome = catch_unwind(AssertUnwindSafe(|| run(&io)));
    // Parked only if the handler returned normally after its loop ended on
    // the pause, with nothing half-written: the socket alone then holds the
    // connection's state.
    if matches!(outcome, Ok((Ok(()), None, true))) && ex.writing.get() == Writing::Idle && io.get_mut().is_settled() {
        ex.registration.release();
        park(io.into_inner(), &ex, admission);
        return;
    }
    let outcome = outcome.map(|(result, error, _)| (result, error));
    let linger = finish_connection(&ex, io.get_mut(), outcome);
    // A response that ended abnormally (the handler failed or panicked
    // after its head, the client went away) is logged too; once only.
    ex.log_access(None);
    ex.registration.release();
    let io = io.into_inner();
    let how = if linger {
        Close::Linger
    } else if ex.client_done.get() {
        Close::PeerDone
    } else if io.input_waiting() {
        // The server ends a connection the client did not (the request
        // limit, a drain, a response it had to close) and more input is
        // already there, a pipelined request say: closing on it would make
        // the kernel reset the connection, which can destroy our last
        // response before the client reads it. nginx checks the same.
        Close::Linger
    } else {
        Close::Now
    };
    io.close(how);
    drop(admission);
}

/// Hands an idle connection to the worker's parking lot, its idle timeout
/// still counted from when it went idle.
fn park(io: Io, ex: &Exchange, admission: Admission) {
    let server = admission.0.clone();
    let Some(lot) = server.parking.get() else {
        io.close(Close::Now);
        return;
    };
    // Set: the connection waited before it parked.
    let idle_since = ex.idle_since.get().unwrap_or_else(Moment::now);
    let deadline = idle_since + ex.limits.idle_timeout;
    let conn = ConnState { peer: ex.peer, served: ex.served.get(), idle_since };
    lot.park(Parked::new(io.into_stream(), conn, admission), deadline);
}

/// Why a connection behind `--proxy-protocol` was closed before any request.
#[derive(Debug)]
enum ProxyHeaderError {
    Invalid(ProxyError),
    /// Closed, failed or timed out before a whole header arrived.
    Io(io::Error),
}

impl std::fmt::Display for ProxyHeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyHeaderError::Invalid(e) => write!(f, "{e}"),
            ProxyHeaderError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Reads the PROXY protocol header that starts the connection (the load
/// balancer sends it at once; the head timeout bounds the wait), leaving
/// whatever follows it in the read buffer for the request decoder.
fn read_proxy_header(io: &mut Io, deadline: Moment) -> Result<Proxied, ProxyHeaderError> {
    loop {
        match proxy::parse(io.rbuf.data()) {
            Ok(Some((header, n))) => {
                io.rbuf.consume(n);
                return Ok(header);
            }
            Ok(None) => match io.fill(Some(deadline)) {
                Ok(0) => return Err(ProxyHeaderError::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(e) => return Err(ProxyHeaderError::Io(e)),
            },
            Err(e) => return Err(ProxyHeaderError::Invalid(e)),
        }
    }
}

type Outcome = std::thread::Result<(io::Result<()>, Option<StreamError<proto::Error>>)>;

/// After the handler returned (or panicked): answer a pending protocol
/// error, complete an unfinished response, or give up on a broken one.
/// Returns whether to linger before closing (after an error response, so
/// the client reads it instead of a reset).
fn finish_connection(ex: &Exchange, io: &mut Io, outcome: Outcome) -> bool {
    let head_pending = matches!(ex.writing.get(), Writing::Idle | Writing::AwaitingHead);
    // An answer to the request the handler holds goes without a body if
    // that is a HEAD; with `Writing::Idle` the answer is to a request not
    // read yet (a 408 for a partial head), whose method is not known.
    let to_head = ex.writing.get() == Writing::AwaitingHead && ex.request.get().is_head;
    // Appended, never replacing: the buffer may still hold complete
    // responses to earlier pipelined requests.
    let answer = |io: &mut Io, code: u16, text: &str| {
        encode::encode_plain_close(code, text, &date::now(), to_head, io.out());
        ex.log_access(Some(code));
    };
    match outcome {
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log::error!("handler panicked: {what}; closing the connection");
            if ex.writing.get() == Writing::AwaitingHead {
                answer(io, 500, "internal server error");
                return true;
            }
            false
        }
        Ok((result, stream_error)) => {
            if let Some(e) = ex.error.get() {
                log::debug!("rejected request from {:?}: {e}", ex.peer);
                if head_pending {
                    encode::encode_error(e, &date::now(), to_head, io.out());
                    ex.log_access(Some(e.status()));
                    return true;
                }
                return false;
            }
            match &stream_error {
                Some(StreamError::Io(e)) => {
                    // A request that did not arrive in time (head or body):
                    // tell the client (RFC 9110 §15.5.9). A connection idle
                    // between requests just closes.
                    let in_request = ex.writing.get() == Writing::AwaitingHead
                        || (ex.writing.get() == Writing::Idle && !io.rbuf.is_empty());
                    if e.kind() == io::ErrorKind::TimedOut && in_request {
                        answer(io, 408, "request timeout");
                        return true;
                    }
                    return false;
                }
                // The client went away mid-request: nobody to answer.
                Some(StreamError::Truncated) => return false,
                Some(StreamError::Decode(_)) | None => {}
            }
            if let Err(e) = &result {
                log::debug!("handler error: {e}");
                if ex.writing.get() == Writing::AwaitingHead {
                    answer(io, 500, "internal server error");
                    return true;
                }
            }
            if result.is_ok() {
                ex.finish_response(io.out());
            }
            // Pipelined requests we will not answer, or a body we did not
            // read, are unread input: closing on them would reset the
            // connection under our last response.
            !io.rbuf.is_empty() || ex.unread.get() != Unread::Nothing
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::Arc;
    use std::time::Duration;

    use super::ServerState;
    use crate::io::Io;
    use crate::net::{Family, Stream};

    fn open(server: &ServerState) -> usize {
        server.open.lock().unwrap().len()
    }

    /// A fresh connection, served on a coroutine by a worker whose drain
    /// has begun closing idle connections (its coroutine first runs after
    /// that, like one handed over by the accept loop or resumed from the
    /// parking lot), once `first` has arrived: the client and the
    /// coroutine.
    fn served_after_close_idle(first: &[u8]) -> (Arc<ServerState>, TcpStream, may::coroutine::JoinHandle<()>) {
        use std::io::Write;

        use crate::config::Limits;
        use crate::proto::encode::Response;
        use crate::{Requests, Responses};

        let server = Arc::new(ServerState::default());
        server.begin_drain();
        server.close_idle();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_nodelay(true).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        client.write_all(first).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let admission = server.admit();
        let served = on_coroutine(move || {
            let stream = Stream::from_fd(accepted.into(), Family::Tcp).unwrap();
            let app = |read: &Requests<'_>, write: &Responses<'_>| {
                for _req in read {
                    write.respond(Response::new(200), b"hi")?;
                }
                Ok(())
            };
            super::serve(
                stream,
                None,
                crate::net::FirstRead::AfterEvent,
                &app,
                &Arc::new(Limits::default()),
                admission,
            );
        });
        (server, client, served)
    }

    /// What the client reads until the server ends the connection, which
    /// must be an end of stream, not a reset.
    fn read_until_closed(client: &mut TcpStream) -> String {
        let mut received = Vec::new();
        let read = std::io::Read::read_to_end(client, &mut received);
        let text = String::from_utf8_lossy(&received).into_owned();
        assert!(read.is_ok(), "end of stream, not a reset: {read:?} after {text:?}");
        text
    }

    /// Such a connection has not read its socket yet: its request, already
    /// there, is answered with `Connection: close`, then the connection
    /// ends without a reset.
    #[test]
    fn a_connection_first_run_after_close_idle_answers_the_request_it_has() {
        let (server, mut client, served) = served_after_close_idle(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let text = read_until_closed(&mut client);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
        assert!(text.contains("\r\nConnection: close\r\n") && text.ends_with("\r\n\r\nhi"), "{text:?}");
        served.join().unwrap();
        assert_eq!(server.connections.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    /// The same with only the first part of the request arrived when the
    /// coroutine first runs and the rest on its way: its read side must
    /// stay open (input is waiting), or the rest, arriving after a shut,
    /// is never read and the request goes unanswered.
    #[test]
    fn a_request_arriving_in_parts_during_close_idle_is_answered() {
        let (_server, mut client, served) = served_after_close_idle(b"GET / HTTP/1.1\r\nHo");
        // Long after the coroutine has read the first part.
        std::thread::sleep(Duration::from_millis(300));
        std::io::Write::write_all(&mut client, b"st: x\r\n\r\n").unwrap();
        let text = read_until_closed(&mut client);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "the whole request was read and answered: {text:?}");
        assert!(text.contains("\r\nConnection: close\r\n"), "{text:?}");
        served.join().unwrap();
    }

    /// Runs `f` on a may coroutine (where waits park), with a stack large
    /// enough for a whole connection in a debug build (may's default of
    /// 32 KiB overflows there).
    fn on_coroutine(f: impl FnOnce() + Send + 'static) -> may::coroutine::JoinHandle<()> {
        // SAFETY: `f` keeps no thread-local state across a wait (see
        // `worker::spawn`); 1 MiB of stack fits a debug build's frames.
        unsafe { may::coroutine::Builder::new().stack_size(1 << 17).spawn(f) }.expect("spawn a coroutine")
    }

    #[test]
    fn a_connection_leaves_the_registry_when_released_or_unwound() {
        let server = Arc::new(ServerState::default());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let connect = || {
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (accepted, _) = listener.accept().unwrap();
            let stream = Stream::from_fd(accepted.into(), Family::Tcp).unwrap();
            (client, Io::new(stream, 1024, Duration::from_secs(5), &server.alarms))
        };
        // Released on the normal path.
        let (_client, io) = connect();
        let registration = server.register(&io);
        assert_eq!(open(&server), 1);
        registration.release();
        assert_eq!(open(&server), 0);
        drop(registration);
        // A panic outside the handler's guard still removes the entry.
        let (_client, io) = connect();
        let unwound = catch_unwind(AssertUnwindSafe(|| {
            let _registration = server.register(&io);
            assert_eq!(open(&server), 1);
            panic!("a bug between accept and close");
        }));
        assert!(unwound.is_err());
        assert_eq!(open(&server), 0);
    }
}
