//! Idle keep-alive connections without a coroutine.
//!
//! A coroutine waiting for a connection's next request costs the stack pages
//! it touched (12 KiB or more) for as long as the client stays quiet, and
//! most of a server's connections are quiet most of the time. After
//! `--park-idle-after`, a connection's handler loop ends and its socket
//! moves here: one record of about a hundred bytes, watched by one epoll
//! instance on one thread per worker. When the next request arrives (or the
//! client closes), the socket goes back to may on another coroutine; when
//! the idle timeout passes first, it is closed here. A drain closes every
//! parked connection at once, which is what a drain does to idle ones.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::clock::Moment;
use crate::conn::{Admission, ConnState};
use crate::net::{Family, Stream};

/// Longest the watcher sleeps without looking at deadlines: bounds how late
/// a parked connection's idle timeout may fire when none was due at the
/// start of the wait.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// Everything a parked connection needs to be served again. Dropping it
/// closes the socket and un-counts the connection.
pub struct Parked {
    fd: OwnedFd,
    family: Family,
    conn: ConnState,
    admission: Admission,
}

impl Parked {
    pub fn new(stream: Stream, conn: ConnState, admission: Admission) -> Self {
        let (fd, family) = stream.into_fd();
        Parked { fd, family, conn, admission }
    }

    /// The socket, registered with may again (on the calling coroutine's
    /// scheduler), and the rest of the record; an error closes the
    /// connection (see [`Stream::from_fd`]).
    pub fn into_parts(self) -> io::Result<(Stream, ConnState, Admission)> {
        Ok((Stream::from_fd(self.fd, self.family)?, self.conn, self.admission))
    }
}

struct Lot {
    next_key: u64,
    parked: HashMap<u64, (Parked, Moment)>,
    /// (idle deadline, key), earliest first.
    deadlines: BTreeSet<(Moment, u64)>,
    /// Set by a drain: everything parked was closed, and nothing more may
    /// park.
    closed: bool,
}

/// The parked connections of one worker and the epoll instance watching
/// them.
pub struct ParkingLot {
    epoll: Epoll,
    lot: Mutex<Lot>,
    /// Connections parked since the start (see [`ParkingLot::give_back_memory`]).
    parked_total: AtomicU64,
}

/// Parks between two heap trims, at least.
const TRIM_EVERY: u64 = 256;

impl std::fmt::Debug for ParkingLot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkingLot").field("parked", &self.lock().parked.len()).finish()
    }
}

