//! The sockets a worker serves: TCP (IPv4, IPv6) and Unix stream
//! listeners, and the connections they accept. One enum each, so the
//! connection code is written once for both families; the match costs
//! nothing next to the syscall behind it.

use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};

use may::io::{CoIo, WaitIo, WaitIoWaker};
use may::net::TcpStream;
use may::os::unix::net::UnixStream;
use nix::sys::epoll::EpollFlags;
use nix::sys::socket::{MsgFlags, recv, send, sendmsg};

/// A listening socket received from the master, registered with may.
pub struct Listener {
    socket: ListenSocket,
    first_read: FirstRead,
}

/// may's own listener types park in `accept`, where the caller cannot
/// tell whether they did (see [`Listener::try_accept`]); a plain socket in
/// may's generic wrapper accepts without waiting and waits on its own.
enum ListenSocket {
    Tcp(CoIo<std::net::TcpListener>),
    Unix(CoIo<std::os::unix::net::UnixListener>),
}

/// When a new connection's first read is worth trying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstRead {
    /// At once: the listener defers accept (`TCP_DEFER_ACCEPT`), so the
    /// kernel hands a connection over once its first bytes have arrived
    /// (or, rarely, when the deferral times out: then the read finds
    /// nothing and the connection waits as below). No wait before the
    /// request, as nginx does with `deferred`.
    AtOnce,
    /// After may's first event on the socket: accepted as soon as the
    /// handshake completed, a connection's request usually comes later, so
    /// a read at once would only say "would block" (see
    /// `Io::await_first_input`).
    AfterEvent,
}

/// Why a descriptor from the master cannot be served.
#[derive(Debug)]
pub enum ListenerError {
    NotStream,
    NotListening,
    /// Neither IPv4, IPv6 nor a Unix socket.
    Family,
    Io(io::Error),
}

