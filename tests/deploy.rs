//! Fitting into deployments: several listeners (IPv4, IPv6, Unix), systemd
//! socket activation and sd_notify, the status command, the access log and
//! its reopening, log levels, and configuration from the environment.

mod util;

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::*;

/// The addresses the banner lists after "listening on".
fn banner_addrs(banner: &str) -> Vec<String> {
    let list = banner.split("listening on ").nth(1).unwrap_or_default();
    list.split(" (").next().unwrap_or_default().split(' ').map(str::to_string).collect()
}

fn http_get_over(mut stream: impl Read + Write) -> Resp {
    stream.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    Reader::new(stream).response(false).unwrap()
}

fn unix_connect(path: &std::path::Path) -> UnixStream {
    let s = UnixStream::connect(path).expect("connect unix socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn serves_ipv4_ipv6_and_unix_listeners_at_once() {
    let sock = temp_path("web.sock");
    let unix = format!("unix:{}", sock.display());
    let mut server = Server::start(&["--workers", "2", "--bind", "[::1]:0", "--bind", &unix, "--unix-mode", "600"]);
    let addrs = banner_addrs(&server.banner);
    assert_eq!(addrs.len(), 3, "{}", server.banner);
    assert!(addrs[1].starts_with("http://[::1]:"), "{addrs:?}");
    assert_eq!(addrs[2], unix);

    assert_eq!(get(&server, "/").body, b"Hello, world!");
    let v6: std::net::SocketAddr = addrs[1].trim_start_matches("http://").parse().unwrap();
    let resp = http_get_over(std::net::TcpStream::connect(v6).unwrap());
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"Hello, world!"[..]));
    let resp = http_get_over(unix_connect(&sock));
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"Hello, world!"[..]));
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "--unix-mode applies");

    // A real client over the Unix socket, keep-alive across two requests.
    let (ok, out) = run(Command::new("curl").args(["-s", "--unix-socket"]).arg(&sock).args([
        "http://x/",
        "http://x/nope",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{num_connects}\\n",
    ]));
    assert!(ok);
    assert_eq!(String::from_utf8_lossy(&out), "200 1\n404 0\n");

    // Every worker was handed all three listeners over fd 3: a socket of
    // its own on each TCP address (reuseport), and the one Unix socket.
    let status = status_json(&server);
    assert_eq!(status["listeners"].as_array().unwrap().len(), 3);
    let port = |addr: &str| addr.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let (v4, v6) = (listening_inodes(port(&addrs[0])), listening_inodes(port(&addrs[1])));
    let unix_inode = listening_unix_inode(&sock).expect("the Unix listener");
    for pid in server.worker_pids() {
        let held = socket_inodes_of(pid);
        let count = |set: &[String]| held.iter().filter(|i| set.contains(i)).count();
        assert_eq!(count(&v4), 1, "worker {pid}: one IPv4 listener of {v4:?}");
        assert_eq!(count(&v6), 1, "worker {pid}: one IPv6 listener of {v6:?}");
        assert!(held.contains(&unix_inode), "worker {pid} holds the Unix listener");
    }

    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!sock.exists(), "the master removes the socket file it created");
}

#[test]
fn a_stale_unix_socket_is_replaced_and_a_live_one_is_refused() {
    let sock = temp_path("stale.sock");
    // A server that died without removing its socket file.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let unix = format!("unix:{}", sock.display());
    let server = Server::start(&["--workers", "1", "--bind", &unix]);
    assert_eq!(http_get_over(unix_connect(&sock)).status, 200);

    // A second server on the same path must not steal it.
    let (status, err) = master_exit(
        Command::new(bin("http-cluster")).args(["--workers", "1", "--control-socket", "none", "--bind", &unix]),
        Duration::from_secs(10),
    );
    assert!(!status.success());
    assert!(err.contains("in use by a running server"), "{err}");
    assert_eq!(http_get_over(unix_connect(&sock)).status, 200, "the first server still owns the socket");

    // A file that is not a socket is never deleted.
    let file = temp_path("not-a-socket");
    std::fs::write(&file, b"data").unwrap();
    let (status, err) = master_exit(
        Command::new(bin("http-cluster"))
            .args(["--workers", "1", "--control-socket", "none", "--bind"])
            .arg(format!("unix:{}", file.display())),
        Duration::from_secs(10),
    );
    assert!(!status.success(), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"data");
    drop(server);
}

