//! `--balance reuseport`: one SO_REUSEPORT socket per worker slot, kept by
//! the master for its whole life; a slot without a ready worker still has
//! its queue served (the master accepts and passes connections on).

mod util;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::time::Duration;

use util::*;

fn listening_set(port: u16) -> BTreeSet<String> {
    listening_inodes(port).into_iter().collect()
}

fn sockets_of(pid: i32) -> BTreeSet<String> {
    socket_inodes_of(pid).into_iter().collect()
}

/// `n` requests, each on a new connection; which worker pid answered.
fn served_by(server: &Server, n: usize) -> HashMap<i32, usize> {
    let mut by = HashMap::new();
    for _ in 0..n {
        let mut r = Reader::new(server.connect());
        r.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
        let resp = r.response(false).expect("every connection is served");
        assert_eq!(resp.status, 200);
        let pid: i32 = String::from_utf8(resp.body).unwrap().trim().strip_prefix("ok ").unwrap().parse().unwrap();
        *by.entry(pid).or_default() += 1;
    }
    by
}

fn start(workers: &str) -> Server {
    Server::start(&["--workers", workers, "--balance", "reuseport", "--", bin("faults").to_str().unwrap()])
}

#[test]
fn each_slot_has_its_own_socket_and_gets_a_share() {
    let server = start("3");
    let inodes = listening_set(server.addr.port());
    assert_eq!(inodes.len(), 3, "one SO_REUSEPORT socket per slot");
    assert!(inodes.is_subset(&sockets_of(server.pid())), "the master keeps every slot's socket");
    let mut seen = BTreeSet::new();
    for pid in server.worker_pids() {
        let own: BTreeSet<_> = sockets_of(pid).intersection(&inodes).cloned().collect();
        assert_eq!(own.len(), 1, "worker {pid} holds exactly its slot's socket");
        seen.extend(own);
    }
    assert_eq!(seen, inodes);
    let by = served_by(&server, 300);
    assert_eq!(by.len(), 3, "{by:?}");
    assert!(by.values().all(|&n| n >= 40), "the kernel spreads new connections over the slots: {by:?}");
}

/// The pid of the worker serving `slot`, from `http-cluster status`.
fn slot_pid(server: &Server, slot: u64) -> i32 {
    let status = status_json(server);
    let workers = status["workers"].as_array().expect("workers");
    let worker = workers.iter().find(|w| w["slot"].as_u64() == Some(slot)).expect("a worker in the slot");
    worker["pid"].as_i64().unwrap() as i32
}

/// Each of `n` clients on its own thread sends one request on a new
/// connection; they wait for their answers for up to 15 s.
fn clients(server: &Server, n: usize) -> Vec<std::thread::JoinHandle<std::io::Result<Resp>>> {
    (0..n)
        .map(|_| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let s = std::net::TcpStream::connect(addr)?;
                s.set_read_timeout(Some(Duration::from_secs(15)))?;
                let mut r = Reader::new(s);
                r.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")?;
                r.response(false)
            })
        })
        .collect()
}

/// Which pid served a `faults` worker's "ok PID" answer.
fn pid_of(resp: &Resp) -> i32 {
    String::from_utf8_lossy(&resp.body).trim().strip_prefix("ok ").and_then(|p| p.parse().ok()).unwrap_or(0)
}

#[test]
fn a_removed_slot_keeps_its_queue_served_gets_no_new_connections_and_a_new_worker_takes_it_back() {
    let server = start("2");
    let inodes = listening_set(server.addr.port());
    // Each worker's own listening socket, by pid: the removed worker's is
    // the removed slot's.
    let own = |pid: i32| -> BTreeSet<String> { sockets_of(pid).intersection(&inodes).cloned().collect() };
    // SIGTTOU removes the last slot.
    let (kept, removed) = (slot_pid(&server, 0), slot_pid(&server, 1));
    let (kept_socket, removed_socket) = (own(kept), own(removed));
    assert!(kept_socket.len() == 1 && removed_socket.len() == 1 && kept_socket != removed_socket);
    // With slot 1's worker stopped, the connections the kernel gives slot
    // 1's socket wait in its queue...
    // SAFETY: kill(2) on a worker of the server this test started.
    unsafe { libc::kill(removed, libc::SIGSTOP) };
    assert!(wait_until(Duration::from_secs(5), || all_threads_stopped(removed)));
    let queued = clients(&server, 20);
    std::thread::sleep(Duration::from_millis(300));
    // ...and when the slot is removed, the master serves that queue
    // through slot 0's worker, while slot 1's is still stopped.
    server.signal(libc::SIGTTOU);
    for c in queued {
        let resp = c.join().unwrap().expect("every queued connection is served");
        assert_eq!((resp.status, pid_of(&resp)), (200, kept));
    }
    // SAFETY: as above.
    unsafe { libc::kill(removed, libc::SIGCONT) };
    assert!(wait_until(Duration::from_secs(10), || server.worker_pids() == vec![kept]));
    assert_eq!(listening_set(server.addr.port()), inodes, "the socket and its queue survive the slot");
    // New connections no longer go to the removed slot's socket, where only
    // the master would take them: they are served with the master stopped.
    server.signal(libc::SIGSTOP);
    assert!(wait_until(Duration::from_secs(5), || all_threads_stopped(server.pid())));
    let by = served_by(&server, 40);
    server.signal(libc::SIGCONT);
    assert_eq!(by.get(&kept), Some(&40), "{by:?}");

    server.signal(libc::SIGTTIN);
    assert!(wait_until(Duration::from_secs(10), || server.worker_pids().len() == 2));
    // Forked is not ready: until it is, the master serves slot 1's queue
    // through worker 0.
    let new = server.worker_pids().into_iter().find(|&p| p != kept).unwrap();
    assert!(wait_until(Duration::from_secs(10), || server.ready_logged(new)));
    assert_eq!(own(new), removed_socket, "the removed slot's new worker got that slot's socket");
    assert_eq!(own(kept), kept_socket, "the remaining worker kept its own");
    // And the kernel spreads new connections over both sockets again.
    let by = served_by(&server, 100);
    assert_eq!(by.len(), 2, "the new worker of slot 1 serves its socket: {by:?}");
}

