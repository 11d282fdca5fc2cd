//! Test harness: runs the real `http-cluster` master (with real workers) on
//! 127.0.0.1:0, and talks to it over real sockets.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub fn bin(name: &str) -> PathBuf {
    match name {
        "http-cluster" => PathBuf::from(env!("CARGO_BIN_EXE_http-cluster")),
        "hello" => PathBuf::from(env!("CARGO_BIN_EXE_hello")),
        "echo" => PathBuf::from(env!("CARGO_BIN_EXE_echo")),
        "faults" => PathBuf::from(env!("CARGO_BIN_EXE_faults")),
        other => panic!("unknown binary {other}"),
    }
}

/// A running master. Killed with its whole process group on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub banner: String,
    pub stderr: Arc<Mutex<String>>,
    /// This server's control socket (`http-cluster status`), removed when
    /// the server is dropped.
    pub control: TempPath,
}

/// A path in the temp dir unique to this test process and call. Whatever
/// the test puts there (a file, a socket, a directory) is removed when the
/// `TempPath` is dropped, so a test leaves nothing behind in `/tmp`, whether
/// it passes or panics half-way.
pub fn temp_path(what: &str) -> TempPath {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    TempPath(std::env::temp_dir().join(format!("hc-test-{}-{n}-{what}", std::process::id())))
}

/// See [`temp_path`]. Derefs to the `Path`.
#[derive(Debug)]
pub struct TempPath(PathBuf);

impl std::ops::Deref for TempPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempPath {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        // symlink_metadata: a directory is emptied, a link is removed, never followed.
        match std::fs::symlink_metadata(&self.0) {
            Ok(meta) if meta.is_dir() => drop(std::fs::remove_dir_all(&self.0)),
            Ok(_) => drop(std::fs::remove_file(&self.0)),
            Err(_) => {}
        }
    }
}

impl Server {
    /// Starts the master with `args` (a `--bind 127.0.0.1:0` is added) and
    /// waits for its "listening" line.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(bin("http-cluster"));
        cmd.envs(env.iter().copied());
        Server::spawn(cmd, args)
    }

    /// [`Server::start`] with the master started by a shell that first
    /// runs `ulimit ULIMIT` (the shell execs the master: same pid).
    pub fn start_under_ulimit(ulimit: &str, args: &[&str]) -> Server {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", &format!("ulimit {ulimit} && exec \"$0\" \"$@\"")]).arg(bin("http-cluster"));
        Server::spawn(cmd, args)
    }

    /// Runs `cmd`, which ends with the master's path or runs it, with a
    /// free loopback port, its own control socket and `args`.
    fn spawn(mut cmd: Command, args: &[&str]) -> Server {
        let control = temp_path("control.sock");
        cmd.arg("--bind").arg("127.0.0.1:0").arg("--control-socket").arg(&control).args(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
        // Own process group: Drop can kill master and workers together.
        cmd.process_group(0);
        let mut child = cmd.spawn().expect("start http-cluster");
        let stderr = Arc::new(Mutex::new(String::new()));
        let err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let banner = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("no listening line; stderr:\n{}", stderr.lock().unwrap());
            }
        };
        let addr = banner
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("bad banner {banner:?}"));
        Server { child, addr, banner, stderr, control }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Pids of the master's live children (its workers).
    pub fn worker_pids(&self) -> Vec<i32> {
        children_of(self.pid())
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for the master to exit; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The master logged worker `pid` ready (it serves from now on).
    pub fn ready_logged(&self, pid: i32) -> bool {
        self.stderr().contains(&format!("(pid {pid}) ready"))
    }

    /// Worker `pid` logged that its drain is in effect: every response it
    /// writes from then on says `Connection: close`.
    pub fn draining_logged(&self, pid: i32) -> bool {
        self.stderr().contains(&format!("[{pid}] draining ("))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group we created for this server.
        unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// The fields of a `/proc/.../stat` file after the command name: state,
/// parent pid, ... (`pid (comm) state ppid ...`; comm may contain spaces,
/// so the split is after its closing parenthesis).
fn stat_fields(path: impl AsRef<std::path::Path>) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(path).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Every thread of `pid` is stopped (SIGSTOP took effect), from /proc.
/// `kill` returns before that: each thread stops on its way back to user
/// space.
pub fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    let mut any = false;
    for task in tasks.flatten() {
        let stopped = stat_fields(task.path().join("stat"))
            .is_some_and(|f| f.first().is_some_and(|state| state == "T" || state == "t"));
        if !stopped {
            return false;
        }
        any = true;
    }
    any
}

/// Live (non-zombie) children of `pid`, from /proc.
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Some(fields) = stat_fields(format!("/proc/{p}/stat")) else { continue };
        if fields.len() > 1 && fields[1].parse() == Ok(pid) && fields[0] != "Z" {
            out.push(p);
        }
    }
    out.sort();
    out
}

