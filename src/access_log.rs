//! The access log: one line per response in the combined log format
//! (Apache's and nginx's default, which log analyzers read), buffered per
//! worker process so logging costs a memcpy per request and a write(2) per
//! 64 KiB or half second, whichever comes first.
//!
//! Only the worker's log-writer thread writes: the connections' scheduler
//! thread appends to a buffer and, when it passes 64 KiB, wakes the writer
//! through a socket pair. A log that cannot keep up (a stalled stdout pipe)
//! therefore blocks neither request handling nor the main thread's
//! heartbeats (had the main thread written, the master would have taken
//! the stall for a hung worker and killed it); past [`MAX_BUFFERED`] lines
//! are dropped and counted instead.
//!
//! Workers open the file themselves with `O_APPEND`: each flush is one
//! write of whole lines, so lines of different workers never interleave.
//! The master forwards SIGUSR1 as a `reopen` message (logrotate's
//! `postrotate`), and each worker reopens the path.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::proto::date;

/// Buffered output is written once it reaches this size.
const FLUSH_AT: usize = 64 * 1024;

/// Lines beyond this much unwritten output are dropped (and counted).
pub const MAX_BUFFERED: usize = 16 * 1024 * 1024;

/// The worker's access log, when `--access-log` is set.
pub struct AccessLog {
    /// Lines not yet written; appended to by connections.
    pending: Mutex<Pending>,
    /// Where lines go; used by the writer thread (and at exit).
    target: Mutex<Target>,
    /// Set by [`AccessLog::request_reopen`], done by the writer thread.
    reopen_wanted: AtomicBool,
    /// Written to (one byte) when `pending` passes [`FLUSH_AT`].
    wake_tx: UnixStream,
    /// The writer thread polls this.
    wake_rx: UnixStream,
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// A wake-up byte was sent and not yet answered by a flush.
    woken: bool,
    dropped: u64,
}

enum Target {
    Stdout,
    File { path: PathBuf, file: File },
}

static LOG: OnceLock<AccessLog> = OnceLock::new();

/// The process's access log, if one was opened.
pub fn get() -> Option<&'static AccessLog> {
    LOG.get()
}

/// Opens the access log at `spec` (a path, or `-` for stdout) for this
/// process, and starts its writer thread. Called once, at worker start.
pub fn init(spec: &str) -> io::Result<&'static AccessLog> {
    let target = if spec == "-" {
        Target::Stdout
    } else {
        let path = PathBuf::from(spec);
        Target::File { file: open(&path)?, path }
    };
    let log = LOG.get_or_init(|| AccessLog::new(target).expect("socketpair for the access log"));
    log.start_writer()?;
    Ok(log)
}