impl ParkingLot {
    pub fn new() -> io::Result<ParkingLot> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(io::Error::from)?;
        let lot = Lot { next_key: 0, parked: HashMap::new(), deadlines: BTreeSet::new(), closed: false };
        Ok(ParkingLot { epoll, lot: Mutex::new(lot), parked_total: AtomicU64::new(0) })
    }

    fn lock(&self) -> MutexGuard<'_, Lot> {
        self.lot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches `conn` until it becomes readable or `deadline` passes. A
    /// connection that cannot be watched (the lot is closed by a drain, or
    /// epoll refuses it) is closed: it was idle, so nothing is lost.
    pub fn park(&self, conn: Parked, deadline: Moment) {
        let mut lot = self.lock();
        if lot.closed {
            return;
        }
        let key = lot.next_key;
        lot.next_key += 1;
        // One-shot: the first event hands the socket back, and no second
        // event can race the hand-over.
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLONESHOT;
        if let Err(e) = self.epoll.add(conn.fd.as_fd(), EpollEvent::new(flags, key)) {
            log::warn!("cannot watch an idle connection ({e}); closing it");
            return;
        }
        lot.deadlines.insert((deadline, key));
        self.parked_total.fetch_add(1, Ordering::Relaxed);
        lot.parked.insert(key, (conn, deadline));
    }

    /// Closes every parked connection, and every one parked from now on.
    /// One whose next request is already in its socket stays, for the
    /// watcher to hand back (its one-shot event is armed and fires for
    /// input already there): closing on that request would reset the
    /// connection instead of answering it.
    pub fn close_all(&self) {
        let mut lot = self.lock();
        lot.closed = true;
        let Lot { parked, deadlines, .. } = &mut *lot;
        // Dropping closes each socket (which also removes it from epoll).
        parked.retain(|_, (conn, _)| crate::net::input_waiting(conn.fd.as_raw_fd()));
        deadlines.retain(|(_, key)| parked.contains_key(key));
    }

    /// Returns freed heap memory to the kernel after many connections
    /// parked. Parking frees each one's buffers (a few KiB of heap), but
    /// glibc keeps freed memory below the top of its heaps mapped: after a
    /// wave of connections goes idle, the process would stay as large as at
    /// its busiest. Called from the worker's main thread every heartbeat;
    /// `seen` is the caller's count at its last trim.
    pub fn give_back_memory(&self, seen: &mut u64) {
        let total = self.parked_total.load(Ordering::Relaxed);
        if total.saturating_sub(*seen) < TRIM_EVERY {
            return;
        }
        *seen = total;
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only walks glibc's own heaps under their
        // locks; it has no preconditions.
        unsafe {
            nix::libc::malloc_trim(0);
        }
    }

    /// Takes `key` out of the lot and out of epoll.
    fn take(&self, lot: &mut Lot, key: u64) -> Option<Parked> {
        let (conn, deadline) = lot.parked.remove(&key)?;
        lot.deadlines.remove(&(deadline, key));
        let _ = self.epoll.delete(conn.fd.as_fd());
        Some(conn)
    }

    /// The watcher: hands readable connections to `resume` and closes the
    /// ones whose idle timeout passed. Runs for the life of the process.
    pub fn watch(&self, resume: &dyn Fn(Parked)) -> ! {
        let mut events = vec![EpollEvent::empty(); 256];
        loop {
            let wait = {
                let lot = self.lock();
                let now = Moment::now();
                lot.deadlines.first().map_or(MAX_WAIT, |(d, _)| d.saturating_since(now).min(MAX_WAIT))
            };
            // Whole milliseconds, at least one while a deadline is ahead:
            // the coarse clock may show the same millisecond for a kernel
            // tick, so a deadline that near costs a few 1 ms waits, never a
            // spin.
            let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
            let n = match self.epoll.wait(&mut events, EpollTimeout::from(ms)) {
                Ok(n) => n,
                Err(nix::Error::EINTR) => 0,
                Err(e) => {
                    // Nothing here can fix a broken epoll instance: stop
                    // parking (a drain or the idle connections' clients
                    // will close what is parked) and say so.
                    log::error!("the idle-connection watcher failed: {e}; idle connections are closed");
                    self.close_all();
                    loop {
                        std::thread::park();
                    }
                }
            };
            let mut ready = Vec::with_capacity(n);
            {
                let mut lot = self.lock();
                for ev in &events[..n] {
                    if let Some(conn) = self.take(&mut lot, ev.data()) {
                        ready.push(conn);
                    }
                }
                let now = Moment::now();
                while let Some(&(deadline, key)) = lot.deadlines.first() {
                    if deadline > now {
                        break;
                    }
                    // The idle timeout: close, as a connection on its
                    // coroutine would.
                    drop(self.take(&mut lot, key));
                }
            }
            // Outside the lock: spawning may allocate a stack.
            for conn in ready {
                resume(conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Parked, ParkingLot};
    use crate::clock::Moment;
    use crate::conn::{ConnState, ServerState};
    use crate::net::{Family, Stream};

    /// A drain closes the parked connections that are quiet, and keeps the
    /// one whose next request already arrived (for the watcher to resume):
    /// closing on it would answer that request with a reset.
    #[test]
    fn close_all_keeps_a_connection_whose_request_is_waiting() {
        let server = Arc::new(ServerState::default());
        let lot = ParkingLot::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let park = || {
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (accepted, _) = listener.accept().unwrap();
            let stream = Stream::from_fd(accepted.into(), Family::Tcp).unwrap();
            lot.park(
                Parked::new(stream, ConnState::idle_now(), server.admit()),
                Moment::now() + Duration::from_secs(60),
            );
            client
        };
        let mut quiet = park();
        let mut waiting = park();
        waiting.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        lot.close_all();
        assert_eq!(lot.lock().parked.len(), 1);
        quiet.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(quiet.read(&mut [0u8; 8]).unwrap(), 0, "the quiet one is closed");
        waiting.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let still_open = waiting.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(still_open.kind(), std::io::ErrorKind::WouldBlock, "the one with a request stays open");
    }
}
