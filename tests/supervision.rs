//! Supervision with real processes and real signals: respawn, nothing lost
//! while a worker is down, readiness-gated reload with rollback, graceful
//! stop, hung workers, boot failures, scaling, recycling, orphaned workers.

mod util;

use std::io::Write;
use std::time::{Duration, Instant};

use util::*;

fn faults() -> String {
    bin("faults").to_str().unwrap().to_string()
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a pid this test started (through the master).
    unsafe { libc::kill(pid, sig) };
}

#[test]
fn a_killed_worker_is_replaced_and_only_its_own_connections_fail() {
    let faults = faults();
    let server = Server::start(&["--workers", "2", "--", &faults]);
    let before = server.worker_pids();
    let load = Load::start(server.addr, 8, "/");
    std::thread::sleep(Duration::from_millis(500));

    let victim = before[0];
    let killed_at = Instant::now();
    kill(victim, libc::SIGKILL);
    let mut replacement: Option<i32> = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            replacement = server.worker_pids().into_iter().find(|p| !before.contains(p));
            replacement.is_some_and(|p| server.ready_logged(p))
        }),
        "no replacement became ready; stderr:\n{}",
        server.stderr()
    );
    let latency = killed_at.elapsed();
    eprintln!("respawn latency (kill -9 to replacement ready): {latency:?}");
    std::thread::sleep(Duration::from_millis(500));
    let report = load.finish();

    assert!(report.ok > 100, "{report:?}");
    assert_eq!(report.non_2xx, 0);
    for (pid, err) in &report.failures {
        assert_eq!(*pid, Some(victim), "a connection not on the killed worker failed: {err}");
    }
    // Replaced at once: a first crash gets no backoff.
    let log = server.stderr();
    let exit_line = log
        .lines()
        .find(|l| l.contains(&format!("(pid {victim}) ")) && l.contains("respawning"))
        .expect("the exit is logged");
    assert!(exit_line.ends_with("respawning in 0ns"), "{exit_line}");
    assert!(latency < Duration::from_secs(5), "respawn took {latency:?}");
    assert_eq!(server.worker_pids().len(), 2);
}

#[test]
fn connections_queue_in_the_kernel_while_no_worker_is_alive() {
    // The only worker is killed, and its replacement takes 2 s to boot:
    // connections made meanwhile find no worker at all. They wait in the
    // listen queue the master owns and are served by the replacement.
    let slow = SlowRespawn::new("no-worker", Duration::from_secs(2));
    let server = Server::start(&["--workers", "1", "--", slow.program.to_str().unwrap()]);
    let pid = server.worker_pids()[0];
    slow.arm();
    kill(pid, libc::SIGKILL);
    let killed_at = std::time::Instant::now();
    let clients: Vec<_> = (0..5)
        .map(|_| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
                Reader::new(s).response(false).map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()))
            })
        })
        .collect();
    for c in clients {
        let (status, body) = c.join().unwrap().unwrap();
        assert_eq!(status, 200);
        let by: i32 = body.trim().strip_prefix("ok ").and_then(|p| p.parse().ok()).expect("faults names its pid");
        assert!(by != pid && server.worker_pids().contains(&by), "served by the replacement, not {by}");
    }
    assert!(killed_at.elapsed() >= Duration::from_millis(1900), "they waited for the replacement to boot");
}

#[test]
fn sighup_reloads_under_load_with_zero_failures() {
    let faults = faults();
    let server = Server::start(&["--workers", "2", "--", &faults]);
    let before = server.worker_pids();
    let load = Load::start(server.addr, 8, "/");
    std::thread::sleep(Duration::from_millis(300));
    server.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || server.stderr().contains("reload complete")),
        "reload did not complete; stderr:\n{}",
        server.stderr()
    );
    // Let the retired workers finish (idle grace) under continued load.
    assert!(wait_until(Duration::from_secs(10), || before.iter().all(|p| !alive(*p))), "old workers still alive");
    std::thread::sleep(Duration::from_millis(300));
    let report = load.finish();
    assert!(report.failures.is_empty(), "failed requests during reload: {:?}", report.failures);
    assert_eq!(report.non_2xx, 0);
    assert!(report.ok > 100);
    let after = server.worker_pids();
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|p| !before.contains(p)), "every worker replaced: {before:?} -> {after:?}");
    assert!(after.iter().any(|p| report.pids.contains(p)), "new workers served the load");
}