fn open(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

/// What one line records about a request, gathered while it is served.
#[derive(Debug, Default)]
pub struct Entry {
    /// `"GET /path HTTP/1.1"` with quotes, escaped; empty if no request
    /// line was parsed (logged as `"-"`).
    pub request: Vec<u8>,
    /// ` "referer" "user-agent"`, escaped.
    pub tail: Vec<u8>,
    pub status: u16,
    /// Response body bytes (not the head).
    pub bytes: u64,
    /// A request was started and not yet logged.
    pub open: bool,
}

impl Entry {
    /// Captures the parts of a request the line needs, reusing this
    /// entry's buffers.
    pub fn start(&mut self, req: &crate::proto::head::Request) {
        self.request.clear();
        self.tail.clear();
        self.request.push(b'"');
        escape(req.method().as_bytes(), &mut self.request);
        self.request.push(b' ');
        escape(req.target().as_bytes(), &mut self.request);
        self.request.extend_from_slice(if req.version_minor() == 0 { b" HTTP/1.0\"" } else { b" HTTP/1.1\"" });
        for name in ["referer", "user-agent"] {
            self.tail.extend_from_slice(b" \"");
            match req.header_bytes(name) {
                Some(v) => escape(v, &mut self.tail),
                None => self.tail.push(b'-'),
            }
            self.tail.push(b'"');
        }
        self.status = 0;
        self.bytes = 0;
        self.open = true;
    }

    /// Forgets the logged request (keeping the buffers' memory).
    pub fn reset(&mut self) {
        self.request.clear();
        self.tail.clear();
        self.status = 0;
        self.bytes = 0;
        self.open = false;
    }
}

impl AccessLog {
    fn new(target: Target) -> io::Result<AccessLog> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        Ok(AccessLog {
            pending: Mutex::new(Pending { buf: Vec::with_capacity(FLUSH_AT), ..Pending::default() }),
            target: Mutex::new(target),
            reopen_wanted: AtomicBool::new(false),
            wake_tx,
            wake_rx,
        })
    }

    /// Appends the line for `entry` (served to `peer`). Never writes to the
    /// log itself: a full buffer wakes the main thread.
    pub fn record(&self, peer: Option<SocketAddr>, entry: &Entry) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.buf.len() >= MAX_BUFFERED {
            pending.dropped += 1;
            return;
        }
        let buf = &mut pending.buf;
        match peer {
            Some(a) => {
                let _ = write!(buf, "{}", a.ip());
            }
            None => buf.push(b'-'),
        }
        buf.extend_from_slice(b" - - [");
        buf.extend_from_slice(&clf_time(&date::now()));
        buf.extend_from_slice(b"] ");
        if entry.request.is_empty() {
            buf.extend_from_slice(b"\"-\"");
        } else {
            buf.extend_from_slice(&entry.request);
        }
        let _ = write!(buf, " {} ", entry.status);
        if entry.bytes == 0 {
            buf.push(b'-');
        } else {
            let _ = write!(buf, "{}", entry.bytes);
        }
        if entry.tail.is_empty() {
            buf.extend_from_slice(b" \"-\" \"-\"");
        } else {
            buf.extend_from_slice(&entry.tail);
        }
        buf.push(b'\n');
        if pending.buf.len() >= FLUSH_AT && !pending.woken {
            pending.woken = true;
            // Full means the main thread has a wake-up to read already.
            let _ = (&self.wake_tx).write(&[1]);
        }
    }

    /// Writes out what is buffered: the writer thread, when woken and every
    /// half second, and the main thread before exiting. The lock is held
    /// only to take the lines.
    pub fn flush(&self) {
        let mut drain = [0u8; 64];
        while matches!((&self.wake_rx).read(&mut drain), Ok(n) if n > 0) {}
        let (lines, dropped) = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.woken = false;
            // A fresh buffer at full size: connections then append without
            // regrowing it from nothing after every flush.
            let lines = std::mem::replace(&mut pending.buf, Vec::with_capacity(FLUSH_AT));
            (lines, std::mem::take(&mut pending.dropped))
        };
        if dropped > 0 {
            log::warn!("access log: {dropped} lines dropped (the log could not keep up)");
        }
        if lines.is_empty() {
            return;
        }
        let mut target = self.target.lock().unwrap_or_else(|p| p.into_inner());
        let result = match &mut *target {
            Target::Stdout => io::stdout().lock().write_all(&lines),
            Target::File { file, .. } => file.write_all(&lines),
        };
        if let Err(e) = result {
            // Losing log lines must not take the server down.
            log::warn!("access log: {e}; {} bytes of log lines dropped", lines.len());
        }
    }

    /// Starts the writer thread, which writes the buffered lines when woken
    /// and every half second, and reopens the file when asked.
    fn start_writer(&'static self) -> io::Result<()> {
        std::thread::Builder::new().name("access-log".into()).spawn(move || {
            loop {
                let mut fds = [PollFd::new(self.wake_rx.as_fd(), PollFlags::POLLIN)];
                let half_second = PollTimeout::try_from(Duration::from_millis(500)).unwrap_or(PollTimeout::NONE);
                let _ = poll(&mut fds, half_second);
                if self.reopen_wanted.swap(false, Ordering::SeqCst) {
                    match self.reopen() {
                        Ok(()) => log::info!("access log reopened"),
                        Err(e) => log::error!("cannot reopen the access log: {e}; keeping the old file"),
                    }
                }
                self.flush();
            }
        })?;
        Ok(())
    }

    /// Asks the writer thread to reopen the file (logrotate moved it):
    /// returns at once, whatever state the log is in.
    pub fn request_reopen(&self) {
        self.reopen_wanted.store(true, Ordering::SeqCst);
        let _ = (&self.wake_tx).write(&[1]);
    }

    /// Flushes, then reopens the file at its path (it may have been moved).
    fn reopen(&self) -> io::Result<()> {
        self.flush();
        let mut target = self.target.lock().unwrap_or_else(|p| p.into_inner());
        if let Target::File { path, file } = &mut *target {
            *file = open(path)?;
        }
        Ok(())
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → `06/Nov/1994:08:49:37 +0000`.
fn clf_time(imf: &[u8; date::DATE_LEN]) -> [u8; 26] {
    let mut out = *b"dd/Mon/yyyy:hh:mm:ss +0000";
    out[0..2].copy_from_slice(&imf[5..7]);
    out[3..6].copy_from_slice(&imf[8..11]);
    out[7..11].copy_from_slice(&imf[12..16]);
    out[12..20].copy_from_slice(&imf[17..25]);
    out
}

/// Copies `raw` with `"`, `\` and non-printable bytes escaped as `\xNN`
/// (as nginx does), so a client cannot forge log lines or fields.
fn escape(raw: &[u8], out: &mut Vec<u8>) {
    for &b in raw {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_rearranged_from_the_date_header() {
        assert_eq!(&clf_time(b"Sun, 06 Nov 1994 08:49:37 GMT"), b"06/Nov/1994:08:49:37 +0000");
    }

    #[test]
    fn quotes_and_control_bytes_are_escaped() {
        let mut out = Vec::new();
        escape(b"a\"b\\c\n\xff", &mut out);
        assert_eq!(out, b"a\\x22b\\x5Cc\\x0A\\xFF");
    }

    #[test]
    fn a_line_has_the_combined_format() {
        let dir = std::env::temp_dir().join(format!("hc-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let target = Target::File { file: open(&path).unwrap(), path: path.clone() };
        let log = AccessLog::new(target).unwrap();
        let entry = Entry {
            request: b"\"GET /x HTTP/1.1\"".to_vec(),
            tail: b" \"-\" \"curl/8\"".to_vec(),
            status: 200,
            bytes: 13,
            open: true,
        };
        log.record(Some("10.1.2.3:5555".parse().unwrap()), &entry);
        log.record(None, &Entry { status: 400, ..Entry::default() });
        log.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let (host, rest) = lines[0].split_once(" - - [").unwrap();
        assert_eq!(host, "10.1.2.3");
        let (_, rest) = rest.split_once("] ").unwrap();
        assert_eq!(rest, "\"GET /x HTTP/1.1\" 200 13 \"-\" \"curl/8\"");
        assert!(lines[1].starts_with("- - - ["), "{}", lines[1]);
        assert!(lines[1].ends_with("] \"-\" 400 - \"-\" \"-\""), "{}", lines[1]);
        // Reopen after a rename (logrotate): new lines go to a new file.
        std::fs::rename(&path, dir.join("access.log.1")).unwrap();
        log.reopen().unwrap();
        log.record(None, &entry);
        log.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