#[test]
fn a_slot_sigttin_adds_gets_new_connections_once_its_worker_is_ready() {
    // The added slot's worker takes 4 s to boot. Until it is ready its new
    // socket gets no new connections: they are served by slot 0's worker
    // at once, even with the master stopped (nobody to pass them on).
    let slow = SlowRespawn::new("added-slot", Duration::from_secs(4));
    let server = Server::start(&["--workers", "1", "--balance", "reuseport", "--", slow.program.to_str().unwrap()]);
    let first = server.worker_pids()[0];
    slow.arm();
    server.signal(libc::SIGTTIN);
    assert!(wait_until(Duration::from_secs(5), || server.worker_pids().len() == 2));
    assert_eq!(listening_set(server.addr.port()).len(), 2, "slot 1's socket is open");
    std::thread::sleep(Duration::from_millis(300));
    server.signal(libc::SIGSTOP);
    assert!(wait_until(Duration::from_secs(5), || all_threads_stopped(server.pid())));
    let started = std::time::Instant::now();
    let by = served_by(&server, 40);
    server.signal(libc::SIGCONT);
    assert_eq!(by.get(&first), Some(&40), "{by:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    // Ready, it gets its share.
    let added = server.worker_pids().into_iter().find(|&p| p != first).unwrap();
    assert!(wait_until(Duration::from_secs(15), || server.ready_logged(added)));
    std::thread::sleep(Duration::from_millis(300));
    let by = served_by(&server, 100);
    assert!(by.get(&added).is_some_and(|&n| n >= 20), "{by:?}");
}

#[test]
fn a_master_with_a_removed_slots_socket_still_sleeps_when_idle() {
    // The removed slot's socket stays in the group for good, so the master
    // keeps serving its queue for good. It polls that socket, and would
    // wake if a connection arrived there: nothing about it needs the 50 ms
    // tick of a master with work in progress (20 wake-ups a second).
    // Settled, it wakes on its 500 ms tick and the worker's heartbeats:
    // about 4.
    let server = start("2");
    server.signal(libc::SIGTTOU);
    assert!(wait_until(Duration::from_secs(10), || server.worker_pids().len() == 1));
    assert_eq!(served_by(&server, 20).values().sum::<usize>(), 20);
    std::thread::sleep(Duration::from_millis(700));
    let before = context_switches(server.pid());
    std::thread::sleep(Duration::from_secs(3));
    let per_second = (context_switches(server.pid()) - before) as f64 / 3.0;
    assert!(per_second < 10.0, "an idle master woke {per_second:.0} times a second");
    assert_eq!(served_by(&server, 20).values().sum::<usize>(), 20);
}

#[test]
fn connections_to_a_killed_workers_socket_are_all_served() {
    // The victim's replacement takes 5 s to boot: meanwhile its slot's
    // socket still receives its share of new connections, and only the
    // master, passing them on, gets them to the surviving worker.
    let slow = SlowRespawn::new("killed-slot", Duration::from_secs(5));
    let server = Server::start(&["--workers", "2", "--balance", "reuseport", "--", slow.program.to_str().unwrap()]);
    let (victim, survivor) = (server.worker_pids()[0], server.worker_pids()[1]);
    slow.arm();
    // SAFETY: kill(2) on a worker of the server this test started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let started = std::time::Instant::now();
    let by = served_by(&server, 40);
    assert!(started.elapsed() < Duration::from_secs(4), "served before the replacement could boot");
    assert_eq!(by.get(&survivor), Some(&40), "all by the surviving worker: {by:?}");
    assert!(wait_until(Duration::from_secs(15), || server.worker_pids().len() == 2
        && server.worker_pids().iter().all(|&p| server.ready_logged(p))));
}

#[test]
fn a_stalled_workers_queue_is_served_by_the_others() {
    let server = start("2");
    // One worker blocks its thread for 20 s (a handler calling a blocking
    // API): its heartbeats stop. New connections hashed to its socket must
    // not wait for it: the master notices the silence after 1.5 s.
    let mut blocker = server.connect();
    blocker.write_all(b"GET /block?20000 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..40 {
        let t = std::time::Instant::now();
        let by = served_by(&server, 1);
        assert_eq!(by.values().sum::<usize>(), 1);
        slowest = slowest.max(t.elapsed());
    }
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    assert!(slowest < Duration::from_secs(8), "a connection waited {slowest:?} for the stalled worker");
}

#[test]
fn a_worker_that_drains_on_its_own_is_replaced_and_gets_no_more_connections() {
    let server = start("2");
    let victim = server.worker_pids()[0];
    // A long request keeps the victim draining for 8 s after its SIGTERM:
    // find a keep-alive connection the victim serves, and send it there.
    let mut slow = None;
    for _ in 0..40 {
        let mut r = Reader::new(server.connect());
        r.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let body = String::from_utf8(r.response(false).unwrap().body).unwrap();
        if body.trim() == format!("ok {victim}") {
            r.get_mut().write_all(b"GET /sleep?8000 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
            slow = Some(r);
            break;
        }
    }
    let mut slow = slow.expect("some connection reaches the victim's socket");
    // SAFETY: kill(2) on a worker of the server this test started.
    unsafe { libc::kill(victim, libc::SIGTERM) };
    // The master hears "draining", starts a replacement at once, and passes
    // the draining worker nothing: every new connection is served by
    // someone else, while it is still alive.
    assert!(wait_until(Duration::from_secs(5), || server.stderr().contains("drains on its own")));
    // It tells the master before it stops accepting; its own log line
    // comes after.
    assert!(wait_until(Duration::from_secs(5), || server.draining_logged(victim)));
    let by = served_by(&server, 60);
    assert_eq!(by.values().sum::<usize>(), 60);
    assert!(!by.contains_key(&victim), "{by:?}");
    assert!(alive(victim), "still draining its slow request");
    let done = slow.response(false).unwrap();
    assert_eq!((done.status, done.header("connection")), (200, Some("close")), "its in-flight request completes");
    assert!(wait_until(Duration::from_secs(10), || !alive(victim) && server.worker_pids().len() == 2));
}

#[test]
fn connections_passed_to_a_worker_that_dies_before_taking_them_are_passed_again() {
    // Slot 1's worker is killed and its replacement takes 30 s to boot:
    // meanwhile the master passes what reaches slot 1's socket to slot 0's
    // worker.
    let slow = SlowRespawn::new("passed-again", Duration::from_secs(30));
    let server = Server::start(&["--workers", "2", "--balance", "reuseport", "--", slow.program.to_str().unwrap()]);
    let (only, victim) = (slot_pid(&server, 0), slot_pid(&server, 1));
    slow.arm_once();
    // SAFETY: kill(2) on a worker of the server this test started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    // The replacement has begun its wait when the marker is gone; the
    // next one (slot 0's, below) boots at once.
    assert!(wait_until(Duration::from_secs(10), || !slow.marker.exists()));
    // Stopped, slot 0's worker still looks healthy for a moment: the master
    // passes it slot 1's connections, which sit unread in its channel.
    // SAFETY: as above.
    unsafe { libc::kill(only, libc::SIGSTOP) };
    // Each of its threads stops on its way back to user space: one already
    // inside accept(2) would still take a connection, which is then the
    // worker's own and dies with it, as with any server (seen here under
    // load: `perf` caught a worker thread's accept returning 8 µs after the
    // stop reached the main thread, and the kill reset that connection).
    assert!(wait_until(Duration::from_secs(5), || all_threads_stopped(only)));
    let waiting = clients(&server, 20);
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: as above.
    unsafe { libc::kill(only, libc::SIGKILL) };
    // Every connection is served by slot 0's replacement, long before slot
    // 1's boots: those queued in slot 0's socket, and those the dead worker
    // never took, passed again.
    for c in waiting {
        let resp = c.join().unwrap().expect("served");
        assert_eq!(resp.status, 200);
        assert!(![only, victim, 0].contains(&pid_of(&resp)), "served by {}", pid_of(&resp));
    }
    let log = server.stderr();
    assert!(log.contains(&format!("(pid {only}) died before taking")), "nothing was passed again:\n{log}");
}