#[test]
fn systemd_socket_activation_serves_the_inherited_sockets() {
    require_tool("systemd-socket-activate", "systemd");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let sock = temp_path("activated.sock");
    let control = temp_path("activated-control.sock");
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.args(["-l", &format!("127.0.0.1:{port}"), "-l"])
        .arg(&sock)
        .arg(bin("http-cluster"))
        // Would fail if used: activation must ignore --bind.
        .args(["--bind", "unix:/nonexistent-dir/x.sock", "--workers", "2", "--control-socket"])
        .arg(&control)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().unwrap();
    let _guard = KillGroup(child.id() as i32);
    // systemd-socket-activate listens, and starts the service on the first
    // connection: that request waits in the kernel queue until a worker
    // takes it.
    assert!(wait_until(Duration::from_secs(10), || sock.exists()));
    let started = Instant::now();
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let resp = http_get_over(s);
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"Hello, world!"[..]));
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(http_get_over(unix_connect(&sock)).status, 200);

    let mut banner = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut banner).unwrap();
    assert!(
        banner.contains(&format!("http://127.0.0.1:{port}")) && banner.contains(&sock.display().to_string()),
        "{banner}"
    );
    let status = {
        let out = Command::new(bin("http-cluster"))
            .args(["status", "--json", "--control-socket"])
            .arg(&control)
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // systemd-socket-activate execs the service: it is the master.
    assert_eq!(status["master_pid"].as_u64(), Some(child.id() as u64));
    let workers = children_of(child.id() as i32);
    assert_eq!(workers.len(), 2);
    for pid in workers {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let env = String::from_utf8_lossy(&env);
        assert!(
            !env.contains("LISTEN_FDS=") && !env.contains("LISTEN_PID="),
            "systemd's variables must not reach workers"
        );
    }
    // SAFETY: kill(2) on the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_until(Duration::from_secs(10), || child.try_wait().unwrap().is_some()));
    assert!(sock.exists(), "an inherited socket file belongs to systemd, not to us");
}

/// systemd's `ReusePort=yes`: the inherited socket has SO_REUSEPORT, so
/// the default `--balance reuseport` opens a socket for each further slot
/// beside it, and each worker accepts from its own.
#[test]
fn socket_activation_with_reuse_port_gives_each_slot_its_own_socket() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener.set_reuse_port(true).unwrap();
    listener.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    listener.listen(128).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let fd = listener.as_raw_fd();
    // systemd's DeferAcceptSec=2 (the kernel makes it 3 s: time enough
    // for the check below), which slot 1's socket must copy: the master
    // itself is told --defer-accept 0.
    let secs: libc::c_int = 2;
    // SAFETY: setsockopt(2) on our live socket with a c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const secs).cast(),
            std::mem::size_of_val(&secs) as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    // Steering left on the group by a master stopped after a SIGTTOU
    // (systemd's socket keeps the group alive): every new connection to the
    // first socket, systemd's. The new master must reset it, or slot 1's
    // socket would get nothing.
    http_cluster::listen::steer_reuseport(&listener, Some(1)).unwrap();
    // The shell's pid is the master's: `exec` keeps it.
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\""])
        .arg(bin("http-cluster"))
        .args(["--workers", "2", "--control-socket", "none", "--defer-accept", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: only async-signal-safe calls between fork and exec: the
    // socket becomes fd 3, without close-on-exec, as systemd passes it.
    unsafe {
        cmd.pre_exec(move || {
            let rc = if fd == 3 { libc::fcntl(3, libc::F_SETFD, 0) } else { libc::dup2(fd, 3) };
            if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
        })
    };
    let mut child = cmd.spawn().unwrap();
    let _guard = KillGroup(child.id() as i32);
    let mut banner = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut banner).unwrap();
    assert!(banner.contains(&format!("http://{addr} (2 workers)")), "{banner}");

    let inodes = listening_inodes(addr.port());
    assert_eq!(inodes.len(), 2, "systemd's socket and one for slot 1: {inodes:?}");
    let mut held: Vec<String> = children_of(child.id() as i32)
        .into_iter()
        .map(|pid| {
            let own: Vec<String> = socket_inodes_of(pid).into_iter().filter(|i| inodes.contains(i)).collect();
            assert_eq!(own.len(), 1, "worker {pid} accepts from one socket of its own: {own:?}");
            own[0].clone()
        })
        .collect();
    held.sort();
    held.dedup();
    assert_eq!(held.len(), 2, "the two workers hold different sockets");
    // Both slots defer as systemd's socket does: 16 silent connections,
    // spread over the two sockets by hash, all wait in the kernel.
    let silent: Vec<std::net::TcpStream> = (0..16).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server_side_states(addr.port()), (16, 0), "slot 1's socket copies DeferAcceptSec");
    drop(silent);
    // Both slots get new connections: each worker holds some of 40 open
    // keep-alive connections (the only ones ESTABLISHED on the server side:
    // the silent ones above were closed by their clients).
    let workers = children_of(child.id() as i32);
    let open: Vec<_> = (0..40)
        .map(|_| {
            let mut r = Reader::new(std::net::TcpStream::connect(addr).unwrap());
            r.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
            assert_eq!(r.response(false).unwrap().status, 200);
            r
        })
        .collect();
    let established = established_inodes(addr.port());
    let held: Vec<usize> =
        workers.iter().map(|&p| socket_inodes_of(p).iter().filter(|i| established.contains(i)).count()).collect();
    assert!(held.iter().sum::<usize>() >= 40, "connections per worker: {held:?}");
    assert!(held.iter().all(|&n| n >= 5), "connections per worker: {held:?}");
    drop(open);
    // SAFETY: kill(2) on the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_until(Duration::from_secs(10), || child.try_wait().unwrap().is_some()));
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!err.contains("no SO_REUSEPORT"), "{err}");
}