#[test]
fn sighup_reload_under_wrk_has_no_errors() {
    require_tool("wrk", "wrk");
    let server = Server::start(&["--workers", "2"]);
    let url = server.url("/");
    let wrk = std::thread::spawn(move || {
        std::process::Command::new("wrk").args(["-t2", "-c32", "-d4s", &url]).output().unwrap()
    });
    std::thread::sleep(Duration::from_millis(1000));
    server.signal(libc::SIGHUP);
    let out = wrk.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(wait_until(Duration::from_secs(10), || server.stderr().contains("reload complete")), "{}", server.stderr());
    assert!(text.contains("Requests/sec"), "{text}");
    assert!(!text.contains("Socket errors"), "wrk saw socket errors during the reload:\n{text}");
    assert!(!text.contains("Non-2xx"), "wrk saw non-2xx responses during the reload:\n{text}");
}

#[test]
fn a_reload_that_cannot_boot_rolls_back_and_the_program_is_reread() {
    let dir = temp_path("reload");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("worker.sh");
    let good = format!("#!/bin/sh\nexec {} \"$@\"\n", faults());
    let install = |text: &str| install_script(&script, text);
    install(&good);
    let server = Server::start(&["--workers", "2", "--", script.to_str().unwrap()]);
    let before = server.worker_pids();

    // A broken program on disk: the reload fails, the old workers serve on.
    install("#!/bin/sh\nexit 3\n");
    server.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || server.stderr().contains("rolled back")), "{}", server.stderr());
    assert_eq!(server.worker_pids(), before, "old workers keep serving after a failed reload");
    assert_eq!(get(&server, "/").status, 200);

    // Fixed on disk: the next reload picks it up.
    install(&good);
    server.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || server.stderr().contains("reload complete")), "{}", server.stderr());
    assert!(wait_until(Duration::from_secs(10), || before.iter().all(|p| !alive(*p))));
    let after = server.worker_pids();
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|p| !before.contains(p)));
}

/// A reload whose program has vanished cannot even spawn the replacement.
/// The old worker keeps its slot, and the slot stays an ordinary one: not
/// halted (its worker is respawned if it dies later) and not waiting for a
/// respawn (which would keep the master on its short tick for good).
#[test]
fn a_reload_whose_program_is_gone_leaves_the_slot_as_it_was() {
    let dir = temp_path("vanishing");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("worker.sh");
    let install = || install_script(&script, &format!("#!/bin/sh\nexec {} \"$@\"\n", faults()));
    install();
    let server = Server::start(&["--workers", "1", "--", script.to_str().unwrap()]);
    let old = server.worker_pids()[0];
    std::fs::remove_file(&script).unwrap();
    server.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || server.stderr().contains("rolled back")), "{}", server.stderr());
    assert!(server.stderr().contains("could not be spawned"), "{}", server.stderr());
    assert_eq!(get(&server, "/").status, 200);
    // Settled: the 500 ms tick and the heartbeats, about 4 wake-ups a
    // second, not the 20 of a master waiting to respawn.
    std::thread::sleep(Duration::from_millis(700));
    let before = context_switches(server.pid());
    std::thread::sleep(Duration::from_secs(3));
    let per_second = (context_switches(server.pid()) - before) as f64 / 3.0;
    assert!(per_second < 10.0, "the master woke {per_second:.0} times a second after the failed reload");
    // The program is back and the old worker dies: its slot is respawned.
    install();
    kill(old, libc::SIGKILL);
    assert!(
        wait_until(Duration::from_secs(10), || server
            .worker_pids()
            .iter()
            .any(|&p| p != old && server.ready_logged(p))),
        "{}",
        server.stderr()
    );
    assert_eq!(get(&server, "/").status, 200);
}

#[test]
fn sigterm_finishes_a_slow_in_flight_request() {
    let faults = faults();
    let mut server = Server::start(&["--workers", "1", "--", &faults]);
    let mut slow = Reader::new(server.connect());
    slow.get_mut().write_all(b"GET /sleep?1500 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let stop_at = Instant::now();
    server.signal(libc::SIGTERM);
    let resp = slow.response(false).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), Some("close"), "the in-flight response announces the close");
    assert!(slow.at_eof());
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(stop_at.elapsed() >= Duration::from_millis(1000), "the stop waited for the request");
}

