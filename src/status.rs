//! `http-cluster status`: the master answers on a Unix control socket with
//! a JSON snapshot of its workers; the client prints it as a table or as
//! the JSON itself (`--json`).
//!
//! The protocol is one line each way: the client sends `status\n`, the
//! master writes the JSON document and closes. The socket file is created
//! with mode 0600: only the server's user may ask.

use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A snapshot of the cluster.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub master_pid: u32,
    pub uptime_secs: f64,
    /// Bumped by every reload (SIGHUP).
    pub generation: u64,
    pub listeners: Vec<String>,
    /// Starting, ready, stopping, or stopping the whole cluster.
    pub state: String,
    pub workers: Vec<WorkerStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WorkerStatus {
    pub slot: usize,
    pub pid: i32,
    pub generation: u64,
    /// starting, ready or stopping.
    pub phase: String,
    pub uptime_secs: f64,
    /// From the worker's last heartbeat.
    pub connections: u64,
    pub requests: u64,
    pub rss_bytes: Option<u64>,
    pub last_heartbeat_secs: f64,
}

/// How long either side waits on the other: a status query is local and
/// tiny, and the master must not stall on a client that does not read.
const IO_TIMEOUT: Duration = Duration::from_millis(200);

/// The master's end of the control socket.
#[derive(Debug)]
pub struct ControlSocket {
    pub listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds the control socket at `path`, replacing a stale socket file
    /// (one nobody accepts on). Fails if another live master uses it.
    pub fn bind(path: &Path) -> io::Result<ControlSocket> {
        crate::listen::remove_stale_socket(path)?;
        let listener = UnixListener::bind(path)?;
        let socket = ControlSocket { listener, path: path.to_path_buf() };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        socket.listener.set_nonblocking(true)?;
        Ok(socket)
    }

    /// Answers every pending query with `snapshot()`. Never blocks for long:
    /// each exchange is bounded by a short timeout.
    pub fn serve_pending(&self, snapshot: impl Fn() -> Status) {
        // A few per pass: queries are rare, and the loop has other work.
        for _ in 0..8 {
            let Ok((stream, _)) = self.listener.accept() else { return };
            if let Err(e) = answer(stream, &snapshot) {
                log::debug!("control socket: {e}");
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn answer(stream: UnixStream, snapshot: &impl Fn() -> Status) -> io::Result<()> {
    // One deadline for the whole query: a client trickling bytes must not
    // hold the master's loop longer than that.
    let deadline = Instant::now() + IO_TIMEOUT;
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = Vec::with_capacity(64);
    let mut buf = [0u8; 64];
    while !line.contains(&b'\n') && line.len() < 64 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match (&stream).read(&mut buf)? {
            0 => break,
            n => line.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&line);
    let mut out = &stream;
    match line.trim_end() {
        "status" => {
            let mut doc = serde_json::to_vec(&snapshot()).map_err(io::Error::other)?;
            doc.push(b'\n');
            out.write_all(&doc)
        }
        other => {
            let error = serde_json::json!({ "error": format!("unknown command {other:?}") });
            out.write_all(format!("{error}\n").as_bytes())
        }
    }
}

/// Asks the master listening on `path` for its status.
pub fn query(path: &Path) -> io::Result<Status> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"status\n")?;
    let mut doc = String::new();
    io::Read::read_to_string(&mut stream, &mut doc)?;
    serde_json::from_str(&doc).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e}: {doc:?}")))
}

/// The status as a human-readable table.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "master pid {}  up {}  generation {}  {}\nlisteners: {}\n\n",
        s.master_pid,
        human_duration(s.uptime_secs),
        s.generation,
        s.state,
        s.listeners.join(" ")
    ));
    out.push_str(&format!(
        "{:>4}  {:>8}  {:>4}  {:<8}  {:>8}  {:>7}  {:>10}  {:>9}\n",
        "slot", "pid", "gen", "phase", "uptime", "conns", "requests", "rss"
    ));
    for w in &s.workers {
        out.push_str(&format!(
            "{:>4}  {:>8}  {:>4}  {:<8}  {:>8}  {:>7}  {:>10}  {:>9}\n",
            w.slot,
            w.pid,
            w.generation,
            w.phase,
            human_duration(w.uptime_secs),
            w.connections,
            w.requests,
            w.rss_bytes.map_or_else(|| "-".to_string(), human_bytes)
        ));
    }
    out
}

fn human_duration(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..60 => format!("{secs:.1}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn human_bytes(b: u64) -> String {
    match b {
        0..1024 => format!("{b} B"),
        1024..1048576 => format!("{:.1} KiB", b as f64 / 1024.0),
        _ => format!("{:.1} MiB", b as f64 / 1048576.0),
    }
}

/// The default control socket path: in `$XDG_RUNTIME_DIR` when set (a
/// per-user directory systemd provides), else `/tmp`, named after the user.
pub fn default_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => Path::new(&dir).join("http-cluster.sock"),
        _ => PathBuf::from(format!("/tmp/http-cluster-{}.sock", nix::unistd::getuid())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            master_pid: 10,
            uptime_secs: 3725.0,
            generation: 2,
            listeners: vec!["http://127.0.0.1:8080".into(), "unix:/run/x.sock".into()],
            state: "ready".into(),
            workers: vec![WorkerStatus {
                slot: 0,
                pid: 11,
                generation: 2,
                phase: "ready".into(),
                uptime_secs: 42.5,
                connections: 3,
                requests: 12345,
                rss_bytes: Some(3 * 1048576),
                last_heartbeat_secs: 0.2,
            }],
        }
    }

    #[test]
    fn table_shows_every_field() {
        let t = render(&sample());
        for needle in ["master pid 10", "up 1h02m", "generation 2", "unix:/run/x.sock", "12345", "3.0 MiB", "42.5s"] {
            assert!(t.contains(needle), "{needle} missing in\n{t}");
        }
    }

    #[test]
    fn query_and_answer_round_trip() {
        let path = std::env::temp_dir().join(format!("hc-status-{}.sock", std::process::id()));
        let control = ControlSocket::bind(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let server = std::thread::spawn(move || {
            for _ in 0..200 {
                control.serve_pending(sample);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        assert_eq!(query(&path).unwrap(), sample());
        server.join().unwrap();
        assert!(!path.exists(), "the socket file goes with the master");
    }
}
