//! The master's listening sockets: parsing `--bind` addresses, binding TCP
//! (IPv4, IPv6) and Unix sockets, and taking sockets handed over by systemd
//! (socket activation) instead of binding.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

// `sockopt_impl!` expands to the other two macros and to `libc::` paths,
// unqualified.
use nix::{getsockopt_impl, libc, setsockopt_impl, sockopt_impl};

/// Where to listen, as given to `--bind`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    /// `unix:/path/to/sock`
    Unix(PathBuf),
}

impl ListenAddr {
    /// `HOST:PORT`, `[V6]:PORT` or `unix:PATH`. Host names resolve to their
    /// first address.
    pub fn parse(s: &str) -> Result<ListenAddr, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("--bind {s}: empty socket path"));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        s.to_socket_addrs()
            .map_err(|e| format!("--bind {s}: {e}"))?
            .next()
            .map(ListenAddr::Tcp)
            .ok_or_else(|| format!("--bind {s}: no address"))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "http://{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A listening socket the master holds for its whole life.
#[derive(Debug)]
pub struct Listener {
    pub socket: socket2::Socket,
    /// The bound address (the real port when 0 was asked for).
    pub addr: ListenAddr,
    /// A Unix socket file this process created, removed at exit.
    created: Option<PathBuf>,
}

impl Listener {
    /// A TCP listener in an SO_REUSEPORT group: worker slots can have
    /// sockets of their own beside it, and the group's choice among them
    /// can be steered.
    pub fn is_reuseport_tcp(&self) -> bool {
        matches!(self.addr, ListenAddr::Tcp(_)) && self.socket.reuse_port().unwrap_or(false)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = &self.created {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// How the master sets up the sockets it binds (its command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenOptions {
    /// Pending connections the kernel queues.
    pub backlog: i32,
    /// File mode of Unix sockets (who may connect).
    pub unix_mode: u32,
    /// TCP sockets join an SO_REUSEPORT group: more sockets bound to the
    /// same address later each get their own share of the connections.
    pub reuse_port: bool,
    /// `TCP_DEFER_ACCEPT` in seconds, 0 for off: see [`set_defer_accept`].
    pub defer_accept_secs: u32,
}

/// Binds and calls `listen()`: from this moment the kernel queues
/// connections, even while no worker is alive.
pub fn bind(addr: &ListenAddr, opts: &ListenOptions) -> io::Result<Listener> {
    match addr {
        ListenAddr::Tcp(a) => {
            let socket = bind_tcp(*a, opts)?;
            let bound = socket.local_addr()?.as_socket().unwrap_or(*a);
            Ok(Listener { socket, addr: ListenAddr::Tcp(bound), created: None })
        }
        ListenAddr::Unix(path) => {
            remove_stale_socket(path)?;
            let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
            socket.bind(&socket2::SockAddr::unix(path)?)?;
            let listener = Listener { socket, addr: addr.clone(), created: Some(path.clone()) };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(opts.unix_mode))?;
            listener.socket.listen(opts.backlog)?;
            Ok(listener)
        }
    }
}

/// A listening TCP socket on `addr`.
pub fn bind_tcp(addr: SocketAddr, opts: &ListenOptions) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // `[::]:80` must not also claim IPv4: that is a separate --bind.
        socket.set_only_v6(true)?;
    }
    set_defer_accept(&socket, opts.defer_accept_secs)?;
    socket.bind(&addr.into())?;
    socket.listen(opts.backlog)?;
    Ok(socket)
}

sockopt_impl!(
    /// `TCP_DEFER_ACCEPT`, in seconds: neither nix nor socket2 names it.
    TcpDeferAccept,
    Both,
    libc::IPPROTO_TCP,
    libc::TCP_DEFER_ACCEPT,
    libc::c_int
);