pub fn alive(pid: i32) -> bool {
    stat_fields(format!("/proc/{pid}/stat")).is_some_and(|f| f.first().is_some_and(|state| state != "Z"))
}

/// Stopped by a signal (SIGSTOP, or SIGTTIN/SIGTTOU's default action).
pub fn stopped(pid: i32) -> bool {
    stat_fields(format!("/proc/{pid}/stat")).is_some_and(|f| f.first().is_some_and(|state| state == "T"))
}

/// One parsed response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Reads HTTP responses from a stream, keeping leftover bytes between
/// calls (pipelining).
/// How a server ended a connection (see [`Reader::ending`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// An orderly close (FIN).
    Closed,
    /// A reset: what was in flight may be lost.
    Reset,
}

pub struct Reader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader { inner, buf: Vec::new() }
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut tmp = [0u8; 64 * 1024];
        let n = self.inner.read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    /// Reads one response; `head_request` says the response has no body.
    pub fn response(&mut self, head_request: bool) -> std::io::Result<Resp> {
        let (status, headers, len) = loop {
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut hs);
            match r.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = r.code.unwrap();
                    let headers: Vec<(String, String)> = r
                        .headers
                        .iter()
                        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                        .collect();
                    self.buf.drain(..n);
                    break (status, headers, n);
                }
                Ok(httparse::Status::Partial) => {
                    if self.fill()? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())),
            }
        };
        let _ = len;
        if status == 100 {
            return self.response(head_request);
        }
        let resp = Resp { status, headers, body: Vec::new() };
        let no_body = head_request || status == 204 || status == 304;
        let body = if no_body {
            Vec::new()
        } else if resp.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            self.chunked()?
        } else if let Some(n) = resp.header("content-length") {
            let n: usize = n.trim().parse().unwrap();
            while self.buf.len() < n {
                if self.fill()? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            self.buf.drain(..n).collect()
        } else {
            while self.fill()? > 0 {}
            std::mem::take(&mut self.buf)
        };
        Ok(Resp { body, ..resp })
    }

    fn line(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.fill()? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    fn chunked(&mut self) -> std::io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.line()?;
            let size = usize::from_str_radix(std::str::from_utf8(&line).unwrap().split(';').next().unwrap(), 16)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
            if size == 0 {
                while !self.line()?.is_empty() {}
                return Ok(body);
            }
            while self.buf.len() < size + 2 {
                if self.fill()? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            body.extend_from_slice(&self.buf[..size]);
            assert_eq!(&self.buf[size..size + 2], b"\r\n", "chunk data must end with CRLF");
            self.buf.drain(..size + 2);
        }
    }

    /// True if the peer closed the connection (EOF with nothing pending).
    pub fn at_eof(&mut self) -> bool {
        self.buf.is_empty() && matches!(self.fill(), Ok(0))
    }

    /// How the peer ends the connection after what was read: closed or
    /// reset. Panics if more bytes come, or if neither happens within the
    /// read timeout (a server that keeps the connection open).
    pub fn ending(&mut self) -> Ending {
        assert!(self.buf.is_empty(), "bytes before the end: {:?}", String::from_utf8_lossy(&self.buf));
        match self.fill() {
            Ok(0) => Ending::Closed,
            Ok(_) => panic!("more bytes instead of the end: {:?}", String::from_utf8_lossy(&self.buf)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ending::Reset,
            Err(e) => panic!("the connection was neither closed nor reset: {e}"),
        }
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

/// `GET path` on a fresh keep-alive connection; the first response.
pub fn get(server: &Server, path: &str) -> Resp {
    let mut r = Reader::new(server.connect());
    r.get_mut().write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).unwrap();
    r.response(false).unwrap()
}

/// Sends `request` on a fresh connection and reads everything until the
/// server closes or resets it; panics if it does neither within IO_TIMEOUT.
pub fn exchange_raw(server: &Server, request: &[u8]) -> Vec<u8> {
    let mut s = server.connect();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("the server kept the connection open ({e}) after {:?}", String::from_utf8_lossy(&out)),
        }
    }
}

