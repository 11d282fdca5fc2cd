//! The only code that touches a connection's socket: a read buffer, a write
//! buffer, and reads and writes that park the coroutine (never the thread)
//! until the socket is ready or a deadline passes.

use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use crate::alarm::{AlarmHandle, Alarms};
use crate::clock::Moment;
use crate::net::{HANGUP, READABLE, Stream};

/// Output accumulates up to this many bytes before it is written even
/// though the handler has not blocked yet: bounds the memory of a pipelined
/// batch or a streaming response, and keeps each write() large.
pub const WRITE_BATCH: usize = 64 * 1024;

/// Writes of at least this size skip the write buffer (one copy less).
const DIRECT_WRITE: usize = 16 * 1024;

/// The read buffer starts small (idle connections are most connections) and
/// doubles while reads fill it, up to its cap.
const READ_INITIAL: usize = 4 * 1024;
const READ_GROW_MAX: usize = 64 * 1024;

/// Buffers of their initial size that connections gave back are kept for
/// the next connections, at most this many of each kind per thread. Their
/// blocks (4 KiB to read, 512 bytes to write) are beyond glibc's per-thread
/// cache or overflow it with 64 connections at a time: allocating and
/// freeing them per connection went through the arena's bins and
/// consolidation, about 4% of the CPU of a connection-per-request load
/// (perf, S4).
const SPARES: usize = 64;

type SpareList = std::cell::RefCell<Vec<Vec<u8>>>;

thread_local! {
    // Taken and given back within one call, never held across a wait: a
    // coroutine that moves to another thread just uses that thread's lists.
    static SPARE_READ: SpareList = const { std::cell::RefCell::new(Vec::new()) };
    static SPARE_WRITE: SpareList = const { std::cell::RefCell::new(Vec::new()) };
}

fn take_spare(list: &'static std::thread::LocalKey<SpareList>) -> Option<Vec<u8>> {
    list.try_with(|spare| spare.borrow_mut().pop()).ok().flatten()
}

/// Keeps `buf` in `list` if there is room; frees it otherwise (and once the
/// thread is exiting).
fn give_spare(list: &'static std::thread::LocalKey<SpareList>, buf: Vec<u8>) {
    let _ = list.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < SPARES {
            spare.push(buf);
        }
    });
}

/// A zeroed (or reused, so initialised) buffer of `READ_INITIAL` bytes.
fn take_read_buffer() -> Vec<u8> {
    take_spare(&SPARE_READ).unwrap_or_else(|| vec![0; READ_INITIAL])
}

fn give_back_read_buffer(buf: Vec<u8>) {
    if buf.len() == READ_INITIAL {
        give_spare(&SPARE_READ, buf);
    }
}

/// The write buffer's first allocation: most responses' head and body fit.
const WRITE_INITIAL: usize = 512;

/// An empty buffer with room for `WRITE_INITIAL` bytes.
fn take_write_buffer() -> Vec<u8> {
    take_spare(&SPARE_WRITE).unwrap_or_else(|| Vec::with_capacity(WRITE_INITIAL))
}

fn give_back_write_buffer(mut buf: Vec<u8>) {
    if buf.capacity() == WRITE_INITIAL {
        buf.clear();
        give_spare(&SPARE_WRITE, buf);
    }
}

/// How far below the waiting frame [`Io::warm_up`] prefetches, for the
/// parser's and the encoder's frames, which reach below it when the next
/// request is decoded and answered (512 and 1536 bytes measured alike at
/// 1000 connections; this is between).
const WARM_BELOW: usize = 1024;
/// The most stack [`Io::warm_up`] prefetches: between the waiting frame and
/// the `Io` there are some 2.6 KiB (measured, `workers/hello`); a longer
/// span means the `Io` is not on this stack, or a handler with frames big
/// enough that warming them would cost more than it saves.
const WARM_MAX: usize = 8 * 1024;

/// How long a connection with nothing buffered keeps its buffers while it
/// waits for input (see [`Io::fill`]).
pub const RELEASE_AFTER: Duration = Duration::from_secs(1);

fn broken() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "an earlier write on this connection failed")
}