/// A process's open-file limits, soft and hard, from /proc.
fn open_file_limits(pid: i32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a Max open files line");
    let mut fields = line["Max open files".len()..].split_whitespace();
    (fields.next().unwrap().to_string(), fields.next().unwrap().to_string())
}

#[test]
fn the_master_and_library_workers_raise_the_open_file_soft_limit_other_programs_keep_theirs() {
    // A login shell's or systemd's soft limit of 1024 (256 here, the hard
    // one left as it is) would cap each worker near that many connections.
    // The worker program is a shell script that notes its own soft limit
    // (what a program not built with this library starts with) and then
    // becomes `hello`, which raises it.
    let (_, hard) = open_file_limits(std::process::id() as i32);
    // Below the hard limit whatever it is here (a container may set it low).
    let soft = match hard.parse::<u64>() {
        Ok(h) if h <= 512 => h / 2,
        _ => 256,
    };
    let noted = temp_path("nofile-seen");
    let program = temp_path("nofile-worker.sh");
    let script = format!("#!/bin/sh\nulimit -Sn > '{}'\nexec '{}' \"$@\"\n", noted.display(), bin("hello").display());
    install_script(&program, &script);
    let server =
        Server::start_under_ulimit(&format!("-Sn {soft}"), &["--workers", "1", "--", program.to_str().unwrap()]);
    assert!(server.banner.contains("(1 workers)"), "{}", server.banner);
    let workers = server.worker_pids();
    assert_eq!(workers.len(), 1);
    assert_eq!(open_file_limits(server.pid()), (hard.clone(), hard.clone()), "the master");
    assert_eq!(
        std::fs::read_to_string(&noted).unwrap().trim(),
        soft.to_string(),
        "what the worker program started with"
    );
    assert_eq!(open_file_limits(workers[0]), (hard.clone(), hard), "the library worker, once started");
}

#[test]
fn a_worker_out_of_descriptors_keeps_serving_and_reports_it_once_a_second() {
    // 64 descriptors in all: the worker runs out after some 40
    // connections. The rest wait in the kernel's queue while the accept
    // loop retries every 10 ms, and are served as the first ones close.
    let server = Server::start_under_ulimit("-n 64", &["--workers", "1", "--defer-accept", "0"]);
    let open: Vec<_> = (0..100).map(|_| server.connect()).collect();
    std::thread::sleep(Duration::from_secs(3));
    let log = server.stderr();
    let failures = log.matches("accept: ").count();
    assert!((1..=5).contains(&failures), "{failures} reports in 3 s:\n{log}");
    assert!(!log.contains("working again"), "{log}");
    // Closing the first connections frees descriptors for the rest.
    drop(open);
    let get = || {
        let mut r = Reader::new(server.connect());
        r.get_mut().set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        r.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
        assert_eq!(r.response(false).unwrap().status, 200);
    };
    for _ in 0..20 {
        get();
    }
    // The first accept a second after the last report says it works again
    // (with the failures since that report, when there were any).
    let recovered = wait_until(Duration::from_secs(5), || {
        get();
        server.stderr().contains("accept: working again")
    });
    assert!(recovered, "{}", server.stderr());
}