/// Sets `TCP_DEFER_ACCEPT` unless `secs` is 0 (a new socket has it off, and
/// a kernel without the option can still run with `--defer-accept 0`): the
/// kernel completes the handshake but queues the connection for
/// `accept()` only once its first data arrives, or when `secs` are up,
/// which it rounds up to its SYN-ACK retransmission times (1, 3, 7, 15 s...).
///
/// An HTTP client speaks first and at once, so the worker is woken once
/// per connection, with the request already there, instead of once for
/// the accept and once more for the request after a read that would block;
/// and it reads the request right after the accept (`net::FirstRead`).
/// On loopback that was a third of the server's CPU per request for
/// `Connection: close` load (24 against 17 µs, `scripts/bench`'s S4). A
/// client that connects and says nothing no longer costs a worker anything
/// until the time is up; then it is accepted and the head timeout counts.
pub fn set_defer_accept(socket: &socket2::Socket, secs: u32) -> io::Result<()> {
    if secs == 0 {
        return Ok(());
    }
    let value = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    nix::sys::socket::setsockopt(socket, TcpDeferAccept, &value).map_err(io::Error::from)
}

/// A socket's `TCP_DEFER_ACCEPT` in seconds (as the kernel reports it back:
/// the retransmission time it rounded up to), 0 when off. A slot's own
/// socket copies its listener's, which may come from systemd.
pub fn defer_accept(socket: &socket2::Socket) -> io::Result<u32> {
    let value = nix::sys::socket::getsockopt(socket, TcpDeferAccept).map_err(io::Error::from)?;
    Ok(u32::try_from(value).unwrap_or(0))
}

sockopt_impl!(
    /// `SO_DETACH_REUSEPORT_BPF` (Linux 5.3): nix does not name it.
    DetachReusePortBpf,
    SetOnly,
    libc::SOL_SOCKET,
    libc::SO_DETACH_REUSEPORT_BPF,
    libc::c_int
);

/// Where the kernel sends new connections among the sockets of the
/// SO_REUSEPORT group `socket` belongs to: `Some(n)` to the first `n`
/// only (in the order they called `listen()`), picked at random; `None`
/// to all of them by the kernel's own hash of the addresses, as when
/// nothing was ever attached.
///
/// After SIGTTOU the master keeps the removed slot's socket, so that what
/// waits in its queue is still served, but without this it would keep
/// receiving its share of new connections, each accepted by the master
/// and passed on over fd 3: after scaling from 4 to 2 workers, half of
/// all new connections.
pub fn steer_reuseport(socket: &socket2::Socket, first: Option<u32>) -> io::Result<()> {
    let Some(n) = first else {
        return match nix::sys::socket::setsockopt(socket, DetachReusePortBpf, &0) {
            // Nothing attached: already the kernel's choice.
            Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            // Before Linux 5.3 a program cannot be detached; one that never
            // chooses leaves the choice to the kernel's hash just the same.
            // Before 4.5 none can be attached either, so none was.
            Err(nix::errno::Errno::ENOPROTOOPT) => match attach_reuseport_program(socket, &mut NO_CHOICE.clone()) {
                Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => Ok(()),
                r => r,
            },
            Err(e) => Err(e.into()),
        };
    };
    // A = random; A %= n; return A. Random rather than the packet's hash:
    // a SYN from a NIC without receive hashing has hash 0, which would
    // send everything to the first socket.
    attach_reuseport_program(
        socket,
        &mut [
            // The ancillary-data offsets are negative: SKF_AD_OFF wraps to
            // the top of the u32 range, as in C.
            bpf(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32),
            bpf(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, n.max(1)),
            bpf(libc::BPF_RET | libc::BPF_A, 0),
        ],
    )
}

/// A program whose answer is no socket of the group (an index past its
/// end), so the kernel falls back to its hash.
const NO_CHOICE: [libc::sock_filter; 1] = [bpf(libc::BPF_RET | libc::BPF_K, u32::MAX)];

/// Attaches a classic BPF program to `socket`'s reuseport group (for the
/// whole group, replacing any other). Classic, because unprivileged
/// processes may attach it; eBPF would need CAP_BPF.
fn attach_reuseport_program(socket: &socket2::Socket, program: &mut [libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(program.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let fprog = libc::sock_fprog { len, filter: program.as_mut_ptr() };
    // The kernel copies the program during the call; `program` outlives it.
    nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::AttachReusePortCbpf, &fprog)
        .map_err(io::Error::from)
}

const fn bpf(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt: 0, jf: 0, k }
}