/// Received bytes not yet decoded. The storage is always initialised, so
/// reading into it needs no `unsafe`. (Reused storage holds an earlier
/// connection's bytes past `end`: only `start..end` is ever data.)
#[derive(Default)]
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Largest the buffer may grow: a head must fit whole.
    cap: usize,
}

impl ReadBuf {
    pub fn new(cap: usize) -> ReadBuf {
        ReadBuf { buf: Vec::new(), start: 0, end: 0, cap: cap.max(READ_INITIAL) }
    }

    /// The undecoded bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Marks `n` bytes as decoded.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room to read into, after compacting or growing. Empty when the
    /// buffer is full at its cap (the decoder must then reject the input).
    fn spare(&mut self) -> &mut [u8] {
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.is_empty() {
            self.buf = take_read_buffer();
        } else if self.end == self.buf.len() && self.buf.len() < self.cap {
            self.buf.resize((self.buf.len() * 2).min(self.cap), 0);
        }
        &mut self.buf[self.end..]
    }

    fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// Gives the storage back (to the spare list, or frees it); nothing may
    /// be buffered.
    fn release(&mut self) {
        if self.is_empty() {
            give_back_read_buffer(std::mem::take(&mut self.buf));
        }
    }

    /// Gives the memory back while the connection idles with nothing
    /// buffered, so idle keep-alive connections stay small.
    pub fn release_if_empty(&mut self) {
        if self.is_empty() && self.buf.len() > READ_INITIAL {
            self.buf = Vec::new();
        }
    }
}

impl std::fmt::Debug for ReadBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadBuf").field("data", &self.data().len()).field("capacity", &self.buf.len()).finish()
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        give_back_read_buffer(std::mem::take(&mut self.buf));
    }
}

/// Output not yet written. Its storage of the initial size goes back to the
/// spare list when the connection ends or idles (see [`SPARES`]).
#[derive(Default)]
pub struct WriteBuf(Vec<u8>);

impl std::ops::Deref for WriteBuf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for WriteBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl WriteBuf {
    fn release(&mut self) {
        give_back_write_buffer(std::mem::take(&mut self.0));
    }
}

impl Drop for WriteBuf {
    fn drop(&mut self) {
        self.release();
    }
}

/// One connection's socket and buffers.
pub struct Io {
    stream: Stream,
    /// Wakes this connection's waits at their deadlines (see `alarm`).
    alarm: AlarmHandle,
    pub rbuf: ReadBuf,
    pub wbuf: WriteBuf,
    write_timeout: Duration,
    /// A write failed (possibly after sending part of the buffer): the byte
    /// stream is now unknown to us, so nothing more may be sent on it.
    broken: bool,
    /// The socket was found empty (a read came back short or would block)
    /// and no wait since reported input ([`READABLE`]): a read now would
    /// only say "would block" unless may saw new input since, and then
    /// [`Stream::wait_io`] returns at once. So the next wait skips that
    /// read: on a keep-alive connection it is one system call of three per
    /// request, on a new connection woken first for writability one of
    /// three reads.
    drained: bool,
    /// may reported the peer's end of stream (or an error): the read that
    /// returns it may still be ahead, so short reads prove nothing any more.
    hangup: bool,
    /// Calls of `wait` (each parks unless events are already pending), for
    /// tests of when there must be none.
    #[cfg(test)]
    waits: usize,
}

impl Io {
    /// `read_cap` bounds the read buffer (at least the largest head); the
    /// connection's waits are woken through `alarms`.
    pub fn new(stream: Stream, read_cap: usize, write_timeout: Duration, alarms: &Arc<Alarms>) -> Io {
        let alarm = alarms.register(stream.waker());
        Io {
            stream,
            alarm,
            rbuf: ReadBuf::new(read_cap.max(READ_GROW_MAX)),
            wbuf: WriteBuf::default(),
            write_timeout,
            broken: false,
            drained: false,
            hangup: false,
            #[cfg(test)]
            waits: 0,
        }
    }