/// A graceful stop closes the listening sockets at once: new clients are
/// refused (and can go elsewhere) instead of queueing in a backlog nobody
/// accepts from, while the request in flight still finishes.
#[test]
fn sigterm_refuses_new_connections_while_in_flight_requests_finish() {
    let faults = faults();
    let mut server = Server::start(&["--workers", "2", "--", &faults]);
    let mut slow = Reader::new(server.connect());
    slow.get_mut().write_all(b"GET /sleep?5000 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    server.signal(libc::SIGTERM);
    let addr = server.addr;
    let refused = wait_until(Duration::from_secs(3), || {
        std::net::TcpStream::connect(addr).is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
    });
    assert!(refused, "new connections are refused during the drain");
    // Refused while the server still runs: the request has seconds to go.
    assert!(alive(server.pid()), "refused only because the server had exited");
    let resp = slow.response(false).unwrap();
    assert_eq!((resp.status, resp.header("connection")), (200, Some("close")));
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn sigterm_to_a_worker_drains_it_and_it_is_replaced() {
    let faults = faults();
    let server = Server::start(&["--workers", "1", "--", &faults]);
    let worker = server.worker_pids()[0];
    let mut slow = Reader::new(server.connect());
    slow.get_mut().write_all(b"GET /sleep?800 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // As systemd's default KillMode does: the signal goes to the worker.
    kill(worker, libc::SIGTERM);
    let resp = slow.response(false).unwrap();
    assert_eq!(resp.status, 200, "the in-flight request completed");
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(wait_until(Duration::from_secs(5), || !alive(worker)));
    let reaped = format!("worker 0 (pid {worker}) exited cleanly");
    assert!(wait_until(Duration::from_secs(5), || server.stderr().contains(&reaped)), "{}", server.stderr());
    assert!(wait_until(Duration::from_secs(5), || server.worker_pids().len() == 1 && server.worker_pids()[0] != worker));
}

#[test]
fn master_signals_sent_to_the_whole_group_do_not_hurt_workers() {
    let server = Server::start(&["--workers", "2"]);
    let workers = server.worker_pids();
    for pid in &workers {
        kill(*pid, libc::SIGTTIN);
        kill(*pid, libc::SIGHUP);
        kill(*pid, libc::SIGUSR1);
        kill(*pid, libc::SIGTTOU);
    }
    std::thread::sleep(Duration::from_millis(300));
    for pid in &workers {
        assert!(alive(*pid), "worker {pid} survived master-only signals");
        assert!(!stopped(*pid), "worker {pid} was stopped by SIGTTIN/SIGTTOU's default action");
    }
    assert_eq!(get(&server, "/").status, 200);
}

#[test]
fn graceful_timeout_bounds_the_stop() {
    let faults = faults();
    let mut server = Server::start(&["--workers", "1", "--graceful-timeout", "1s", "--", &faults]);
    let worker = server.worker_pids()[0];
    let mut slow = server.connect();
    slow.write_all(b"GET /sleep?30000 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(t.elapsed() < Duration::from_secs(5), "stopped after {:?}", t.elapsed());
    assert!(!alive(worker));
}

#[test]
fn a_hung_worker_is_killed_and_replaced() {
    let faults = faults();
    let server = Server::start(&["--workers", "1", "--worker-timeout", "2s", "--", &faults]);
    let hung = server.worker_pids()[0];
    let mut s = server.connect();
    s.write_all(b"GET /block?60000 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let t = Instant::now();
    let mut replacement = None;
    assert!(
        wait_until(Duration::from_secs(15), || {
            replacement = server.worker_pids().into_iter().find(|p| *p != hung);
            replacement.is_some_and(|p| server.ready_logged(p))
        }),
        "{}",
        server.stderr()
    );
    eprintln!("hung worker replaced after {:?}", t.elapsed());
    assert!(!alive(hung));
    let log = server.stderr();
    assert!(log.contains(&format!("worker 0 (pid {hung}) sent no heartbeat")), "{log}");
    assert!(log.contains("connections open"), "{log}");
    assert_eq!(get(&server, "/").status, 200);
}

#[test]
fn workers_that_cannot_boot_stop_the_respawn_loop() {
    let mut cmd = std::process::Command::new(bin("http-cluster"));
    // fd 3 closed before exec: the worker cannot take the socket.
    let hello = bin("hello");
    let program = format!("exec 3<&-; exec {}", hello.display());
    cmd.args(["--bind", "127.0.0.1:0", "--workers", "2", "--control-socket", "none", "--", "/bin/sh", "-c", &program]);
    let (status, err) = master_exit(&mut cmd, Duration::from_secs(10));
    assert!(!status.success(), "{err}");
    assert!(err.contains("fd 3 is not open"), "{err}");
    assert!(err.contains("failed to boot (exit code 3)"), "{err}");
    assert!(err.contains("no worker could boot"), "{err}");
    assert_eq!(err.matches("spawned").count(), 2, "each slot tried once, no respawn loop:\n{err}");
}

#[test]
fn settings_out_of_their_bounds_are_refused_at_start() {
    for (flag, value, why) in [
        ("--worker-timeout", "1s", "at least 2s"),
        ("--max-headers", "300", "300"),
        ("--max-head-bytes", "2000000", "2000000"),
        ("--head-timeout", "2y", "2y"),
        ("--defer-accept", "61s", "at most 60s"),
    ] {
        let (status, err) = master_exit(
            std::process::Command::new(bin("http-cluster")).args([
                "--bind",
                "127.0.0.1:0",
                "--workers",
                "1",
                "--control-socket",
                "none",
                flag,
                value,
            ]),
            Duration::from_secs(10),
        );
        assert_eq!(status.code(), Some(2), "a usage error: {err}");
        assert!(err.contains(flag) && err.contains(why), "{err}");
        assert!(!err.contains("spawned"), "no worker started: {err}");
    }
}

/// A worker program that cannot even be started (missing, or not
/// executable) halts its slots like one that cannot boot: the master
/// exits non-zero instead of retrying forever.
#[test]
fn a_worker_program_that_cannot_be_spawned_stops_the_master() {
    let dir = temp_path("spawn");
    std::fs::create_dir_all(&dir).unwrap();
    let not_executable = dir.join("worker");
    std::fs::write(&not_executable, "not a program").unwrap();
    for program in [dir.join("missing"), not_executable] {
        let (status, err) = master_exit(
            std::process::Command::new(bin("http-cluster"))
                .args(["--bind", "127.0.0.1:0", "--workers", "2", "--control-socket", "none", "--"])
                .arg(&program),
            Duration::from_secs(10),
        );
        assert!(!status.success(), "{err}");
        assert!(err.contains("cannot spawn"), "{err}");
        assert!(err.contains("no worker could boot"), "{err}");
    }
}

#[test]
fn a_crash_looping_worker_backs_off() {
    let mut server = Server::start(&["--workers", "1", "--", &faults()]);
    // Crash the worker repeatedly: each replacement is delayed a bit more.
    for _ in 0..4 {
        let pid = server.worker_pids()[0];
        let _ = exchange_raw(&server, b"GET /exit HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(wait_until(Duration::from_secs(10), || server
            .worker_pids()
            .first()
            .is_some_and(|p| *p != pid && server.ready_logged(*p))));
    }
    let log = server.stderr();
    assert!(log.contains("respawning in 0ns"), "{log}");
    assert!(log.contains("respawning in 100ms"), "{log}");
    assert!(log.contains("respawning in 200ms"), "{log}");
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn ttin_and_ttou_scale_the_cluster() {
    let server = Server::start(&["--workers", "2", "--", &faults()]);
    let first = server.worker_pids();
    server.signal(libc::SIGTTIN);
    assert!(wait_until(Duration::from_secs(5), || server.worker_pids().len() == 3
        && server.stderr().matches(") ready").count() == 3));
    let three = server.worker_pids();
    // SIGTTOU removes the last slot: the worker SIGTTIN added. Give it a
    // request in flight first, on a connection it serves.
    let added = *three.iter().find(|p| !first.contains(p)).unwrap();
    let mut slow = (0..100)
        .map(|_| {
            let mut r = Reader::new(server.connect());
            r.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
            let body = String::from_utf8(r.response(false).unwrap().body).unwrap();
            (r, body)
        })
        .find(|(_, body)| body.trim() == format!("ok {added}"))
        .map(|(r, _)| r)
        .expect("a connection reaches the added worker");
    slow.get_mut().write_all(b"GET /sleep?2000 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    server.signal(libc::SIGTTOU);
    assert!(wait_until(Duration::from_secs(5), || server.draining_logged(added)), "{}", server.stderr());
    assert!(alive(added), "it drains before it goes");
    let done = slow.response(false).unwrap();
    assert_eq!((done.status, done.header("connection")), (200, Some("close")), "its in-flight request completes");
    assert!(wait_until(Duration::from_secs(10), || server.worker_pids().len() == 2), "{}", server.stderr());
    let (mut now, mut first) = (server.worker_pids(), first);
    now.sort();
    first.sort();
    assert_eq!(now, first, "the first two workers serve on");
    assert!(server.stderr().contains("scaling down to 2 workers"));
    assert_eq!(get(&server, "/").status, 200);
}

#[test]
fn max_requests_recycles_workers_without_failures() {
    let faults = faults();
    let server =
        Server::start(&["--workers", "2", "--max-requests", "200", "--max-requests-jitter", "50", "--", &faults]);
    let before = server.worker_pids();
    let load = Load::start(server.addr, 4, "/");
    assert!(
        wait_until(Duration::from_secs(20), || before.iter().all(|p| !alive(*p))),
        "workers were not recycled: {}",
        server.stderr()
    );
    let report = load.finish();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.non_2xx, 0);
    assert!(server.stderr().contains("max-requests reached"));
}

#[test]
fn max_worker_memory_recycles_workers() {
    let faults = faults();
    // Any worker exceeds one byte: recycled about once a second.
    let server = Server::start(&["--workers", "1", "--max-worker-memory", "1", "--", &faults]);
    let first = server.worker_pids()[0];
    assert!(wait_until(Duration::from_secs(10), || !alive(first)), "{}", server.stderr());
    assert!(server.stderr().contains("max-worker-memory exceeded"));
    let mut r = Reader::new(server.connect());
    r.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(r.response(false).unwrap().status, 200);
}

#[test]
fn workers_exit_when_the_master_dies() {
    let server = Server::start(&["--workers", "2"]);
    let workers = server.worker_pids();
    kill(server.pid(), libc::SIGKILL);
    assert!(wait_until(Duration::from_secs(5), || workers.iter().all(|p| !alive(*p))), "orphaned workers kept running");
}

/// An orphaned worker finishes what it can, but no longer than the
/// master's graceful timeout: with the master gone nobody else stops it,
/// and an endless response would keep it alive for good.
#[test]
fn an_orphaned_worker_drains_no_longer_than_the_graceful_timeout() {
    let faults = faults();
    let server = Server::start(&["--workers", "1", "--graceful-timeout", "2s", "--", &faults]);
    let worker = server.worker_pids()[0];
    let mut slow = server.connect();
    slow.write_all(b"GET /sleep?60000 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    kill(server.pid(), libc::SIGKILL);
    let t = Instant::now();
    assert!(wait_until(Duration::from_secs(15), || !alive(worker)), "the orphaned worker kept draining");
    assert!(t.elapsed() >= Duration::from_millis(1500), "it drained first: {:?}", t.elapsed());
}

/// The accept loop starts each new connection at once, and may's accept
/// only parks once the queue is empty: under a flood of new connections it
/// must still pause now and then, or an open connection (and the worker's
/// heartbeat) would wait for the flood to end. 32 clients each open a
/// connection for one slow request (2 ms of blocked thread), so the queue is
/// never empty while they run.
#[test]
fn a_flood_of_new_connections_does_not_starve_an_open_one() {
    let faults = faults();
    let server = Server::start(&["--workers", "1", "--", &faults]);
    let mut open = Reader::new(server.connect());
    open.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(open.response(false).unwrap().status, 200);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addr = server.addr;
    let flood: Vec<_> = (0..32)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut served = 0u32;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let _ = s.write_all(b"GET /block?2 HTTP/1.1\r\nHost: f\r\nConnection: close\r\n\r\n");
                    let mut sink = Vec::new();
                    let _ = std::io::Read::read_to_end(&mut s, &mut sink);
                    served += u32::from(sink.starts_with(b"HTTP/1.1 200"));
                }
                served
            })
        })
        .collect();
    // Let the queue fill up, then ask on the open connection.
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    open.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    open.get_mut().set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let answer = open.response(false);
    let waited = asked.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let served: u32 = flood.into_iter().map(|t| t.join().unwrap()).sum();
    eprintln!("open connection answered after {waited:?}; flood served {served}");
    assert_eq!(answer.expect("the open connection was answered during the flood").status, 200);
    assert!(served > 100, "the flood itself was served: {served}");
}
