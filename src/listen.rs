//! The master's listening sockets: parsing `--bind` addresses, binding TCP
//! (IPv4, IPv6) and Unix sockets, and taking sockets handed over by systemd
//! (socket activation) instead of binding.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

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

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = &self.created {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds and calls `listen()`: from this moment the kernel queues
/// connections, even while no worker is alive. `unix_mode` is the file mode
/// of Unix sockets (who may connect). With `reuse_port`, TCP sockets join
/// an SO_REUSEPORT group: more sockets bound to the same address later
/// (see [`bind_tcp`]) each get their own share of the connections.
pub fn bind(addr: &ListenAddr, backlog: i32, unix_mode: u32, reuse_port: bool) -> io::Result<Listener> {
    match addr {
        ListenAddr::Tcp(a) => {
            let socket = bind_tcp(*a, backlog, reuse_port)?;
            let bound = socket.local_addr()?.as_socket().unwrap_or(*a);
            Ok(Listener { socket, addr: ListenAddr::Tcp(bound), created: None })
        }
        ListenAddr::Unix(path) => {
            remove_stale_socket(path)?;
            let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
            socket.bind(&socket2::SockAddr::unix(path)?)?;
            let listener = Listener { socket, addr: addr.clone(), created: Some(path.clone()) };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(unix_mode))?;
            listener.socket.listen(backlog)?;
            Ok(listener)
        }
    }
}

/// A listening TCP socket on `addr`.
pub fn bind_tcp(addr: SocketAddr, backlog: i32, reuse_port: bool) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // `[::]:80` must not also claim IPv4: that is a separate --bind.
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket)
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

    #[test]
    fn stale_unix_socket_is_replaced_live_one_is_not() {
        let dir = std::env::temp_dir().join(format!("hc-listen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let addr = ListenAddr::Unix(path.clone());
        let live = bind(&addr, 8, 0o600, false).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(bind(&addr, 8, 0o600, false).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        // A socket file whose server is gone (closed without unlinking).
        let mut dead = live;
        dead.created = None;
        drop(dead);
        assert!(path.exists());
        let again = bind(&addr, 8, 0o660, false).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o660);
        drop(again);
        assert!(!path.exists(), "the socket file is removed with its listener");
        std::fs::write(&path, b"not a socket").unwrap();
        assert_eq!(bind(&addr, 8, 0o600, false).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