    /// For a connection just accepted from a listener that does not defer
    /// accept (see `net::FirstRead`): its first read waits for may's first
    /// event on the socket instead of trying at once. When accept returns,
    /// the request has usually not arrived (the client sends it after the
    /// handshake completes), so that read only said "would block": one
    /// system call of nine per connection-per-request (perf, S4). A request
    /// that is already there is not missed: the first epoll_wait after a
    /// registration reports the socket's current state.
    pub fn await_first_input(&mut self) {
        self.drained = true;
    }

    /// Parks the coroutine until the socket has news or `until` passes
    /// (give or take an alarm tick).
    fn wait(&mut self, until: Moment) {
        #[cfg(test)]
        {
            self.waits += 1;
        }
        self.alarm.set(until);
        let events = self.stream.wait_io();
        self.warm_up();
        self.alarm.clear();
        if events & READABLE != 0 {
            self.drained = false;
        }
        self.hangup |= events & HANGUP != 0;
    }

    /// Starts loading, all at once, the memory this connection is about to
    /// touch after a wait: its coroutine's stack from a little below here
    /// (where the parser's frames go, [`WARM_BELOW`]) up to the `Io`, which
    /// lives in the frame that runs the connection, just above the
    /// handler's; and the lines of its buffers that the next read and
    /// response fill.
    ///
    /// With many connections, each one's stack has left the cache by the
    /// time its next request comes (every connection has its own), and
    /// returning up through the frames and back down through the parser
    /// meets those lines one miss at a time: cachegrind counts some 35
    /// per request at 1000 connections, and our user time per request
    /// grows from 1.2 µs at 50 connections to 3.1 at 1000 (nginx, which
    /// reuses one hot stack: 2.5 and 3.0). Prefetched together, the misses
    /// overlap instead.
    #[inline(always)]
    fn warm_up(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let prefetch = |addr: usize| {
                // SAFETY: a prefetch is a hint: it never faults and changes
                // no memory, whatever the address (even one of a buffer
                // given back, or none at all).
                unsafe { _mm_prefetch::<_MM_HINT_T0>(addr as *const i8) }
            };
            let input = self.rbuf.buf.as_ptr() as usize + self.rbuf.end;
            let output = self.wbuf.as_ptr() as usize;
            for addr in [input, input + 64, output, output + 64] {
                prefetch(addr);
            }
            let here = 0u8;
            let sp = std::hint::black_box(&here) as *const u8 as usize;
            let top = self as *const Io as usize + std::mem::size_of::<Io>();
            let mut line = sp.wrapping_sub(WARM_BELOW) & !63;
            // An `Io` elsewhere than on this stack (not the case in this
            // crate, but cheap to rule out) warms nothing.
            if top > line && top - line <= WARM_MAX {
                // Four lines a turn (one past `top` at most three: hints
                // too), a third of the instructions of one a turn.
                while line < top {
                    prefetch(line);
                    prefetch(line + 64);
                    prefetch(line + 128);
                    prefetch(line + 192);
                    line += 256;
                }
            }
        }
    }

    /// Writes pending output, then reads more input, waiting at most until
    /// `deadline`. Returns the number of bytes read; 0 means the peer closed
    /// its side.
    ///
    /// Flushing first is what turns a pipelined batch into one write: output
    /// only leaves when the decoder has run out of complete input.
    ///
    /// With nothing buffered, the first wait lasts at most [`RELEASE_AFTER`]:
    /// a keep-alive client's next request usually comes sooner. A connection
    /// quiet for longer gives its buffers back and waits for readability
    /// without them: idle connections are most connections, and their
    /// memory is what a server's capacity is made of.
    pub fn fill(&mut self, deadline: Option<Moment>) -> io::Result<usize> {
        self.flush()?;
        Ok(self.fill_or_quiet(deadline, None, Moment::now())?.unwrap_or(0))
    }

    /// [`Io::fill`], except that with nothing buffered a first wait of
    /// `quiet_after` that brings no input returns `Ok(None)` instead of
    /// waiting on: the caller then puts the connection aside without its
    /// coroutine (see `park`). Only when the deadline is further away than
    /// twice that, so a connection about to time out is not moved for
    /// nothing.
    ///
    /// A deadline is checked when there is nothing to read: input that is
    /// already there is taken even if it came late. The caller flushes
    /// first and passes the time it read right after (one clock read per
    /// request on a keep-alive connection, not two).
    pub fn fill_or_quiet(
        &mut self,
        deadline: Option<Moment>,
        quiet_after: Option<Duration>,
        now: Moment,
    ) -> io::Result<Option<usize>> {
        // The time the caller read, for the first time the socket is found
        // empty; after a wait the clock is read again, only if it is needed.
        let mut clock = Some(now);
        // Past the deadline, one last read before giving up, for input that
        // came since the socket was found empty.
        let mut last_look = false;
        let stage = quiet_after.unwrap_or(RELEASE_AFTER);
        // When the first wait ends, if it is staged; decided when the
        // socket is first found empty.
        let mut stage_end: Option<Option<Moment>> = None;
        let mut released = false;
        loop {
            if !self.drained {
                if released {
                    match self.stream.try_peek() {
                        Ok(()) => released = false, // input or end of stream: read it
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.drained = true,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
                if !released {
                    let spare = self.rbuf.spare();
                    if spare.is_empty() {
                        // Decoders reject input before it outgrows the
                        // buffer; reaching here is a decoder bug, reported
                        // rather than mistaken for end of stream.
                        return Err(io::Error::other("read buffer full"));
                    }
                    let room = spare.len();
                    match self.stream.try_read(spare) {
                        Ok(n) => {
                            self.rbuf.filled(n);
                            self.drained = n < room && !self.hangup;
                            return Ok(Some(n));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.drained = true,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
            // Nothing to read: wait, unless a deadline or the first stage
            // has passed.
            let now = clock.take().unwrap_or_else(Moment::now);
            if deadline.is_some_and(|d| now >= d) {
                if self.drained && !last_look {
                    last_look = true;
                    self.drained = false;
                    continue;
                }
                return Err(io::ErrorKind::TimedOut.into());
            }
            let staged = *stage_end.get_or_insert_with(|| {
                // In the clock's integer milliseconds: in `Duration`s
                // (`2 * stage` with its overflow check, a difference
                // rebuilt from milliseconds) it was some 20 more
                // instructions on every keep-alive request's wait.
                let end = now + stage;
                let far = deadline.is_none_or(|d| d > end + stage);
                (self.rbuf.is_empty() && far).then_some(end)
            });
            let stage_due = staged.filter(|_| !released);
            if stage_due.is_some_and(|end| now >= end) {
                if quiet_after.is_some() {
                    return Ok(None);
                }
                self.rbuf.release();
                self.wbuf.release();
                released = true;
            }
            let until = match (deadline, stage_due.filter(|_| !released)) {
                (Some(d), Some(s)) => d.min(s),
                (Some(d), None) => d,
                (None, Some(s)) => s,
                // No deadline at all (a decoder that sets none): still wake
                // now and then; the loop only waits again.
                (None, None) => now + RELEASE_AFTER,
            };
            self.wait(until);
        }
    }

    /// Whether nothing is buffered either way and no write failed: the
    /// socket alone is the connection's state.
    pub fn is_settled(&self) -> bool {
        self.rbuf.is_empty() && self.wbuf.is_empty() && !self.broken
    }

    /// Whether unread input is waiting in the socket (see
    /// [`crate::net::input_waiting`]).
    pub fn input_waiting(&self) -> bool {
        crate::net::input_waiting(self.stream.as_raw_fd())
    }

    /// The socket, without the buffers (see [`Io::is_settled`]).
    pub fn into_stream(self) -> Stream {
        self.stream
    }

    /// The output buffer, for encoders to append to. Its first allocation
    /// is [`WRITE_INITIAL`] bytes: grown from empty by a response's appends
    /// it was reallocated three times per connection (callgrind).
    ///
    /// Inline, with the allocation out of line: a response takes the buffer
    /// four or five times, and the calls alone were 55 instructions per
    /// pipelined request (callgrind).
    #[inline]
    pub fn out(&mut self) -> &mut Vec<u8> {
        if self.wbuf.capacity() == 0 {
            self.fresh_out();
        }
        &mut self.wbuf
    }

    #[cold]
    #[inline(never)]
    fn fresh_out(&mut self) {
        self.wbuf.0 = take_write_buffer();
    }

    /// Queues `data` for sending; writes out when the batch is full.
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() >= DIRECT_WRITE {
            return self.write_out(data, false);
        }
        self.out().extend_from_slice(data);
        self.flush_if_full()
    }

    /// Writes out once a batch of output is full, so that a long run of
    /// responses without a wait in between (a pipelined batch) cannot grow
    /// the buffer without bound.
    pub fn flush_if_full(&mut self) -> io::Result<()> {
        if self.wbuf.len() >= WRITE_BATCH { self.flush() } else { Ok(()) }
    }

    /// Writes the buffered output and then `data` with as few syscalls as
    /// possible (one sendmsg of both), without copying `data`. With
    /// `fin_follows`, see [`Io::write_all`].
    fn write_out(&mut self, data: &[u8], fin_follows: bool) -> io::Result<()> {
        if self.broken {
            self.wbuf.clear();
            return Err(broken());
        }
        if self.wbuf.is_empty() && data.is_empty() {
            return Ok(());
        }
        let wbuf = std::mem::take(&mut self.wbuf);
        let result = self.write_all(&wbuf, data, fin_follows);
        self.wbuf = wbuf;
        self.wbuf.clear();
        self.broken = result.is_err();
        if self.wbuf.capacity() > 4 * WRITE_BATCH {
            self.wbuf = WriteBuf::default();
        }
        result
    }

    /// Writes `first` then `second` whole. A write that cannot make
    /// progress for `write_timeout` fails with TimedOut. With `fin_follows`
    /// the last segment waits for the FIN (see [`Stream::try_write`]).
    fn write_all(&mut self, first: &[u8], second: &[u8], fin_follows: bool) -> io::Result<()> {
        let mut bufs = [IoSlice::new(first), IoSlice::new(second)];
        let mut slices: &mut [IoSlice<'_>] = &mut bufs;
        if slices[1].is_empty() {
            slices = &mut slices[..1];
        }
        if slices[0].is_empty() {
            slices = &mut slices[1..];
        }
        // When the current stall (no progress since the first would-block)
        // times out.
        let mut stall_deadline = None;
        while !slices.is_empty() {
            match self.stream.try_write(slices, fin_follows) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    IoSlice::advance_slices(&mut slices, n);
                    stall_deadline = None;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let now = Moment::now();
                    let deadline = *stall_deadline.get_or_insert_with(|| now + self.write_timeout);
                    if now >= deadline {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    self.wait(deadline);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes everything buffered.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_out(&[], false)
    }

    /// Sends the last output and ends the connection as `how` says.
    pub fn close(mut self, how: Close) {
        if self.finish(how).is_ok() && how == Close::Linger {
            self.linger();
        }
        // Dropping the socket closes it: FIN, unless input is left unread
        // (then the kernel sends RST, see `Close::Linger`).
    }

    /// Writes everything buffered; with [`Close::PeerDone`] and
    /// [`Close::Linger`] the last segment is held for the FIN, which the
    /// shutdown then sends with it. (Not left to the close: the kernel only
    /// sends FIN when the last descriptor of the socket goes, and the
    /// master may still hold one of a connection it passed us.)
    fn finish(&mut self, how: Close) -> io::Result<()> {
        if how == Close::Now {
            return self.flush();
        }
        self.write_out(&[], true)?;
        let _ = self.stream.shutdown(Shutdown::Write);
        Ok(())
    }

    /// Reads and discards until the peer closes too, bounded in time and
    /// bytes (the write side is already shut down).
    ///
    /// Never inlined: its 4 KiB buffer would otherwise sit in the frame of
    /// the function that runs the whole connection, and every request's
    /// frames below it would start a page further down the coroutine's
    /// stack (more stack pages touched per connection).
    #[inline(never)]
    fn linger(&mut self) {
        let deadline = Moment::now() + Duration::from_secs(2).min(self.write_timeout);
        let mut discarded = 0usize;
        let mut sink = [0u8; 4096];
        while discarded < 256 * 1024 {
            match self.stream.try_read(&mut sink) {
                Ok(0) => break,
                Ok(n) => discarded += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Moment::now() >= deadline {
                        break;
                    }
                    self.wait(deadline);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
}

impl AsRawFd for Io {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

/// How [`Io::close`] ends a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Send what is buffered, then close. The output leaves before the
    /// close, so if input arrives meanwhile (a pipelined request to a
    /// connection the server chose to end), the reset the kernel answers
    /// the close with comes after our last response, not instead of it.
    Now,
    /// The peer announced that it sends nothing more (its last request
    /// said `Connection: close`, which forbids further requests, RFC 9112
    /// §9.6): the last response and the FIN leave in one segment (a
    /// shutdown, then the close). For the peer that is a packet less to
    /// receive and acknowledge, and it reads the end of the stream with the
    /// response.
    PeerDone,
    /// Input is left unread, and closing a socket with unread input makes
    /// the kernel send RST, which can destroy our last response before the
    /// client reads it (e.g. a 400 answering a request followed by more
    /// bytes). So: send the FIN with the last response, then read and
    /// discard for a short while until the peer closes too (what nginx
    /// calls lingering close).
    Linger,
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::sync::Arc;
    use std::time::Duration;

    use super::{
        Close, Io, READ_INITIAL, ReadBuf, SPARE_READ, SPARE_WRITE, WRITE_INITIAL, WriteBuf, take_write_buffer,
    };
    use crate::alarm::Alarms;
    use crate::clock::Moment;
    use crate::net::{Family, Stream};

    /// A loopback connection: the client's end, and the server's as an
    /// `Io` registered with may.
    fn connection() -> (TcpStream, Io) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_nodelay(true).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nodelay(true).unwrap();
        let stream = Stream::from_fd(server.into(), Family::Tcp).unwrap();
        let io = Io::new(stream, READ_INITIAL, Duration::from_secs(5), &Arc::new(Alarms::default()));
        (client, io)
    }

    /// Whether `client` receives anything within 100 ms.
    fn receives_soon(client: &mut TcpStream) -> bool {
        client.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut byte = [0u8; 1];
        match client.peek(&mut byte) {
            Ok(_) => true,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_last_write_waits_for_the_fin_and_leaves_with_it() {
        const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nhi";
        // An ordinary write leaves at once: the check below can see it.
        let (mut client, mut io) = connection();
        io.write_all(RESPONSE, &[], false).unwrap();
        assert!(receives_soon(&mut client));
        // A last write (MSG_MORE) is held until the FIN goes.
        let (mut client, mut io) = connection();
        io.write_all(RESPONSE, &[], true).unwrap();
        assert!(!receives_soon(&mut client), "the last segment waits for the FIN");
        io.stream.shutdown(std::net::Shutdown::Write).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut received = Vec::new();
        client.read_to_end(&mut received).unwrap();
        assert_eq!(received, RESPONSE);
    }

    #[test]
    fn a_client_that_is_done_gets_the_response_and_the_end_before_the_socket_closes() {
        // As when the master still holds a descriptor of the socket: the
        // response must not wait for the last one to close.
        let (mut client, mut io) = connection();
        io.send(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        io.finish(Close::PeerDone).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut received = Vec::new();
        client.read_to_end(&mut received).unwrap();
        assert_eq!(received, b"HTTP/1.1 204 No Content\r\n\r\n");
        drop(io);
    }

    #[test]
    fn a_lingering_close_sends_the_response_with_the_fin_and_reads_on() {
        let (mut client, mut io) = connection();
        io.send(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
        client.write_all(b"unread input").unwrap();
        let closing = on_coroutine(move || io.close(Close::Linger));
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut received = Vec::new();
        client.read_to_end(&mut received).unwrap();
        assert_eq!(received, b"HTTP/1.1 400 Bad Request\r\n\r\n");
        // The server still reads: had it closed with "unread input" unread,
        // its kernel would have reset the connection, and more input would
        // be answered with a reset too.
        client.write_all(b"more unread input").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(client.read(&mut [0u8; 16]).unwrap(), 0, "end of stream, not a reset");
        drop(client);
        closing.join().unwrap();
    }

    /// Runs `f` on a may coroutine (where waits park).
    fn on_coroutine<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> may::coroutine::JoinHandle<T> {
        // SAFETY: `f` keeps no thread-local state across a wait (see
        // `worker::spawn`), and the default stack fits these tests.
        unsafe { may::coroutine::spawn(f) }
    }

    #[test]
    fn a_new_connection_reads_input_from_before_or_after_whenever_it_first_reads() {
        for at_once in [false, true] {
            for delay in [None, Some(Duration::from_millis(50))] {
                let (mut client, mut io) = connection();
                match delay {
                    None => {
                        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
                        // In the server's socket before the first read, as
                        // when a deferred accept returns.
                        while !crate::net::input_waiting(io.as_raw_fd()) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    Some(delay) => drop(std::thread::spawn(move || {
                        std::thread::sleep(delay);
                        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
                        // Kept open until the server has read.
                        std::thread::sleep(Duration::from_secs(1));
                    })),
                }
                let got = on_coroutine(move || {
                    if !at_once {
                        io.await_first_input();
                    }
                    let n = io.fill(Some(Moment::now() + Duration::from_secs(5))).unwrap();
                    (n, io.rbuf.data().to_vec(), io.waits)
                })
                .join()
                .unwrap();
                let what = format!("input sent {delay:?} after accept, first read at once: {at_once}");
                assert_eq!((got.0, &got.1[..]), (18, &b"GET / HTTP/1.1\r\n\r\n"[..]), "{what}");
                // A request that came with the accept (as under
                // TCP_DEFER_ACCEPT) is read without parking first.
                // Waiting for the first event, it waits at least once (more
                // if may reports writability alone first).
                let waits = match (at_once, delay) {
                    (true, None) => 0..=0,
                    _ => 1..=usize::MAX,
                };
                assert!(waits.contains(&got.2), "{what}: {} waits", got.2);
            }
        }
    }

    /// The first storage a buffer gets, as an address.
    fn storage(buf: &mut ReadBuf) -> usize {
        buf.spare().as_ptr() as usize
    }

    #[test]
    fn a_read_buffer_given_back_serves_the_next_connection() {
        let mut first = ReadBuf::new(READ_INITIAL);
        let address = storage(&mut first);
        drop(first);
        let mut second = ReadBuf::new(READ_INITIAL);
        assert_eq!(storage(&mut second), address);
        // Reused storage keeps what the last connection read: only the
        // filled part is ever data.
        assert!(second.data().is_empty());
    }

    #[test]
    fn a_write_buffer_given_back_is_reused_empty_and_a_grown_one_is_not_kept() {
        let mut first = WriteBuf::default();
        first.0 = take_write_buffer();
        first.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let address = first.as_ptr() as usize;
        drop(first);
        let second = take_write_buffer();
        assert_eq!((second.as_ptr() as usize, second.len(), second.capacity()), (address, 0, WRITE_INITIAL));
        let mut grown = WriteBuf(second);
        grown.extend_from_slice(&[b'x'; 2 * WRITE_INITIAL]);
        drop(grown);
        assert_eq!(SPARE_WRITE.with(|spare| spare.borrow().len()), 0);
    }

    #[test]
    fn a_grown_read_buffer_is_not_kept() {
        let mut grown = ReadBuf::new(4 * READ_INITIAL);
        let len = grown.spare().len();
        grown.filled(len);
        assert_eq!(grown.spare().len(), READ_INITIAL, "full at the initial size: doubled");
        assert_eq!(grown.buf.len(), 2 * READ_INITIAL);
        drop(grown);
        assert_eq!(SPARE_READ.with(|spare| spare.borrow().len()), 0);
        let mut plain = ReadBuf::new(4 * READ_INITIAL);
        storage(&mut plain);
        drop(plain);
        assert_eq!(SPARE_READ.with(|spare| spare.borrow().len()), 1);
    }
}
