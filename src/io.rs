//! The only code that touches a connection's socket: a read buffer, a write
//! buffer, and reads and writes that park the coroutine (never the thread)
//! until the socket is ready or a deadline passes.

use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use crate::net::Stream;

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

/// How long a connection with nothing buffered keeps its buffers while it
/// waits for input (see [`Io::fill`]).
pub const RELEASE_AFTER: Duration = Duration::from_secs(1);

/// Granularity of read timeouts.
const TIMER_STEP_MS: u128 = 100;

/// The wait to ask may for, given the time left: rounded up to a multiple of
/// 100 ms. may keeps one timer list per distinct interval (in nanoseconds)
/// and creates a list, and wakes its event loop, for every interval it has
/// not seen: an exact "time left" would take that slow path on every
/// keep-alive cycle. Rounded, the idle wait is always exactly the idle
/// timeout and may appends to a list it already has.
fn timer_interval(left: Duration) -> Duration {
    let steps = left.as_millis().div_ceil(TIMER_STEP_MS).max(1);
    Duration::from_millis(u64::try_from(steps * TIMER_STEP_MS).unwrap_or(u64::MAX))
}

fn broken() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "an earlier write on this connection failed")
}

/// Received bytes not yet decoded. The storage is always initialised, so
/// reading into it needs no `unsafe`.
#[derive(Debug, Default)]
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
        if self.end == self.buf.len() && self.buf.len() < self.cap {
            let grown = if self.buf.is_empty() { READ_INITIAL } else { self.buf.len() * 2 };
            self.buf.resize(grown.min(self.cap), 0);
        }
        &mut self.buf[self.end..]
    }

    fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// Frees the storage (nothing may be buffered).
    fn release(&mut self) {
        if self.is_empty() {
            self.buf = Vec::new();
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

/// One connection's socket and buffers.
pub struct Io {
    stream: Stream,
    pub rbuf: ReadBuf,
    pub wbuf: Vec<u8>,
    write_timeout: Duration,
    /// A write failed (possibly after sending part of the buffer): the byte
    /// stream is now unknown to us, so nothing more may be sent on it.
    broken: bool,
    /// The read timeout last given to may.
    read_timeout: Option<Duration>,
    /// Writes so far, and whether the write timeout is armed (see
    /// [`Io::arm_write_timeout`]).
    writes: u64,
    write_timeout_armed: bool,
}

impl Io {
    /// `read_cap` bounds the read buffer (at least the largest head).
    pub fn new(stream: Stream, read_cap: usize, write_timeout: Duration) -> Io {
        Io {
            stream,
            rbuf: ReadBuf::new(read_cap.max(READ_GROW_MAX)),
            wbuf: Vec::new(),
            write_timeout,
            broken: false,
            read_timeout: None,
            writes: 0,
            write_timeout_armed: false,
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
    /// a keep-alive client's next request usually comes sooner, and the wait
    /// costs nothing extra (the read timeout stays the same from one request
    /// to the next). A connection quiet for longer gives its buffers back
    /// and waits for readability without them: idle connections are most
    /// connections, and their memory is what a server's capacity is made of.
    pub fn fill(&mut self, deadline: Option<Instant>) -> io::Result<usize> {
        Ok(self.fill_or_quiet(deadline, None)?.unwrap_or(0))
    }

    /// [`Io::fill`], except that with nothing buffered a first wait of
    /// `quiet_after` that brings no input returns `Ok(None)` instead of
    /// waiting on: the caller then puts the connection aside without its
    /// coroutine (see `park`). Only when the deadline is further away than
    /// twice that, so a connection about to time out is not moved for
    /// nothing.
    pub fn fill_or_quiet(
        &mut self,
        deadline: Option<Instant>,
        quiet_after: Option<Duration>,
    ) -> io::Result<Option<usize>> {
        self.flush()?;
        let stage = quiet_after.unwrap_or(RELEASE_AFTER);
        let mut released = false;
        loop {
            let left = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    Some(left)
                }
                None => None,
            };
            let staged = !released && self.rbuf.is_empty() && left.is_none_or(|l| l > 2 * stage);
            self.set_read_timeout(if staged { Some(stage) } else { left.map(timer_interval) })?;
            if released {
                match self.stream.peek(&mut [0u8; 1]) {
                    Ok(_) => {} // readable, or end of stream: read it below
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            let spare = self.rbuf.spare();
            if spare.is_empty() {
                // Decoders reject input before it outgrows the buffer;
                // reaching here is a decoder bug, reported rather than
                // mistaken for EOF.
                return Err(io::Error::other("read buffer full"));
            }
            match self.stream.read(spare) {
                Ok(n) => {
                    self.rbuf.filled(n);
                    return Ok(Some(n));
                }
                Err(e) if staged && e.kind() == io::ErrorKind::TimedOut => {
                    if quiet_after.is_some() {
                        return Ok(None);
                    }
                    self.rbuf.release();
                    self.wbuf = Vec::new();
                    released = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether nothing is buffered either way and no write failed: the
    /// socket alone is the connection's state.
    pub fn is_settled(&self) -> bool {
        self.rbuf.is_empty() && self.wbuf.is_empty() && !self.broken
    }

    /// The socket, without the buffers (see [`Io::is_settled`]).
    pub fn into_stream(self) -> Stream {
        self.stream
    }

    /// Setting it costs a setsockopt syscall (may mirrors it into
    /// SO_RCVTIMEO), so only changes are set.
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if timeout != self.read_timeout {
            self.stream.set_read_timeout(timeout)?;
            self.read_timeout = timeout;
        }
        Ok(())
    }

    /// Queues `data` for sending; writes out when the batch is full.
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() >= DIRECT_WRITE {
            return self.send_direct(data);
        }
        self.wbuf.extend_from_slice(data);
        if self.wbuf.len() >= WRITE_BATCH { self.flush() } else { Ok(()) }
    }

    /// Writes the buffered output and then `data` with as few syscalls as
    /// possible (writev), without copying `data`.
    fn send_direct(&mut self, data: &[u8]) -> io::Result<()> {
        if self.broken {
            return Err(broken());
        }
        let result = self.write_vectored_all(data);
        self.wbuf.clear();
        self.broken = result.is_err();
        result
    }

    /// A write that cannot make progress for `write_timeout` fails with
    /// TimedOut (may applies the timeout to every write that parks). Setting
    /// it costs a setsockopt, so it is armed lazily: the first write on a
    /// connection, if small, goes into an empty send buffer and cannot
    /// block; any later or larger write arms it first. A connection that
    /// writes one response and closes never pays for it.
    fn arm_write_timeout(&mut self, len: usize) -> io::Result<()> {
        if !self.write_timeout_armed && (self.writes > 0 || len > 1024) {
            self.stream.set_write_timeout(Some(self.write_timeout))?;
            self.write_timeout_armed = true;
        }
        self.writes += 1;
        Ok(())
    }

    fn write_vectored_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.arm_write_timeout(self.wbuf.len() + data.len())?;
        let mut bufs = [IoSlice::new(&self.wbuf), IoSlice::new(data)];
        let mut slices: &mut [IoSlice<'_>] = &mut bufs;
        if slices[0].is_empty() {
            slices = &mut slices[1..];
        }
        while !slices.is_empty() {
            match self.stream.write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes everything buffered.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.broken {
            self.wbuf.clear();
            return Err(broken());
        }
        let result = self.write_buffered();
        self.wbuf.clear();
        self.broken = result.is_err();
        if self.wbuf.capacity() > 4 * WRITE_BATCH {
            self.wbuf = Vec::new();
        }
        result
    }

    fn write_buffered(&mut self) -> io::Result<()> {
        self.arm_write_timeout(self.wbuf.len())?;
        let mut done = 0;
        while done < self.wbuf.len() {
            match self.stream.write(&self.wbuf[done..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Flushes, then closes so that the peer reads everything we sent.
    ///
    /// Closing a socket with unread input makes the kernel send RST, which
    /// can destroy our last response before the client reads it (e.g. a 400
    /// answering a request followed by more bytes). So: send FIN, then read
    /// and discard for a short while until the peer closes too (what nginx
    /// calls lingering close), bounded in time and bytes.
    pub fn close(mut self, linger: bool) {
        if self.flush().is_err() {
            return;
        }
        if !linger {
            // Dropping the socket closes it, which sends FIN by itself.
            return;
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + Duration::from_secs(2).min(self.write_timeout);
        let mut discarded = 0usize;
        let mut sink = [0u8; 4096];
        while discarded < 256 * 1024 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(timer_interval(left))).is_err() {
                break;
            }
            match self.stream.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_intervals_round_up_to_100ms() {
        assert_eq!(timer_interval(Duration::from_secs(75) - Duration::from_micros(3)), Duration::from_secs(75));
        assert_eq!(timer_interval(Duration::from_millis(1)), Duration::from_millis(100));
        assert_eq!(timer_interval(Duration::from_millis(250)), Duration::from_millis(300));
        assert_eq!(timer_interval(Duration::from_millis(300)), Duration::from_millis(300));
    }
}