/// Replaces the Date header value so responses compare byte for byte.
pub fn without_date(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw).into_owned();
    text.lines().map(|l| if l.starts_with("Date: ") { "Date: <date>" } else { l }).collect::<Vec<_>>().join("\n")
}

/// Runs a command and returns (exit ok, stdout).
pub fn run(cmd: &mut Command) -> (bool, Vec<u8>) {
    let out = cmd.output().expect("run command");
    (out.status.success(), out.stdout)
}

/// What a load run saw.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub ok: u64,
    pub non_2xx: u64,
    /// (pid of the worker the connection was on, if known; error)
    pub failures: Vec<(Option<i32>, String)>,
    pub reconnects: u64,
    /// Pids seen in `ok <pid>` bodies (faults worker).
    pub pids: std::collections::BTreeSet<i32>,
}

/// Keep-alive clients hammering `path` until stopped, reconnecting after
/// `Connection: close` like wrk does. Bounded by `stop`.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<LoadReport>>,
}

impl Load {
    pub fn start(addr: SocketAddr, clients: usize, path: &str) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                let request = format!("GET {path} HTTP/1.1\r\nHost: load\r\n\r\n");
                std::thread::spawn(move || client_loop(addr, &request, &stop))
            })
            .collect();
        Load { stop, threads }
    }

    pub fn finish(self) -> LoadReport {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut total = LoadReport::default();
        for t in self.threads {
            let r = t.join().unwrap();
            total.ok += r.ok;
            total.non_2xx += r.non_2xx;
            total.reconnects += r.reconnects;
            total.failures.extend(r.failures);
            total.pids.extend(r.pids);
        }
        total
    }
}

fn client_loop(addr: SocketAddr, request: &str, stop: &std::sync::atomic::AtomicBool) -> LoadReport {
    let mut report = LoadReport::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    'connect: while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
        let stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                report.failures.push((None, format!("connect: {e}")));
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut reader = Reader::new(stream);
        let mut pid = None;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            if let Err(e) = reader.get_mut().write_all(request.as_bytes()) {
                report.failures.push((pid, format!("write: {e}")));
                continue 'connect;
            }
            match reader.response(false) {
                Ok(resp) => {
                    if (200..300).contains(&resp.status) {
                        report.ok += 1;
                    } else {
                        report.non_2xx += 1;
                    }
                    if let Some(p) = std::str::from_utf8(&resp.body)
                        .ok()
                        .and_then(|b| b.strip_prefix("ok "))
                        .and_then(|p| p.trim().parse().ok())
                    {
                        pid = Some(p);
                        report.pids.insert(p);
                    }
                    if resp.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
                        report.reconnects += 1;
                        continue 'connect;
                    }
                }
                Err(e) => {
                    report.failures.push((pid, format!("read: {e}")));
                    continue 'connect;
                }
            }
        }
    }
    report
}

/// Makes sure a command-line tool from Debian is installed (installing it
/// with apt-get when missing, as a fresh CI machine needs).
pub fn require_tool(tool: &str, package: &str) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let found = |t: &str| {
        Command::new("sh").arg("-c").arg(format!("command -v {t}")).output().is_ok_and(|o| o.status.success())
    };
    if found(tool) {
        return;
    }
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("(apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {package}"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok && found(tool), "{tool} is needed and could not be installed with apt-get ({package})");
}

/// Waits until `cond` holds, polling; false on timeout.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Every TCP socket bound to local `port`, IPv4 and IPv6 alike, from
/// /proc/net/tcp{,6}: its state (`0A` listening, `01` established, `03`
/// SYN_RECV, in hex as the kernel prints it) and its inode.
fn tcp_sockets_on(port: u16) -> Vec<(String, String)> {
    // The v6 table is missing without IPv6.
    let tables = ["/proc/net/tcp", "/proc/net/tcp6"].map(|t| std::fs::read_to_string(t).unwrap_or_default());
    tables
        .iter()
        .flat_map(|table| table.lines().skip(1))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()?;
            (local_port == port).then(|| (f[3].to_string(), f[9].to_string()))
        })
        .collect()
}