struct KillGroup(i32);
impl Drop for KillGroup {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a process group this test created.
        unsafe { libc::kill(-self.0, libc::SIGKILL) };
    }
}

/// Reads sd_notify datagrams until one contains `want` (or times out).
fn await_notify(sock: &UnixDatagram, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.lines().any(|l| l == want) {
                return msg;
            }
        }
    }
    panic!("no sd_notify message with {want}");
}

#[test]
fn sd_notify_reports_ready_reloading_and_stopping() {
    let path = temp_path("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut server = Server::start_with_env(&["--workers", "2"], &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let ready = await_notify(&sock, "READY=1");
    assert!(ready.contains(&format!("MAINPID={}", server.pid())), "{ready}");
    for pid in server.worker_pids() {
        let env = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap()).into_owned();
        assert!(!env.contains("NOTIFY_SOCKET="), "workers must not talk to systemd");
    }
    server.signal(libc::SIGHUP);
    let reloading = await_notify(&sock, "RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "systemd 253+ needs the reload timestamp: {reloading}");
    await_notify(&sock, "READY=1");
    // READY=1 comes once every slot's new worker is ready (old ones may
    // still be draining).
    let status = status_json(&server);
    let ready: Vec<_> = status["workers"].as_array().unwrap().iter().filter(|w| w["phase"] == "ready").collect();
    assert_eq!(ready.len(), 2, "{status}");
    assert!(ready.iter().all(|w| w["generation"].as_u64() == Some(2)), "{status}");
    server.signal(libc::SIGTERM);
    await_notify(&sock, "STOPPING=1");
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn status_shows_each_worker_as_a_table_and_as_json() {
    let server = Server::start(&["--workers", "2"]);
    let mut client = Reader::new(server.connect());
    for _ in 0..10 {
        client.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(client.response(false).unwrap().status, 200);
    }
    // Counters arrive with the workers' heartbeats (every 500 ms).
    let mut status = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(5), || {
            status = status_json(&server);
            let w = status["workers"].as_array().unwrap();
            w.iter().map(|w| w["requests"].as_u64().unwrap()).sum::<u64>() == 10
                && w.iter().map(|w| w["connections"].as_u64().unwrap()).sum::<u64>() == 1
        }),
        "{status}"
    );
    assert_eq!(status["master_pid"].as_u64(), Some(server.pid() as u64));
    assert_eq!(status["generation"].as_u64(), Some(1));
    assert_eq!(status["state"], "ready");
    assert_eq!(status["listeners"][0].as_str(), Some(format!("http://{}", server.addr).as_str()));
    let mut pids: Vec<i64> = status["workers"].as_array().unwrap().iter().map(|w| w["pid"].as_i64().unwrap()).collect();
    pids.sort();
    let mut expected: Vec<i64> = server.worker_pids().into_iter().map(i64::from).collect();
    expected.sort();
    assert_eq!(pids, expected);
    for w in status["workers"].as_array().unwrap() {
        assert!(w["rss_bytes"].as_u64().unwrap() > 100_000);
        assert_eq!(w["phase"], "ready");
        assert!(w["uptime_secs"].as_f64().unwrap() > 0.0);
    }
    let slots: std::collections::BTreeSet<u64> =
        status["workers"].as_array().unwrap().iter().map(|w| w["slot"].as_u64().unwrap()).collect();
    assert_eq!(slots, [0, 1].into());

    let out =
        Command::new(bin("http-cluster")).arg("status").arg("--control-socket").arg(&server.control).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(table.contains(&format!("master pid {}", server.pid())) && table.contains("generation 1"), "{table}");
    for pid in &expected {
        let row = table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(&pid.to_string()))
            .unwrap_or_else(|| panic!("{table}"));
        assert!(row.contains("ready") && row.contains("MiB"), "{row}");
    }

    // After a reload the generation moves on.
    server.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(15), || {
        let s = status_json(&server);
        s["generation"].as_u64() == Some(2)
            && s["workers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|w| w["generation"].as_u64() == Some(2) && w["phase"] == "ready")
    }));

    let out = Command::new(bin("http-cluster"))
        .args(["status", "--control-socket", "/nonexistent/ctl.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach a master"));
}