/// A socket file left by a process that died without removing it makes
/// bind() fail with EADDRINUSE. It is stale if nobody accepts on it; a live
/// server on it, or a file that is not a socket, is an error.
pub fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => {
            Err(io::Error::new(io::ErrorKind::AddrInUse, format!("{} is in use by a running server", path.display())))
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        Err(e) => Err(e),
    }
}

/// The listening sockets systemd passed (socket activation), if this
/// process was started that way. Each must be a listening stream socket.
pub fn from_systemd() -> Result<Option<Vec<Listener>>, String> {
    // sd_notify's listen_fds checks LISTEN_PID and unsets the variables so
    // workers do not see them.
    let fds: Vec<RawFd> = match sd_notify::listen_fds() {
        Ok(fds) => fds.collect(),
        Err(e) => return Err(format!("LISTEN_FDS: {e}")),
    };
    if fds.is_empty() {
        return Ok(None);
    }
    let mut listeners = Vec::new();
    for fd in fds {
        // SAFETY: systemd passed these descriptors to this process
        // (LISTEN_PID matched) and nothing else in the process owns them:
        // they are taken once, here, at startup.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let socket = socket2::Socket::from(owned);
        let _ = socket.set_cloexec(true);
        let local = socket.local_addr().map_err(|e| format!("systemd socket fd {fd}: {e}"))?;
        if socket.r#type().ok() != Some(socket2::Type::STREAM) || !socket.is_listener().unwrap_or(false) {
            return Err(format!("systemd socket fd {fd} is not a listening stream socket (use ListenStream=)"));
        }
        let addr = match (local.as_socket(), local.as_pathname()) {
            (Some(a), _) => ListenAddr::Tcp(a),
            (None, Some(p)) => ListenAddr::Unix(p.to_path_buf()),
            (None, None) => return Err(format!("systemd socket fd {fd} is neither TCP nor a Unix path")),
        };
        listeners.push(Listener { socket, addr, created: None });
    }
    Ok(Some(listeners))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bind_addresses() {
        assert_eq!(ListenAddr::parse("127.0.0.1:80"), Ok(ListenAddr::Tcp("127.0.0.1:80".parse().unwrap())));
        assert_eq!(ListenAddr::parse("[::1]:8080"), Ok(ListenAddr::Tcp("[::1]:8080".parse().unwrap())));
        assert_eq!(ListenAddr::parse("unix:/run/x.sock"), Ok(ListenAddr::Unix("/run/x.sock".into())));
        assert!(ListenAddr::parse("unix:").is_err());
        assert!(ListenAddr::parse("127.0.0.1").is_err());
    }

    fn unix_opts(unix_mode: u32) -> ListenOptions {
        ListenOptions { backlog: 8, unix_mode, reuse_port: false, defer_accept_secs: 0 }
    }

    #[test]
    fn deferred_accept_hands_over_a_connection_when_its_first_bytes_arrive() {
        use std::io::Write;
        let opts = ListenOptions { backlog: 8, unix_mode: 0, reuse_port: false, defer_accept_secs: 2 };
        let listener = bind(&ListenAddr::parse("127.0.0.1:0").unwrap(), &opts).unwrap();
        // Rounded up to the SYN-ACK retransmission times: 1 + 2 s.
        assert_eq!(defer_accept(&listener.socket).unwrap(), 3);
        listener.socket.set_nonblocking(true).unwrap();
        let ListenAddr::Tcp(addr) = listener.addr else { unreachable!() };
        let started = std::time::Instant::now();
        let silent = std::net::TcpStream::connect(addr).unwrap();
        let mut speaking = std::net::TcpStream::connect(addr).unwrap();
        speaking.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let accept = || loop {
            match listener.socket.accept() {
                Ok((_, peer)) => return Some(peer.as_socket().unwrap()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("accept: {e}"),
            }
        };
        let first = loop {
            if let Some(peer) = accept() {
                break peer;
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(5), "the speaking client was never accepted");
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(first, speaking.local_addr().unwrap(), "the client that sent nothing came first");
        assert_eq!(accept(), None, "a silent client is held back");
        // When the time is up (3 s: the checks above have that long), the
        // kernel resends its SYN-ACK, the client acknowledges it again, and
        // the connection is handed over.
        let second = loop {
            if let Some(peer) = accept() {
                break peer;
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(15), "the silent client was never accepted");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(second, silent.local_addr().unwrap());
        assert!(started.elapsed() >= std::time::Duration::from_millis(2900), "accepted before its time");
        // Off means off.
        let opts = ListenOptions { defer_accept_secs: 0, ..opts };
        let listener = bind(&ListenAddr::parse("127.0.0.1:0").unwrap(), &opts).unwrap();
        assert_eq!(defer_accept(&listener.socket).unwrap(), 0);
    }

    #[test]
    fn a_steered_reuseport_group_sends_new_connections_to_its_first_sockets_only() {
        let opts = ListenOptions { backlog: 128, unix_mode: 0, reuse_port: true, defer_accept_secs: 0 };
        let first = bind_tcp("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        let addr = first.local_addr().unwrap().as_socket().unwrap();
        let group = [first, bind_tcp(addr, &opts).unwrap(), bind_tcp(addr, &opts).unwrap()];
        for s in &group {
            s.set_nonblocking(true).unwrap();
        }
        // Makes `n` connections; how many each socket of the group got.
        let spread = |n: usize| -> [usize; 3] {
            let clients: Vec<_> = (0..n).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
            let mut got = [0; 3];
            let started = std::time::Instant::now();
            while got.iter().sum::<usize>() < n {
                for (i, s) in group.iter().enumerate() {
                    while s.accept().is_ok() {
                        got[i] += 1;
                    }
                }
                assert!(started.elapsed() < std::time::Duration::from_secs(5), "only {got:?} of {n} arrived");
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            drop(clients);
            got
        };
        // Steering goes through any socket of the group.
        steer_reuseport(&group[2], Some(1)).unwrap();
        assert_eq!(spread(60), [60, 0, 0]);
        steer_reuseport(&group[0], Some(2)).unwrap();
        let got = spread(120);
        assert!(got[0] > 25 && got[1] > 25 && got[2] == 0, "{got:?}");
        // Detached: the kernel's hash over all three again (the chance one
        // gets none of 120 is 3 × (2/3)^120).
        steer_reuseport(&group[1], None).unwrap();
        let got = spread(120);
        assert!(got.iter().all(|&n| n > 0), "{got:?}");
        // Detaching twice is not an error.
        steer_reuseport(&group[1], None).unwrap();
        // Where detaching is impossible (before Linux 5.3), a program that
        // chooses no socket: the kernel's hash decides, as detached.
        steer_reuseport(&group[0], Some(1)).unwrap();
        attach_reuseport_program(&group[0], &mut NO_CHOICE.clone()).unwrap();
        let got = spread(120);
        assert!(got.iter().all(|&n| n > 0), "{got:?}");
    }

    #[test]
    fn stale_unix_socket_is_replaced_live_one_is_not() {
        let dir = std::env::temp_dir().join(format!("hc-listen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let addr = ListenAddr::Unix(path.clone());
        let live = bind(&addr, &unix_opts(0o600)).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(bind(&addr, &unix_opts(0o600)).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        // A socket file whose server is gone (closed without unlinking).
        let mut dead = live;
        dead.created = None;
        drop(dead);
        assert!(path.exists());
        let again = bind(&addr, &unix_opts(0o660)).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o660);
        drop(again);
        assert!(!path.exists(), "the socket file is removed with its listener");
        std::fs::write(&path, b"not a socket").unwrap();
        assert_eq!(bind(&addr, &unix_opts(0o600)).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