/// The inodes of the sockets listening on `port`.
pub fn listening_inodes(port: u16) -> Vec<String> {
    tcp_sockets_on(port).into_iter().filter(|(state, _)| state == "0A").map(|(_, inode)| inode).collect()
}

/// The inodes of the server-side ends of connections to `port` that are
/// ESTABLISHED.
pub fn established_inodes(port: u16) -> Vec<String> {
    tcp_sockets_on(port).into_iter().filter(|(state, _)| state == "01").map(|(_, inode)| inode).collect()
}

/// Server-side ends of connections to `port`: (SYN_RECV, ESTABLISHED). A
/// deferred connection (`--defer-accept`) is still a request in its
/// listener's queue, in SYN_RECV, until its first bytes come.
pub fn server_side_states(port: u16) -> (usize, usize) {
    let sockets = tcp_sockets_on(port);
    let count = |want: &str| sockets.iter().filter(|(state, _)| state == want).count();
    (count("03"), count("01"))
}

/// The inode of the listening Unix socket bound at `path`, if any.
pub fn listening_unix_inode(path: &std::path::Path) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    let path = path.to_string_lossy();
    table.lines().skip(1).find_map(|l| {
        // Num RefCount Protocol Flags Type St Inode Path; Flags has
        // __SO_ACCEPTCON (0x10000) on a listening socket.
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() == 8 && f[7] == path && f[3] == "00010000").then(|| f[6].to_string())
    })
}

pub fn socket_inodes_of(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|t| {
            let t = t.to_string_lossy().into_owned();
            t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')).map(str::to_string)
        })
        .collect()
}

/// `http-cluster status --json` against the server's control socket.
pub fn status_json(server: &Server) -> serde_json::Value {
    let out = Command::new(bin("http-cluster"))
        .args(["status", "--json", "--control-socket"])
        .arg(&server.control)
        .output()
        .unwrap();
    assert!(out.status.success(), "status failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
}

/// Voluntary context switches so far of every thread of `pid`: how often
/// it went to sleep (waits, polls), not how often others preempted it.
pub fn context_switches(pid: i32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .map(|status| {
            let switches = status.lines().filter(|l| l.starts_with("voluntary_ctxt_switches:"));
            switches.filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()).sum::<u64>()
        })
        .sum()
}

/// Puts an executable script with `text` at `path`, replacing any before
/// it by rename, never rewriting it in place: a file open for writing (even
/// in a sibling test's forked child) cannot be executed (ETXTBSY).
pub fn install_script(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A worker program that runs `faults`, but once `marker` exists waits
/// `delay` before it starts: a replacement worker that is slow to boot, so
/// a slot stays without a worker for that long. A marker that says `once`
/// is removed by the worker it slows down.
pub struct SlowRespawn {
    pub program: TempPath,
    pub marker: TempPath,
}

impl SlowRespawn {
    pub fn new(what: &str, delay: Duration) -> SlowRespawn {
        let program = temp_path(&format!("{what}.sh"));
        let marker = temp_path(&format!("{what}.slow"));
        let text = format!(
            "#!/bin/sh\nm='{}'\nif [ -e \"$m\" ]; then\n  if grep -q once \"$m\"; then rm -f \"$m\"; fi\n  sleep {}\nfi\nexec '{}' \"$@\"\n",
            marker.display(),
            delay.as_secs_f64(),
            bin("faults").display()
        );
        install_script(&program, &text);
        SlowRespawn { program, marker }
    }

    /// From now on, workers started take `delay` to boot.
    pub fn arm(&self) {
        std::fs::write(&self.marker, b"").unwrap();
    }

    /// The next worker started takes `delay` to boot; the marker is gone
    /// once it has begun its wait.
    pub fn arm_once(&self) {
        std::fs::write(&self.marker, b"once").unwrap();
    }
}

/// Runs a master that must exit on its own within `within` (a refused
/// configuration, workers that cannot boot): its exit status and stderr.
/// Past the deadline it and its children are killed and the test fails,
/// so a regression fails instead of hanging the suite.
pub fn master_exit(cmd: &mut Command, within: Duration) -> (std::process::ExitStatus, String) {
    let mut master = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start the master");
    let mut pipe = master.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = master.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > within {
            for pid in children_of(master.id() as i32) {
                // SAFETY: kill(2) on a child of the master this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = master.kill();
            let _ = master.wait();
            panic!("the master still ran after {within:?}:\n{}", stderr.join().unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, stderr.join().unwrap())
}