impl std::fmt::Display for ListenerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenerError::NotStream => write!(f, "not a stream socket"),
            ListenerError::NotListening => write!(f, "listen() was not called on it"),
            ListenerError::Family => write!(f, "neither a TCP nor a Unix socket"),
            ListenerError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl Listener {
    /// Checks that `fd` is a listening stream socket of a family we serve
    /// and hands it to may. Must run after may is configured: registering
    /// the first socket starts may's scheduler.
    pub fn from_fd(fd: OwnedFd) -> Result<Listener, ListenerError> {
        let socket = socket2::Socket::from(fd);
        if socket.r#type().map_err(ListenerError::Io)? != socket2::Type::STREAM {
            return Err(ListenerError::NotStream);
        }
        if !socket.is_listener().map_err(ListenerError::Io)? {
            return Err(ListenerError::NotListening);
        }
        let local = socket.local_addr().map_err(ListenerError::Io)?;
        let unix = local.domain() == socket2::Domain::UNIX;
        if !unix && local.as_socket().is_none() {
            return Err(ListenerError::Family);
        }
        prepare(&socket, unix).map_err(ListenerError::Io)?;
        // The master's --defer-accept, or systemd's DeferAcceptSec=.
        let deferred = !unix && crate::listen::defer_accept(&socket).is_ok_and(|secs| secs > 0);
        let first_read = if deferred { FirstRead::AtOnce } else { FirstRead::AfterEvent };
        let fd = OwnedFd::from(socket);
        let socket = if unix {
            ListenSocket::Unix(
                CoIo::new(std::os::unix::net::UnixListener::from(fd)).map_err(|e| ListenerError::Io(e.into()))?,
            )
        } else {
            ListenSocket::Tcp(CoIo::new(std::net::TcpListener::from(fd)).map_err(|e| ListenerError::Io(e.into()))?)
        };
        Ok(Listener { socket, first_read })
    }

    /// Takes the next queued connection without waiting: `Ok(None)` when
    /// the queue is empty (then [`Listener::wait`]). The peer address is
    /// `None` for Unix sockets.
    ///
    /// may's own `accept` parks when the queue is empty, and its caller
    /// cannot tell whether it did; the accept loop needs to know, since a
    /// park is what lets the open connections run (see `worker`). The
    /// system calls are the ones may makes: accept4, then its registration.
    pub fn try_accept(&self) -> io::Result<Option<(Stream, Option<SocketAddr>)>> {
        // Each arm first does as may's accept does: it forgets the events
        // seen so far, so that a `wait` after an empty queue parks until a
        // new one. (In a worker, events come only while its one scheduler
        // thread polls, so none between the reset and the accept.) Left
        // set, an old event would end the next wait at once, before
        // anything else has run. Both accept with accept4 (close-on-exec)
        // and retry on EINTR.
        #[allow(deprecated)] // may deems the reset unneeded before its own calls
        let accepted = match &self.socket {
            // TCP_NODELAY comes from the listener (see `prepare`).
            ListenSocket::Tcp(l) => {
                l.reset_io();
                l.inner().accept().map(|(s, peer)| (OwnedFd::from(s), Family::Tcp, Some(peer)))
            }
            ListenSocket::Unix(l) => {
                l.reset_io();
                l.inner().accept().map(|(s, _)| (OwnedFd::from(s), Family::Unix, None))
            }
        };
        match accepted {
            Ok((fd, family, peer)) => Stream::from_fd(fd, family).map(|stream| Some((stream, peer))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Parks the coroutine until may sees an event on the listener (a
    /// connection queued, usually) or [`Listener::waker`] is used; an
    /// event since the last [`Listener::try_accept`] makes it return at
    /// once. It may return with the queue empty. Only for a coroutine.
    pub fn wait(&self) {
        match &self.socket {
            ListenSocket::Tcp(l) => l.wait_io(),
            ListenSocket::Unix(l) => l.wait_io(),
        };
    }

    /// Ends a [`Listener::wait`] from another thread (the drain); used
    /// after the last [`Listener::try_accept`] but before the wait, it
    /// makes that wait return at once (`try_accept` forgets it).
    pub fn waker(&self) -> WaitIoWaker {
        match &self.socket {
            ListenSocket::Tcp(l) => l.waker(),
            ListenSocket::Unix(l) => l.waker(),
        }
    }

    /// When the connections this listener accepts are first read.
    pub fn first_read(&self) -> FirstRead {
        self.first_read
    }
}

/// Sets what every accepted connection needs on the listener itself.
fn prepare(socket: &socket2::Socket, unix: bool) -> io::Result<()> {
    socket.set_nonblocking(true)?;
    if !unix {
        // Linux copies TCP_NODELAY from the listener to every socket it
        // accepts: set once here, it costs no system call per connection.
        // Responses are written whole by our own batching; Nagle would only
        // delay the last segment of each.
        if let Err(e) = socket.set_tcp_nodelay(true) {
            log::warn!("cannot set TCP_NODELAY on the listener, responses may be delayed by Nagle: {e}");
        }
    }
    Ok(())
}

/// One accepted connection.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Event bits from [`Stream::wait_io`] that say the peer closed its side
/// (or the connection failed): from then on a short read no longer means
/// the socket is empty, since the end of the stream is only reported by the
/// read after the data.
pub const HANGUP: usize =
    (EpollFlags::EPOLLRDHUP.bits() | EpollFlags::EPOLLHUP.bits() | EpollFlags::EPOLLERR.bits()) as usize;

/// Event bits from [`Stream::wait_io`] that can mean new input (or its
/// end): a wake-up without any of them (writability, which every new
/// registration reports at once, or an alarm) leaves an empty socket empty.
pub const READABLE: usize = HANGUP | (EpollFlags::EPOLLIN.bits() | EpollFlags::EPOLLPRI.bits()) as usize;

/// Whether input is waiting in socket `fd` (data, not the end of the
/// stream or an error), without taking it: one `recv(MSG_PEEK)`. Closing a
/// socket on unread data makes the kernel reset the connection; its end of
/// stream or an error does not.
pub fn input_waiting(fd: RawFd) -> bool {
    loop {
        match peek(fd) {
            Ok(n) => return n > 0,
            Err(nix::Error::EINTR) => {}
            Err(_) => return false,
        }
    }
}

/// Looks at one byte of `fd`'s input without taking it or waiting: 1 for
/// data, 0 for the end of the stream.
fn peek(fd: RawFd) -> nix::Result<usize> {
    recv(fd, &mut [0u8; 1], MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_PEEK)
}

/// Every call on a connection is nonblocking; waiting is separate
/// ([`Stream::wait_io`]), so that the caller decides when a wait is needed
/// at all and how long it may last (see `io` and `alarm`).
impl Stream {
    /// Reads what has arrived; `WouldBlock` when nothing has.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(recv(self.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT)?)
    }

    /// Whether input (or end of stream) is there, without taking it or
    /// needing a buffer: `Ok` if so, `WouldBlock` if not.
    pub fn try_peek(&self) -> io::Result<()> {
        peek(self.as_raw_fd())?;
        Ok(())
    }

    /// Writes as much of `bufs` as the socket takes now (one `sendmsg`);
    /// `WouldBlock` when it takes nothing. MSG_NOSIGNAL: a peer that went
    /// away is an `EPIPE` error, never a SIGPIPE.
    ///
    /// `fin_follows` promises a shutdown or close right after the last of
    /// these writes: on TCP, MSG_MORE then holds back the last partial
    /// segment, and the kernel sends it with the FIN (Linux sets FIN on an
    /// unsent last segment). Without that promise a held segment would wait
    /// for more data that never comes.
    pub fn try_write(&self, bufs: &[IoSlice<'_>], fin_follows: bool) -> io::Result<usize> {
        let mut flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        if fin_follows && matches!(self, Stream::Tcp(_)) {
            flags |= MsgFlags::from_bits_retain(nix::libc::MSG_MORE);
        }
        Ok(match bufs {
            [one] => send(self.as_raw_fd(), one, flags)?,
            _ => sendmsg::<()>(self.as_raw_fd(), bufs, &[], flags, None)?,
        })
    }

    /// Parks the coroutine until may sees an event on the socket (readable,
    /// writable, closed) or [`Stream::waker`] is used; events that came since
    /// the last wait make it return at once. It may return with nothing to
    /// do: callers retry their call and wait again. Returns the epoll event
    /// bits seen since the last wait (see [`HANGUP`]).
    pub fn wait_io(&self) -> usize {
        match self {
            Stream::Tcp(s) => s.wait_io(),
            Stream::Unix(s) => s.wait_io(),
        }
    }

    /// Ends a [`Stream::wait_io`] from elsewhere (the alarm sweep).
    pub fn waker(&self) -> WaitIoWaker {
        match self {
            Stream::Tcp(s) => s.waker(),
            Stream::Unix(s) => s.waker(),
        }
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }
}

/// Which kind of [`Stream`] a bare descriptor was (see [`Stream::into_fd`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Tcp,
    Unix,
}

impl Stream {
    /// Takes the socket out of may (its epoll registration is dropped) so
    /// that something else can watch it; [`Stream::from_fd`] hands it back.
    pub fn into_fd(self) -> (OwnedFd, Family) {
        let (raw, family) = match self {
            Stream::Tcp(s) => (s.into_raw_fd(), Family::Tcp),
            Stream::Unix(s) => (s.into_raw_fd(), Family::Unix),
        };
        // SAFETY: `into_raw_fd` gave up ownership of `raw`; nothing else
        // holds or closes it.
        (unsafe { OwnedFd::from_raw_fd(raw) }, family)
    }

    /// Registers a connected socket (from [`Stream::into_fd`], an accept
    /// or the master) with may. may's only way to do that panics when epoll
    /// cannot take the socket (out of kernel memory); the panic is caught
    /// here and the socket closed as it unwinds, so that it ends this
    /// connection and not the caller (the accept loop, a resume).
    pub fn from_fd(fd: OwnedFd, family: Family) -> io::Result<Stream> {
        let raw = fd.into_raw_fd();
        // SAFETY: `raw` comes from `into_raw_fd`, so ownership moves to
        // may's stream, and `family` is the kind of socket it is.
        let register = AssertUnwindSafe(|| unsafe {
            match family {
                Family::Tcp => Stream::Tcp(TcpStream::from_raw_fd(raw)),
                Family::Unix => Stream::Unix(UnixStream::from_raw_fd(raw)),
            }
        });
        catch_unwind(register).map_err(|_| io::Error::other("epoll cannot take the connection"))
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// A process's limit on open files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFiles {
    pub soft: u64,
    pub hard: u64,
}

/// Raises this process's soft limit on open files to its hard limit, and
/// returns the limits it found. Each connection holds a descriptor, and
/// the soft limit is often 1024 (login shells, systemd's default for
/// services) while the hard one is far higher: a worker would stop
/// accepting at about a thousand connections (EMFILE; the rest wait in
/// the kernel queue) on a machine with room for many more. The hard limit
/// stays the operator's (`ulimit -Hn`, systemd's `LimitNOFILE=`). The
/// soft limit is low on purpose for programs that use `select()`, which
/// cannot take a descriptor from 1024 on, and for those that close every
/// descriptor up to it before they start: so, as Go does, a process that
/// raises it gives the limit it found back to the programs it starts (see
/// [`with_starting_open_file_limit`]). The first call's findings are the
/// ones kept for that.
pub fn raise_open_file_limit() -> nix::Result<OpenFiles> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let found = OpenFiles { soft, hard };
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let _ = STARTING_OPEN_FILES.set(found);
    Ok(found)
}

/// What [`raise_open_file_limit`] found when it first ran.
static STARTING_OPEN_FILES: std::sync::OnceLock<OpenFiles> = std::sync::OnceLock::new();

/// The limits on open files this process had before
/// [`raise_open_file_limit`] raised them (`None` before it ran).
pub fn starting_open_files() -> Option<OpenFiles> {
    STARTING_OPEN_FILES.get().copied()
}

/// Has `cmd` start its program with the open-file soft limit this process
/// started with, if [`raise_open_file_limit`] raised it: the master starts
/// its workers so, and a handler that runs other programs should too
/// (`net::with_starting_open_file_limit(&mut Command::new("convert"))`).
/// Otherwise they inherit the raised limit, which breaks programs that use
/// `select()` once they open more than 1024 files and slows down those
/// that close every descriptor up to the limit when they start. The hard
/// limit is the one in force at the spawn (it can only have been lowered
/// since, and raising it back would fail the spawn).
pub fn with_starting_open_file_limit(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    use std::os::unix::process::CommandExt;
    let Some(OpenFiles { soft, .. }) = starting_open_files().filter(|found| found.soft < found.hard) else {
        return cmd;
    };
    // SAFETY: the closure runs in the forked child before exec; it only
    // calls getrlimit and setrlimit, which are async-signal-safe, on copied
    // integers (no allocation, no lock).
    unsafe {
        cmd.pre_exec(move || {
            let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
            setrlimit(Resource::RLIMIT_NOFILE, soft.min(hard), hard)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    /// The accept path sets no socket options: accepted sockets must get
    /// TCP_NODELAY from the listener.
    #[test]
    fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let listener = socket2::Socket::from(TcpListener::bind("127.0.0.1:0").unwrap());
        super::prepare(&listener, false).unwrap();
        listener.set_nonblocking(false).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap().as_socket().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.tcp_nodelay().unwrap());
    }

    #[test]
    fn connections_of_a_listener_deferring_accept_are_read_at_once() {
        use super::{FirstRead, Listener};
        let tcp = |defer_secs| {
            let socket = socket2::Socket::from(TcpListener::bind("127.0.0.1:0").unwrap());
            crate::listen::set_defer_accept(&socket, defer_secs).unwrap();
            Listener::from_fd(socket.into()).unwrap().first_read()
        };
        assert_eq!(tcp(1), FirstRead::AtOnce);
        assert_eq!(tcp(0), FirstRead::AfterEvent);
        let path = std::env::temp_dir().join(format!("http-cluster-net-test-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(Listener::from_fd(unix.into()).unwrap().first_read(), FirstRead::AfterEvent);
        let _ = std::fs::remove_file(&path);
    }

    /// `try_accept` never waits; `wait` parks until a new connection (not
    /// one already taken) or the waker: the accept loop relies on all of it
    /// (a lost wake-up would leave connections queued until the next one
    /// arrives, or a drain waiting for one).
    fn accepts_without_waiting_and_waits_on_its_own<C>(listener: super::Listener, connect: impl Fn() -> C, tcp: bool) {
        use std::sync::mpsc;
        use std::time::Duration;
        let listener = std::sync::Arc::new(listener);
        assert!(listener.try_accept().unwrap().is_none(), "an empty queue");
        let _first = connect();
        // may's event loop sees the connection before it is taken.
        std::thread::sleep(Duration::from_millis(50));
        let (_, peer) = listener.try_accept().unwrap().expect("the queued connection");
        assert_eq!(peer.is_some(), tcp);
        assert!(listener.try_accept().unwrap().is_none(), "empty again");
        // The accept coroutine's loop, bounded from outside.
        let (done, finished) = mpsc::channel();
        let waiter = {
            let listener = listener.clone();
            may::go!(move || {
                let mut waits = 0;
                while listener.try_accept().unwrap().is_none() {
                    listener.wait();
                    waits += 1;
                }
                let _ = done.send(waits);
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(finished.try_recv().is_err(), "the wait ended before any new connection");
        let _second = connect();
        let waits = finished.recv_timeout(Duration::from_secs(10)).expect("wait() returned on the connection");
        // One wait: not ended early by the first connection's event, nor
        // again and again with nothing queued.
        assert_eq!(waits, 1, "woke {waits} times for one connection");
        waiter.join().unwrap();
        // The waker ends a wait, and one used after the last `try_accept`
        // but before the wait ends it at once (the drain's case; a wake-up
        // before `try_accept` is forgotten, so the loop checks the drain's
        // flag between the two).
        for early in [false, true] {
            let waker = listener.waker();
            let (done, finished) = mpsc::channel();
            let waiter = {
                let (listener, waker) = (listener.clone(), listener.waker());
                may::go!(move || {
                    assert!(listener.try_accept().unwrap().is_none());
                    if early {
                        waker.wakeup();
                    }
                    listener.wait();
                    let _ = done.send(());
                })
            };
            if !early {
                std::thread::sleep(Duration::from_millis(100));
                assert!(finished.try_recv().is_err(), "the wait ended with nothing to end it");
                waker.wakeup();
            }
            finished.recv_timeout(Duration::from_secs(10)).expect("the waker ended the wait");
            waiter.join().unwrap();
        }
    }

    #[test]
    fn the_listener_accepts_without_waiting_and_waits_on_its_own() {
        use super::Listener;
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        accepts_without_waiting_and_waits_on_its_own(
            Listener::from_fd(tcp.into()).unwrap(),
            || TcpStream::connect(addr).unwrap(),
            true,
        );
        let path = std::env::temp_dir().join(format!("http-cluster-net-wait-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
        accepts_without_waiting_and_waits_on_its_own(
            Listener::from_fd(unix.into()).unwrap(),
            || std::os::unix::net::UnixStream::connect(&path).unwrap(),
            false,
        );
        let _ = std::fs::remove_file(&path);
    }

    /// A soft limit of `ulimit -Sn`'s kind as the shell prints it.
    fn shell_soft_limit(cmd: &mut std::process::Command) -> String {
        let out = cmd.args(["-c", "ulimit -Sn"]).output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn programs_started_with_the_starting_limit_get_the_soft_limit_found_others_the_raised_one() {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        use std::process::Command;
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        // No other test in this binary raises the limit (it is kept from
        // the first call); give it something to raise.
        assert!(super::starting_open_files().is_none());
        let lowered = if soft < hard { soft } else { hard - 1 };
        setrlimit(Resource::RLIMIT_NOFILE, lowered, hard).unwrap();
        let found = super::raise_open_file_limit().unwrap();
        assert_eq!(found, super::OpenFiles { soft: lowered, hard });
        assert_eq!(super::starting_open_files(), Some(found));
        let raised = getrlimit(Resource::RLIMIT_NOFILE).unwrap().0;
        assert_eq!(raised, hard);
        let mut sh = Command::new("/bin/sh");
        assert_eq!(shell_soft_limit(super::with_starting_open_file_limit(&mut sh)), lowered.to_string());
        let inherited = shell_soft_limit(&mut Command::new("/bin/sh"));
        assert!(inherited == raised.to_string() || (inherited == "unlimited" && raised == u64::MAX), "{inherited}");
        setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    }
}