/// The access log's lines, once at least `n` were flushed.
fn log_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    wait_until(Duration::from_secs(5), || {
        lines = std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect();
        lines.len() >= n
    });
    lines
}

#[test]
fn access_log_uses_the_combined_format_and_reopens_on_sigusr1() {
    let log = temp_path("access.log");
    let server = Server::start(&["--workers", "2", "--access-log", log.to_str().unwrap()]);
    let mut c = Reader::new(server.connect());
    c.get_mut()
        .write_all(b"GET /?q=1 HTTP/1.1\r\nHost: a\r\nReferer: http://ref/\r\nUser-Agent: test \"agent\"\r\n\r\n")
        .unwrap();
    assert_eq!(c.response(false).unwrap().status, 200);
    c.get_mut().write_all(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(c.response(true).unwrap().status, 200);
    c.get_mut().write_all(b"GET /missing HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(c.response(false).unwrap().status, 404);
    assert!(
        exchange_raw(&server, b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
            .starts_with(b"HTTP/1.1 400")
    );

    let lines = log_lines(&log, 4);
    assert_eq!(lines.len(), 4, "{lines:?}");
    // host ident user [time] "request" status bytes "referer" "agent"
    let fields = |line: &str| -> (String, String, String) {
        let (host, rest) = line.split_once(" - - [").unwrap();
        let (time, rest) = rest.split_once("] ").unwrap();
        assert_eq!(time.len(), 26, "{time}");
        assert!(time.ends_with(" +0000") && time.as_bytes()[2] == b'/' && time.as_bytes()[11] == b':', "{time}");
        (host.to_string(), time.to_string(), rest.to_string())
    };
    let mut rests: Vec<String> = lines.iter().map(|l| fields(l).2).collect();
    rests.sort();
    let mut expected = [
        "\"GET /?q=1 HTTP/1.1\" 200 13 \"http://ref/\" \"test \\x22agent\\x22\"".to_string(),
        "\"HEAD / HTTP/1.1\" 200 - \"-\" \"-\"".to_string(),
        "\"GET /missing HTTP/1.0\" 404 10 \"-\" \"-\"".to_string(),
        "\"-\" 400 - \"-\" \"-\"".to_string(),
    ];
    expected.sort();
    // The 400's body length is the server's own; compare it loosely.
    let norm = |s: &String| if s.starts_with("\"-\" 400") { "\"-\" 400".to_string() } else { s.clone() };
    assert_eq!(rests.iter().map(norm).collect::<Vec<_>>(), expected.iter().map(norm).collect::<Vec<_>>(), "{lines:?}");
    assert!(lines.iter().all(|l| fields(l).0 == "127.0.0.1"));

    // logrotate: move the file, SIGUSR1, and new lines go to a new file.
    let rotated = temp_path("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    server.signal(libc::SIGUSR1);
    // The file reappears when the first worker reopens it; wait for both.
    assert!(
        wait_until(Duration::from_secs(5), || server.stderr().matches("access log reopened").count() == 2),
        "every worker reopens the path"
    );
    assert!(log.exists());
    for _ in 0..4 {
        assert_eq!(get(&server, "/after").status, 404);
    }
    let fresh = log_lines(&log, 4);
    assert_eq!(fresh.len(), 4);
    assert!(fresh.iter().all(|l| l.contains("\"GET /after HTTP/1.1\" 404")));
    assert_eq!(std::fs::read_to_string(&rotated).unwrap().lines().count(), 4, "old lines stay in the rotated file");
}

#[test]
fn log_level_applies_to_master_and_workers() {
    let quiet = Server::start(&["--workers", "1", "--log-level", "warn"]);
    assert_eq!(get(&quiet, "/").status, 200);
    assert!(!quiet.stderr().contains(" INFO "), "{}", quiet.stderr());

    let chatty = Server::start_with_env(&["--workers", "1"], &[("HTTP_CLUSTER_LOG_LEVEL", "debug")]);
    assert!(exchange_raw(&chatty, b"BAD\r\n\r\n").starts_with(b"HTTP/1.1 400"));
    assert!(wait_until(Duration::from_secs(5), || chatty.stderr().contains("DEBUG worker 0")), "{}", chatty.stderr());
}

#[test]
fn every_flag_reads_an_environment_variable_and_help_groups_them() {
    let out = Command::new(bin("http-cluster")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for heading in ["Listening:", "Workers:", "HTTP limits:", "Connections:", "Logging:", "Operations:"] {
        assert!(help.contains(heading), "{heading} missing:\n{help}");
    }
    assert!(help.contains("[default: 127.0.0.1:8080]") && help.contains("[default: 30s]"));
    // Each option's help ends with its env var (clap puts it in brackets).
    let mut flags = 0;
    let text = help.replace('\n', " ");
    for part in text.split("  --").skip(1) {
        let name = part.split([' ', '=', '<']).next().unwrap();
        if ["help", "version"].contains(&name) {
            continue;
        }
        flags += 1;
        let var = format!("[env: HTTP_CLUSTER_{}=", name.to_uppercase().replace('-', "_"));
        assert!(part.contains(&var), "--{name} has no {var}]");
    }
    assert!(flags >= 25, "found {flags} flags in:\n{help}");

    let server = Server::start_with_env(&[], &[("HTTP_CLUSTER_WORKERS", "1"), ("HTTP_CLUSTER_MAX_HEADERS", "2")]);
    assert_eq!(server.worker_pids().len(), 1);
    let resp = exchange_raw(&server, b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n");
    assert!(resp.starts_with(b"HTTP/1.1 431"), "{}", String::from_utf8_lossy(&resp));
}

/// Sends `header` then `GET /peer` (keep-alive, twice) on one connection;
/// the bodies, or `None` if the server closed without answering.
fn peer_via(server: &Server, header: &[u8]) -> Option<(String, String)> {
    let mut s = server.connect();
    // The header may arrive in pieces; the server waits for the rest.
    let (a, b) = header.split_at(header.len() / 2);
    s.write_all(a).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b).unwrap();
    let _ = s.write_all(b"GET /peer HTTP/1.1\r\nHost: a\r\n\r\nGET /peer HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut r = Reader::new(s);
    let first = r.response(false).ok()?;
    let second = r.response(false).ok()?;
    Some((String::from_utf8(first.body).unwrap(), String::from_utf8(second.body).unwrap()))
}

fn proxy_v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | command);
    h.push(family);
    h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
    h.extend_from_slice(addresses);
    h
}

#[test]
fn proxy_protocol_v1_and_v2_give_handlers_the_client_address() {
    let server = Server::start(&["--workers", "1", "--proxy-protocol", "--", bin("faults").to_str().unwrap()]);
    let v1 = peer_via(&server, b"PROXY TCP4 192.0.2.1 198.51.100.2 5555 80\r\n");
    assert_eq!(
        v1,
        Some(("192.0.2.1:5555".into(), "192.0.2.1:5555".into())),
        "the header applies to the whole connection"
    );
    let v1_ipv6 = peer_via(&server, b"PROXY TCP6 2001:db8::1 2001:db8::2 443 80\r\n");
    assert_eq!(v1_ipv6.unwrap().0, "[2001:db8::1]:443");

    let mut v4 = vec![203, 0, 113, 7, 10, 0, 0, 1];
    v4.extend_from_slice(&40000u16.to_be_bytes());
    v4.extend_from_slice(&80u16.to_be_bytes());
    v4.extend_from_slice(&[0x04, 0x00, 0x02, b'h', b'i']); // a TLV, skipped
    assert_eq!(peer_via(&server, &proxy_v2(1, 0x11, &v4)).unwrap().0, "203.0.113.7:40000");
    let mut v6 = vec![0x20, 0x01, 0x0d, 0xb8];
    v6.extend_from_slice(&[0; 11]);
    v6.push(9);
    v6.extend_from_slice(&[0; 16]);
    v6.extend_from_slice(&[0x1f, 0x90, 0, 80]);
    assert_eq!(peer_via(&server, &proxy_v2(1, 0x21, &v6)).unwrap().0, "[2001:db8::9]:8080");
    // LOCAL: the proxy's own health check; the socket's peer is kept.
    assert!(peer_via(&server, &proxy_v2(0, 0x00, &[])).unwrap().0.starts_with("127.0.0.1:"));
    assert!(peer_via(&server, b"PROXY UNKNOWN\r\n").unwrap().0.starts_with("127.0.0.1:"));

    // No header, or a malformed one: closed without a response. That
    // includes a v1 line with no CRLF in its 107 bytes, and a v2 header
    // over 4 KiB (its TLVs, zero-filled here).
    let endless_v1 = format!("PROXY TCP4 192.0.2.1 198.51.100.2 1 80{}\r\n", " ".repeat(100));
    let mut huge_v2 = v4.clone();
    huge_v2.resize(5000, 0);
    for bad in [
        &b"GET /peer HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"PROXY TCP4 192.0.2.1 198.51.100.2 99999 80\r\n",
        b"PROXY TCP4 2001:db8::1 198.51.100.2 1 80\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 1 80\n",
        &proxy_v2(1, 0x12, &v4), // UDP
        endless_v1.as_bytes(),
        &proxy_v2(1, 0x11, &huge_v2),
    ] {
        let raw = exchange_raw(&server, bad);
        assert!(raw.is_empty(), "{:?} got {:?}", String::from_utf8_lossy(bad), String::from_utf8_lossy(&raw));
    }
    // A slow proxy that never completes its header is cut off.
    let slow = Server::start(&["--workers", "1", "--proxy-protocol", "--head-timeout", "300ms"]);
    let mut s = slow.connect();
    s.write_all(b"PROXY TCP4 192.0.2.1").unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(buf.is_empty() && started.elapsed() < Duration::from_secs(3));
}

#[test]
fn handlers_see_the_socket_peer_without_a_proxy() {
    let server = Server::start(&["--workers", "1", "--", bin("faults").to_str().unwrap()]);
    let mut s = server.connect();
    let local = s.local_addr().unwrap();
    s.write_all(b"GET /peer HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let resp = Reader::new(s).response(false).unwrap();
    assert_eq!(String::from_utf8(resp.body).unwrap(), local.to_string());
    // A PROXY header from a client is just a bad request here.
    assert!(
        exchange_raw(&server, b"PROXY TCP4 192.0.2.1 198.51.100.2 5555 80\r\nGET / HTTP/1.1\r\n\r\n")
            .starts_with(b"HTTP/1.1 400")
    );
}

/// nginx in front, as the README's upstream block configures it.
struct Nginx {
    child: std::process::Child,
    port: u16,
    /// nginx's prefix (config, pid, logs): held only to be removed on drop,
    /// after nginx is killed.
    _dir: TempPath,
}

impl Nginx {
    fn start(upstream: std::net::SocketAddr) -> Nginx {
        require_tool("nginx", "nginx-light");
        // nginx cannot listen on port 0 and say which it got: a free port
        // is picked and released first, and someone else may take it in
        // between. Then nginx exits at once, and another port is tried.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            if let Some(nginx) = Nginx::try_start(upstream, port) {
                return nginx;
            }
        }
        panic!("nginx did not start on any of 5 ports");
    }

    fn try_start(upstream: std::net::SocketAddr, port: u16) -> Option<Nginx> {
        let dir = temp_path("nginx");
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log warn;
             events {{ worker_connections 1024; }}
             http {{
               access_log off;
               client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
               upstream app {{ server {upstream} max_fails=3 fail_timeout=10s; keepalive 8; keepalive_timeout 60s; }}
               server {{
                 listen 127.0.0.1:{port};
                 location / {{
                   proxy_pass http://app;
                   proxy_http_version 1.1;
                   proxy_set_header Connection \"\";
                   proxy_set_header Host $host;
                   # No retries: an upstream reset must show as a 502.
                   proxy_next_upstream off;
                 }}
               }}
             }}"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut nginx = Nginx { child, port, _dir: dir };
        let mut exited = false;
        let up = wait_until(Duration::from_secs(10), || {
            exited = nginx.child.try_wait().unwrap().is_some();
            exited || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "nginx neither listened nor exited within 10 s");
        // Listening, and still running: the port is nginx's.
        (!exited && nginx.child.try_wait().unwrap().is_none()).then_some(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn behind_nginx_upstream_connections_are_reused_and_a_reload_costs_no_502() {
    let server = Server::start(&["--workers", "2", "--", bin("faults").to_str().unwrap()]);
    let nginx = Nginx::start(server.addr);
    let front: std::net::SocketAddr = ([127, 0, 0, 1], nginx.port).into();
    let mut client = Reader::new(std::net::TcpStream::connect(front).unwrap());
    client.get_mut().set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut upstream_ports = std::collections::HashSet::new();
    for _ in 0..200 {
        client.get_mut().write_all(b"GET /peer HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let resp = client.response(false).unwrap();
        assert_eq!(resp.status, 200);
        upstream_ports.insert(String::from_utf8(resp.body).unwrap());
    }
    assert!(upstream_ports.len() <= 2, "nginx reuses its keep-alive upstream connections: {upstream_ports:?}");

    // A reload of the cluster under traffic through nginx: its kept-alive
    // upstream connections are closed only after a response that says so,
    // so nginx never sees a reset and never answers 502.
    let load = Load::start(front, 8, "/");
    std::thread::sleep(Duration::from_millis(300));
    let before = server.worker_pids();
    server.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(15), || {
        let now = server.worker_pids();
        now.len() == 2 && now.iter().all(|p| !before.contains(p))
    }));
    std::thread::sleep(Duration::from_millis(300));
    let report = load.finish();
    assert!(report.ok > 100, "traffic flowed through the reload: {report:?}");
    assert_eq!((report.non_2xx, report.failures.len()), (0, 0), "{report:?}");
}

#[test]
fn access_log_has_a_line_for_responses_that_end_abnormally() {
    let log = temp_path("abnormal.log");
    let server = Server::start(&[
        "--workers",
        "1",
        "--access-log",
        log.to_str().unwrap(),
        "--",
        bin("faults").to_str().unwrap(),
    ]);
    // A handler that panics before answering (500 from the server), and one
    // that declares 10 body bytes, writes 5 and returns (connection closed).
    assert!(exchange_raw(&server, b"GET /panic HTTP/1.1\r\nHost: a\r\n\r\n").starts_with(b"HTTP/1.1 500"));
    let short = exchange_raw(&server, b"GET /short HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(short.starts_with(b"HTTP/1.1 200") && short.ends_with(b"12345"));
    let lines = log_lines(&log, 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("\"GET /panic HTTP/1.1\" 500 ")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("\"GET /short HTTP/1.1\" 200 5 ")), "{lines:?}");
}

/// An access log on stdout that nobody reads (a stalled log shipper) fills
/// the pipe. The worker's main thread must keep sending heartbeats: had it
/// been the one writing, the master would kill the worker as hung after
/// `--worker-timeout`, and every replacement after it.
#[test]
fn a_stalled_access_log_on_stdout_does_not_get_the_worker_killed() {
    let stderr = temp_path("stalled-log.stderr");
    let mut master = Command::new(bin("http-cluster"))
        .args(["--bind", "127.0.0.1:0", "--workers", "1", "--worker-timeout", "2s", "--access-log", "-"])
        .args(["--control-socket", "none"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    // The banner, then never read again: the pipe (64 KiB) fills.
    let mut stdout = std::io::BufReader::new(master.stdout.take().unwrap());
    let mut banner = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut banner).unwrap();
    let addr: std::net::SocketAddr =
        banner.split("http://").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    let worker = children_of(master.id() as i32);
    assert_eq!(worker.len(), 1);
    let mut conn = Reader::new(std::net::TcpStream::connect(addr).unwrap());
    for _ in 0..3000 {
        conn.get_mut().write_all(b"GET /?a-query-to-make-the-log-lines-longer HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(conn.response(false).unwrap().status, 200);
    }
    // Twice the worker timeout, with the log stalled all along.
    std::thread::sleep(Duration::from_secs(4));
    conn.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(conn.response(false).unwrap().status, 200);
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(children_of(master.id() as i32), worker, "the same worker serves: {log}");
    assert!(!log.contains("killing it"), "{log}");
    let _ = master.kill();
    let _ = master.wait();
    // Unblocks the worker's writer (EPIPE), so it can exit.
    drop(stdout);
}
