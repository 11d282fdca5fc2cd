//! A worker process: takes the listening socket from fd 3, runs one may
//! coroutine per connection, reports to the master over the same fd, and
//! drains when told to stop or when the master disappears.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use may::coroutine;
use may::io::WaitIoWaker;
use may::sync::Semphore;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::alarm;
use crate::clock::Moment;
use crate::config::Limits;
use crate::conn::{self, App, ServerState};
use crate::control::{self, LineBuffer, MasterMsg, WorkerMsg};
use crate::fdpass;
use crate::logging::RepeatedWarning;
use crate::net::{Family, FirstRead, Listener, ListenerError, Stream};
use crate::park::{Parked, ParkingLot};
use crate::pool::{Pool, Spawn};

/// The descriptor number the master puts the channel on (as libuv's
/// `stdio = {0, 1, 2, pipe}` does).
pub const CHANNEL_FD: i32 = 3;

/// The master's `--graceful-timeout`, passed to its workers: a worker whose
/// master is gone drains for at most this long (nobody else would stop it).
pub const GRACEFUL_TIMEOUT_ENV: &str = "HTTP_CLUSTER_WORKER_GRACEFUL_TIMEOUT";

/// How long a worker whose master died may drain: the master's
/// `--graceful-timeout` when it passed one, else 30 s like its default.
fn orphan_drain_limit() -> Duration {
    std::env::var(GRACEFUL_TIMEOUT_ENV)
        .ok()
        .and_then(|v| crate::config::parse_duration(&v).ok())
        .unwrap_or(Duration::from_secs(30))
}

/// How many listening sockets the master sends over the channel (one per
/// `--bind`), set in the worker's environment.
pub const LISTENERS_ENV: &str = "HTTP_CLUSTER_LISTENERS";

/// Why a worker stops serving new connections and drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// The master sent `stop` (shutdown, reload, recycling, SIGTTOU).
    Asked,
    /// SIGTERM reached the worker itself.
    Sigterm,
    /// The channel closed: the master died.
    MasterGone,
    /// Reading or writing the channel failed.
    ChannelFailed,
    /// The master sent a line too long to be one of its messages.
    Garbage,
}

impl StopReason {
    /// Nobody bounds this drain but the worker (see [`orphan_drain_limit`]).
    fn orphaned(self) -> bool {
        matches!(self, StopReason::MasterGone | StopReason::ChannelFailed)
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::Asked => "master asked to stop",
            StopReason::Sigterm => "SIGTERM",
            StopReason::MasterGone => "master closed the channel",
            StopReason::ChannelFailed => "channel failed",
            StopReason::Garbage => "garbage on the channel",
        })
    }
}

/// More listeners than this is a configuration error, not a server.
const MAX_LISTENERS: usize = 64;

/// Coroutine stack size, in machine words (may's unit): 64 KiB. Handlers
/// run on this stack, so it must hold the head parser's header slots (up to
/// 8 KiB) plus real handler code (serde, formatting) with margin. Stacks are
/// lazily mapped, so idle connections only pay for the pages they touched.
pub const STACK_WORDS: usize = 64 * 1024 / std::mem::size_of::<usize>();

/// may worker threads per process: one. Parallelism comes from one process
/// per core; a second scheduler thread in each process would only add
/// cross-core wakeups and lock traffic.
pub const MAY_THREADS: usize = 1;

/// Longest may's event loop sleeps when no I/O deadline of its own is due
/// (may's default: 10 ms, so an idle worker woke 100 times a second). Work
/// never waits for this poll: a socket's readiness ends the `epoll_wait`,
/// a coroutine scheduled from another thread (the timer thread, the
/// parking lot, the channel, the heartbeat's liveness probe) writes may's
/// wake-up eventfd, and a new I/O timeout that falls before the current
/// wait's end does the same. The poll only frees the records of closed
/// sockets that may defers to the next loop turn, and for that a second is
/// soon enough.
pub const IDLE_POLL: Duration = Duration::from_secs(1);

/// Finished coroutines may keeps for reuse (may's default: 1000, created
/// up front). A pooled coroutine keeps the stack pages it touched. Most
/// reuse happens in our own pool (below); may's takes the overflow.
pub const COROUTINE_POOL: usize = 128;

/// Connection coroutines kept idle for the next connection (see `pool`);
/// past this, a coroutine that finishes its connection ends. Each keeps
/// the stack pages it touched (up to some 30 KiB); with may's pool that
/// is at most a few MiB per worker after a burst (`scripts/idle-conns`:
/// 1.41 KiB per idle connection with 128 of each; 2.05 with 256 of
/// each; 1.24 before our pool, with 256 in may's).
/// Reuse only matters for connections that come and go faster than this
/// many at a time; idle ones park without a coroutine anyway.
pub const IDLE_CONN_COROUTINES: usize = 128;

/// What a connection coroutine is given to serve.
enum Job {
    /// A connection just accepted (here or by the master), counted since.
    Accepted { stream: Stream, peer: Option<SocketAddr>, first_read: FirstRead, admission: conn::Admission },
    /// A parked connection whose next request arrived (or that closed).
    Resumed(Parked),
}

type Connections = Arc<Pool<Job>>;

/// The pool that serves this worker's connections with `app`.
fn connection_pool(app: Arc<dyn App>, limits: Arc<Limits>) -> Connections {
    Pool::new(IDLE_CONN_COROUTINES, move |job| match job {
        Job::Accepted { stream, peer, first_read, admission } => {
            conn::serve(stream, peer, first_read, &*app, &limits, admission)
        }
        Job::Resumed(parked) => conn::resume(parked, &*app, &limits),
    })
}

/// Why a worker could not start.
#[derive(Debug)]
pub enum BootError {
    NoChannel,
    Receive(fdpass::RecvFdError),
    NotAListener(ListenerError),
    ListenerCount(String),
    AccessLog(String, io::Error),
    Config(clap::Error),
    Io(io::Error),
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::NoChannel => {
                write!(f, "fd {CHANNEL_FD} is not open: start workers through the http-cluster master")
            }
            BootError::Receive(e) => write!(f, "taking the listening socket from fd {CHANNEL_FD}: {e}"),
            BootError::NotAListener(why) => write!(f, "a socket from fd {CHANNEL_FD} is not usable: {why}"),
            BootError::ListenerCount(v) => write!(f, "{LISTENERS_ENV}={v:?}: expected 1 to {MAX_LISTENERS}"),
            BootError::AccessLog(path, e) => write!(f, "cannot open the access log {path}: {e}"),
            BootError::Config(e) => write!(f, "invalid HTTP_CLUSTER_* setting: {e}"),
            BootError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Runs `app` as a worker process of the cluster; never returns. Exits 0
/// after a drain, [`control::EXIT_BOOT_ERROR`] if it cannot start.
pub fn run(app: impl App) -> ! {
    crate::logging::init("worker", None);
    // Claim fd 3 before this process opens anything: a new descriptor takes
    // the lowest free number, and must never pass for the channel.
    let channel = fdpass::inherited_fd(CHANNEL_FD);
    // Before anything starts a thread (may's scheduler starts with the
    // first socket it registers): threads inherit this mask, so SIGTERM is
    // only ever read from the signalfd, never delivered with its default
    // action to some may thread. SIGTERM straight to a worker (systemd's
    // default KillMode signals the whole cgroup) is a graceful stop. The
    // master's own controls (HUP, TTIN, TTOU, USR1), if sent to the whole process
    // group, must not kill or stop workers: blocked too.
    let mut mask = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGHUP, Signal::SIGTTIN, Signal::SIGTTOU, Signal::SIGUSR1] {
        mask.add(sig);
    }
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    let signals = match mask
        .thread_block()
        .and_then(|()| SignalFd::with_flags(&term, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC))
    {
        Ok(fd) => fd,
        Err(e) => {
            log::error!("cannot set up signal handling: {e}");
            std::process::exit(control::EXIT_BOOT_ERROR);
        }
    };
    // The master gave this process back the soft limit it started with
    // (see `net::raise_open_file_limit`); a worker needs a descriptor per
    // connection.
    match crate::net::raise_open_file_limit() {
        Ok(found) if found.soft < found.hard => {
            log::debug!("open files: soft limit raised from {} to {}", found.soft, found.hard)
        }
        Ok(_) => {}
        Err(e) => log::warn!("open files: cannot raise the soft limit to the hard one: {e}"),
    }
    match boot(channel) {
        Ok((limits, listeners, channel)) => serve(Arc::new(app), limits, listeners, channel, signals),
        Err(e) => {
            log::error!("worker cannot start: {e}");
            std::process::exit(control::EXIT_BOOT_ERROR);
        }
    }
}

fn boot(channel: Option<OwnedFd>) -> Result<(Arc<Limits>, Vec<Listener>, UnixStream), BootError> {
    let limits = Limits::from_env().map_err(BootError::Config)?;
    let channel = channel.ok_or(BootError::NoChannel)?;
    let count = match std::env::var(LISTENERS_ENV) {
        Err(_) => 1,
        Ok(v) => {
            v.parse::<usize>().ok().filter(|n| (1..=MAX_LISTENERS).contains(n)).ok_or(BootError::ListenerCount(v))?
        }
    };
    let mut fds = Vec::with_capacity(count);
    for _ in 0..count {
        let (_payload, fd) = fdpass::recv_fd(channel.as_fd()).map_err(BootError::Receive)?;
        fds.push(fd);
    }
    if let Some(path) = &limits.access_log {
        crate::access_log::init(path).map_err(|e| BootError::AccessLog(path.clone(), e))?;
    }
    configure_may();
    let listeners =
        fds.into_iter().map(Listener::from_fd).collect::<Result<Vec<_>, _>>().map_err(BootError::NotAListener)?;
    Ok((Arc::new(limits), listeners, UnixStream::from(channel)))
}

/// may's defaults suit a single-process server; ours is one process per
/// core, so: one scheduler thread, no pinning (every process would pin to
/// core 0; the kernel spreads processes over the cores `taskset` allows),
/// a deliberate stack size, and no idle polling ([`IDLE_POLL`]).
fn configure_may() {
    may::config()
        .set_workers(MAY_THREADS)
        .set_stack_size(STACK_WORDS)
        .set_pool_capacity(COROUTINE_POOL)
        .set_worker_pin(false);
    may::config().set_timeout_ns(IDLE_POLL.as_nanos() as u64);
}

fn serve(
    app: Arc<dyn App>,
    limits: Arc<Limits>,
    listeners: Vec<Listener>,
    mut channel: UnixStream,
    signals: SignalFd,
) -> ! {
    let state = Arc::new(ServerState::default());
    let connections = connection_pool(app, limits.clone());
    if !limits.park_idle_after.is_zero() {
        start_parking(&state, &connections);
    }
    let accepting: Vec<_> =
        listeners.into_iter().map(|l| spawn_accept_loop(l, connections.clone(), state.clone())).collect();
    // Connections the master accepted for us (see MasterMsg::Conn).
    let adopt = {
        let (connections, state) = (connections.clone(), state.clone());
        move |fd: OwnedFd| adopt_connection(fd, &connections, &state)
    };
    spawn_alarm_sweep(&state);
    let mut liveness = Liveness::start();

    if channel.write_all(WorkerMsg::Ready.encode().as_bytes()).is_err() {
        log::error!("master went away before this worker became ready");
        std::process::exit(control::EXIT_BOOT_ERROR);
    }
    log::info!("ready");

    // What the channel delivered so far: a partial line, descriptors whose
    // `conn` line has not arrived yet. Kept across the drain below.
    let (mut lines, mut passed) = (LineBuffer::default(), VecDeque::new());
    let (why, idle_grace) = supervise(&mut channel, &mut lines, &mut passed, &signals, &state, &mut liveness, &adopt);
    // Tell the master (unless it asked): it must not pass us connections
    // any more, and it starts our replacement now.
    let _ = channel.write_all(WorkerMsg::Draining.encode().as_bytes());
    // Connections the master handed over just before we stopped listening
    // to it are served too (with `Connection: close`), never dropped.
    let _ = read_channel(&mut channel, &mut lines, &mut passed, &adopt);
    // The accept loops see the drain and end, closing their listeners. The
    // flag first, then the wake-up: a loop woken, or about to wait, finds
    // it set.
    state.begin_drain();
    for accept in &accepting {
        accept.wakeup();
    }
    // Logged once the drain is in effect: from here on, every response
    // this worker writes carries `Connection: close`.
    log::info!("draining ({why}): {} connections open", state.connections.load(Ordering::Relaxed));
    let close_idle_at = Instant::now() + idle_grace;
    let mut idle_closed = false;
    let mut last_report = Instant::now();
    // The master bounds a drain with its graceful timeout (then kills us).
    // Without a master, that bound is ours to keep: a stream that never
    // ends would otherwise keep this process alive for good.
    let mut give_up_at = why.orphaned().then(|| Instant::now() + orphan_drain_limit());
    while state.connections.load(Ordering::SeqCst) > 0 {
        if !idle_closed && Instant::now() >= close_idle_at {
            state.close_idle();
            idle_closed = true;
        }
        if give_up_at.is_some_and(|t| Instant::now() >= t) {
            log::warn!(
                "the master is gone and the drain passed its graceful timeout: exiting with {} connections open",
                state.connections.load(Ordering::Relaxed)
            );
            std::process::exit(1);
        }
        // Keep proving liveness while draining: the master's timeout applies.
        if last_report.elapsed() >= control::HEARTBEAT_INTERVAL {
            last_report = Instant::now();
            let sent = report(&mut channel, &state, &mut liveness);
            if sent.is_err() && give_up_at.is_none() {
                // The master died during the drain.
                give_up_at = Some(Instant::now() + orphan_drain_limit());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Some(log) = crate::access_log::get() {
        log.flush();
    }
    log::info!("drained, exiting");
    std::process::exit(0)
}

/// Returns what ends the loop's wait for a connection: the drain uses it
/// once it has set `draining`.
fn spawn_accept_loop(listener: Listener, connections: Connections, state: Arc<ServerState>) -> WaitIoWaker {
    let first_read = listener.first_read();
    let waker = listener.waker();
    let accept = move || {
        let mut pacer = AcceptPacer::new(Moment::now());
        // Out of descriptors (EMFILE) the loop retries every 10 ms until
        // connections close: one report a second, not a line per retry.
        let mut failures = RepeatedWarning::new("accept");
        loop {
            match listener.try_accept() {
                // Served even when the drain began meanwhile: it was taken
                // off the queue, so nobody else can answer it (it gets
                // `Connection: close`).
                Ok(Some((stream, peer))) => {
                    failures.recovered();
                    serve_connection(stream, peer, first_read, &connections, &state, SPAWN_HERE);
                    if pacer.started(Moment::now()) {
                        pause(Duration::ZERO);
                    }
                }
                // The queue is empty: parked, the loop lets everything else
                // run, as a pause would. (A drain that began after the last
                // check may have used its wake-up already: see `serve`.)
                Ok(None) => {
                    if state.draining.load(Ordering::SeqCst) {
                        break;
                    }
                    listener.wait();
                    pacer.parked(Moment::now());
                }
                Err(_) if state.draining.load(Ordering::SeqCst) => break,
                Err(e) => {
                    // EMFILE and friends: log, back off briefly, go on. The
                    // connection stays queued in the kernel.
                    failures.warn(&e);
                    pause(Duration::from_millis(10));
                }
            }
            if state.draining.load(Ordering::SeqCst) {
                break;
            }
        }
    };
    match spawn(accept) {
        Ok(_) => waker,
        Err(e) => {
            log::error!("cannot start the accept loop: {e}");
            std::process::exit(control::EXIT_BOOT_ERROR);
        }
    }
}

/// When the accept loop pauses (see [`pause`]). Under a flood of new
/// connections the queue never empties, so a loop that only parked on an
/// empty queue would starve the open connections, the alarm sweep and the
/// liveness probe (the master would then replace a worker that is merely
/// busy). So it pauses once [`ACCEPT_SLICE`] has passed since it last let
/// the others run (a pause, or a park on an empty queue), or after
/// [`ACCEPT_BURST`] connections, whichever comes first.
///
/// Each pause is a trip through may's timer thread. Counted (every 64
/// connections, as it was), an S4 load paused about 180 times a second per
/// worker; paced by time from the last pause alone, about 100 times (the
/// timer thread's wake-ups, measured), although the queue empties many
/// times a millisecond under that load. Counting the parks too (the loop
/// accepts without waiting and parks itself, see `Listener::try_accept`),
/// it does not pause at all there: the timer thread wakes 20 times a second
/// per worker, for the alarm sweep. And a flood of slow handlers (a
/// blocking handler holds the thread) does not run 64 of them in a row
/// before the open connections get a turn: with 2 ms handlers, an open
/// connection's answer came after 55-129 ms counted and 5-71 ms paced
/// (median 64 and 25 ms; tests/supervision.rs).
struct AcceptPacer {
    started: u32,
    since: Moment,
}

/// The longest the accept loop goes without a pause while connections keep
/// coming (by the coarse clock, so up to a kernel tick more).
const ACCEPT_SLICE: Duration = Duration::from_millis(10);

/// The most connections the accept loop starts between pauses, whatever
/// the time: it bounds the coroutines a flood can start (each waiting for
/// its first event when the listener does not defer accept) before the
/// open connections and the sweep get a turn.
const ACCEPT_BURST: u32 = 1024;

impl AcceptPacer {
    fn new(now: Moment) -> AcceptPacer {
        AcceptPacer { started: 0, since: now }
    }

    /// Counts a connection the loop just started; true when it should pause
    /// now (the count and the slice then start again).
    fn started(&mut self, now: Moment) -> bool {
        self.started += 1;
        if self.started < ACCEPT_BURST && now.saturating_since(self.since) < ACCEPT_SLICE {
            return false;
        }
        self.parked(now);
        true
    }

    /// The loop parked (on an empty queue, or in a pause): everything else
    /// ran meanwhile, so the count and the slice start again.
    fn parked(&mut self, now: Moment) {
        *self = AcceptPacer::new(now);
    }
}

/// Parks the calling coroutine for `dur`, letting the scheduler thread run
/// everything else that is ready and poll for I/O, and brings it back on
/// that thread. A yield alone would not do: may runs its local queue dry,
/// the yielder included, before it polls.
fn pause(dur: Duration) {
    coroutine::sleep(dur);
    // A sleep ends on may's timer thread; the yield queues the coroutine
    // back to the scheduler thread (connections start nested in the accept
    // loop, so they must not start on the timer thread).
    coroutine::yield_now();
}

/// Creates the worker's parking lot for idle connections and its watcher
/// thread, which resumes each one on a connection coroutine. Without it (the
/// kernel refused an epoll instance or a thread), idle connections simply
/// keep their coroutine.
fn start_parking(state: &Arc<ServerState>, connections: &Connections) {
    let lot = match ParkingLot::new() {
        Ok(lot) => lot,
        Err(e) => {
            log::warn!("cannot park idle connections ({e}); they keep their coroutines");
            return;
        }
    };
    let _ = state.parking.set(lot);
    let (state, connections) = (state.clone(), connections.clone());
    let resume = move |conn| {
        // On failure the job, and the connection in it, is dropped:
        // closed, like any idle connection the server cannot keep.
        if let Err(e) = connections.run(Job::Resumed(conn), SPAWN_QUEUED) {
            log::error!("cannot start a connection coroutine: {e}");
        }
    };
    let watcher = move || {
        if let Some(lot) = state.parking.get() {
            lot.watch(&resume)
        }
    };
    if let Err(e) = std::thread::Builder::new().name("park".into()).spawn(watcher) {
        log::error!("cannot start the idle-connection watcher: {e}");
        std::process::exit(control::EXIT_BOOT_ERROR);
    }
}

// How a connection coroutine starts when no idle one is left to take the
// connection (an idle one is unparked, which queues it on its scheduler
// thread).

/// At once, nested in the calling coroutine (the accept loop) until its
/// first wait: may's `spawn` wakes the scheduler thread through its eventfd
/// even for a coroutine it is already running (a write, a read and an extra
/// epoll_wait per connection).
const SPAWN_HERE: Spawn = |f| spawn_here(f).map(drop);
/// Queued to the scheduler thread: for callers that are not coroutines.
const SPAWN_QUEUED: Spawn = |f| spawn(f).map(drop);

/// Serves one accepted connection on a connection coroutine, counted from
/// now until its last byte is flushed.
fn serve_connection(
    stream: Stream,
    peer: Option<SocketAddr>,
    first_read: FirstRead,
    connections: &Connections,
    state: &Arc<ServerState>,
    spawn: Spawn,
) {
    let admission = state.admit();
    if let Err(e) = connections.run(Job::Accepted { stream, peer, first_read, admission }, spawn) {
        log::error!("cannot start a connection coroutine: {e}");
    }
}

/// Serves a TCP connection the master accepted and passed over the channel.
fn adopt_connection(fd: OwnedFd, connections: &Connections, state: &Arc<ServerState>) {
    let socket = std::net::TcpStream::from(fd);
    let peer = socket.peer_addr().ok();
    let _ = socket.set_nodelay(true);
    // A connected TCP socket: the master accepted it from a TCP listener.
    let stream = match Stream::from_fd(socket.into(), Family::Tcp) {
        Ok(stream) => stream,
        Err(e) => {
            log::error!("cannot serve a connection the master passed: {e}");
            return;
        }
    };
    // Its request may well be there (the master's accept was deferred
    // too), but the master's own wake-up, the message and ours came in
    // between: the first event says.
    serve_connection(stream, peer, FirstRead::AfterEvent, connections, state, SPAWN_QUEUED);
}

/// The coroutine that wakes connections whose wait reached its deadline
/// (see `alarm`): without it, no connection timeout would ever fire.
fn spawn_alarm_sweep(state: &Arc<ServerState>) {
    let alarms = state.alarms.clone();
    let sweep = move || {
        loop {
            // With no connection open there is nothing to time out.
            alarms.idle();
            coroutine::sleep(alarm::TICK);
            // Back on the scheduler thread (a sleep ends on may's timer
            // thread), where the connections run.
            coroutine::yield_now();
            alarms.sweep();
        }
    };
    if let Err(e) = spawn(sweep) {
        log::error!("cannot start the connection timeout sweep: {e}");
        std::process::exit(control::EXIT_BOOT_ERROR);
    }
}

/// Proof that the scheduler thread still runs coroutines. With each
/// heartbeat the main thread posts a probe; a coroutine answers it by
/// counting up, and the master hears the next heartbeat only if the count
/// moved. A handler that blocks the scheduler thread thereby stops the
/// heartbeats, although this process's main thread is fine.
///
/// Why a probe and not a coroutine that ticks on its own: a coroutine's
/// sleep ends on may's timer thread, so a ticker woke two threads four
/// times a second even in a worker with nothing to do. A probe costs one
/// wake-up of the scheduler thread per heartbeat.
///
/// The main thread's side: owned by it alone, kept from `supervise` through
/// the drain so that the count seen carries over.
struct Liveness {
    probe: Arc<Probe>,
    /// Answers counted when the last probe was posted.
    seen: u64,
}

/// What the main thread and the answering coroutine share.
struct Probe {
    posted: Semphore,
    answers: AtomicU64,
}

impl Liveness {
    /// Starts the answering coroutine, with the first probe already posted
    /// so that the first heartbeat goes out.
    fn start() -> Liveness {
        let probe = Arc::new(Probe { posted: Semphore::new(1), answers: AtomicU64::new(0) });
        let answerer = {
            let probe = probe.clone();
            move || {
                loop {
                    // Posted from the main thread, which is no scheduler
                    // thread, the wait ends with this coroutine on may's
                    // global queue, which only the scheduler thread
                    // (MAY_THREADS is one) takes from: the count below moves
                    // only when that thread runs.
                    probe.posted.wait();
                    probe.answers.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        if let Err(e) = spawn(answerer) {
            log::error!("cannot start the liveness probe: {e}");
            std::process::exit(control::EXIT_BOOT_ERROR);
        }
        Liveness { probe, seen: 0 }
    }

    /// Whether the last probe was answered; if so, posts the next one. A
    /// probe left unanswered stays the only one out.
    fn answered(&mut self) -> bool {
        let now = self.probe.answers.load(Ordering::Relaxed);
        if now == self.seen {
            return false;
        }
        self.seen = now;
        self.probe.posted.post();
        true
    }
}

fn spawn<F: FnOnce() + Send + 'static>(f: F) -> io::Result<coroutine::JoinHandle<()>> {
    // SAFETY: may requires that coroutines not keep thread-local state
    // across a park (the coroutine may resume on another thread) and fit
    // their stack. Our connection code keeps none (the Date cache is a
    // process-wide atomic; logging touches env_logger's thread-local
    // buffer, and `io` its lists of spare buffers, only within one call),
    // and STACK_WORDS is sized for it. Handlers run here too: the
    // README states the same two rules for them.
    unsafe { coroutine::Builder::new().stack_size(STACK_WORDS).spawn(f) }
}

/// [`spawn`], but the coroutine runs at once on this thread until its first
/// wait; the caller resumes after that. Only from a coroutine on the
/// scheduler thread (see [`SPAWN_HERE`]).
fn spawn_here<F: FnOnce() + Send + 'static>(f: F) -> io::Result<coroutine::JoinHandle<()>> {
    // SAFETY: as for `spawn`. Running it nested changes who resumes it
    // first (the calling coroutine instead of the scheduler loop, on the
    // calling thread) and that the caller waits until that first slice
    // ends; its later wake-ups come from the scheduler as usual. The caller
    // must be on the scheduler thread (see `pause`).
    unsafe { coroutine::Builder::new().stack_size(STACK_WORDS).spawn_local(f) }
}

/// Serves the channel on the main thread until the worker must stop;
/// returns why, and how long idle connections may stay for a last request.
fn supervise(
    channel: &mut UnixStream,
    lines: &mut LineBuffer,
    passed: &mut VecDeque<OwnedFd>,
    signals: &SignalFd,
    state: &ServerState,
    liveness: &mut Liveness,
    adopt: &dyn Fn(OwnedFd),
) -> (StopReason, Duration) {
    let _ = channel.set_nonblocking(true);
    let mut trimmed_at = 0;
    let mut last_report = Instant::now();
    loop {
        let mut fds =
            [PollFd::new(channel.as_fd(), PollFlags::POLLIN), PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(control::HEARTBEAT_INTERVAL).unwrap_or(PollTimeout::NONE);
        let _ = poll(&mut fds, timeout);
        if let Ok(Some(_)) = signals.read_signal() {
            return (StopReason::Sigterm, Duration::ZERO);
        }
        if let Err(stop) = read_channel(channel, lines, passed, adopt) {
            return stop;
        }
        if last_report.elapsed() >= control::HEARTBEAT_INTERVAL {
            last_report = Instant::now();
            if let Some(lot) = state.parking.get() {
                lot.give_back_memory(&mut trimmed_at);
            }
            if report(channel, state, liveness).is_err() {
                return (StopReason::MasterGone, Duration::ZERO);
            }
        }
    }
}

/// Handles what the master sent: connections to adopt, log reopening.
/// `Err` says why and how to stop.
fn read_channel(
    channel: &mut UnixStream,
    lines: &mut LineBuffer,
    fds: &mut VecDeque<OwnedFd>,
    adopt: &dyn Fn(OwnedFd),
) -> Result<(), (StopReason, Duration)> {
    let mut buf = [0u8; 256];
    loop {
        let (n, received) = match fdpass::recv_with_fds(channel.as_fd(), &mut buf) {
            Ok(got) => got,
            Err(fdpass::RecvFdError::Closed) => return Err((StopReason::MasterGone, Duration::ZERO)),
            Err(fdpass::RecvFdError::Os(nix::Error::EAGAIN)) => return Ok(()),
            Err(_) => return Err((StopReason::ChannelFailed, Duration::ZERO)),
        };
        fds.extend(received);
        let msgs = lines.feed(&buf[..n]).map_err(|_| (StopReason::Garbage, Duration::ZERO))?;
        for msg in msgs.iter().filter_map(|l| MasterMsg::parse(l)) {
            match msg {
                MasterMsg::Stop { idle_grace } => return Err((StopReason::Asked, idle_grace)),
                MasterMsg::Reopen => reopen_logs(),
                MasterMsg::Conn => match fds.pop_front() {
                    Some(fd) => {
                        // Acknowledged before it is served, so the master
                        // never hands a connection we touched to another
                        // worker. (A full channel drops the ack: the master
                        // then holds its copy until we exit.)
                        let _ = channel.write_all(WorkerMsg::Took.encode().as_bytes());
                        adopt(fd)
                    }
                    // The kernel drops descriptors a full fd table cannot
                    // take (MSG_CTRUNC): that connection is gone, the
                    // channel is fine.
                    None => {
                        let _ = channel.write_all(WorkerMsg::Took.encode().as_bytes());
                        log::warn!("a connection passed by the master was lost: no descriptor arrived");
                    }
                },
            }
        }
    }
}

fn reopen_logs() {
    if let Some(log) = crate::access_log::get() {
        log.request_reopen();
    }
}

/// Sends a heartbeat if the scheduler made progress since the last one.
fn report(channel: &mut UnixStream, state: &ServerState, liveness: &mut Liveness) -> io::Result<()> {
    if !liveness.answered() {
        return Ok(());
    }
    let msg = WorkerMsg::Heartbeat {
        connections: state.connections.load(Ordering::Relaxed) as u64,
        requests: state.requests.load(Ordering::Relaxed),
    };
    match channel.write_all(msg.encode().as_bytes()) {
        // A full channel (the master is busy): skip this beat.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{ACCEPT_BURST, ACCEPT_SLICE, AcceptPacer};
    use crate::clock::Moment;

    #[test]
    fn the_accept_loop_pauses_once_a_slice_has_passed() {
        let start = Moment::now();
        let mut pacer = AcceptPacer::new(start);
        let just_before = start + (ACCEPT_SLICE - Duration::from_millis(1));
        assert!(!pacer.started(start));
        assert!(!pacer.started(just_before));
        assert!(pacer.started(start + ACCEPT_SLICE));
        // The slice starts again from the pause.
        assert!(!pacer.started(start + ACCEPT_SLICE + Duration::from_millis(9)));
        assert!(pacer.started(start + ACCEPT_SLICE * 2));
    }

    #[test]
    fn a_park_on_an_empty_queue_starts_the_slice_and_the_count_again() {
        let start = Moment::now();
        let mut pacer = AcceptPacer::new(start);
        for _ in 1..ACCEPT_BURST {
            assert!(!pacer.started(start));
        }
        let later = start + (ACCEPT_SLICE - Duration::from_millis(1));
        pacer.parked(later);
        // Neither the count before the park nor the time before it counts.
        assert!(!pacer.started(later));
        assert!(!pacer.started(start + ACCEPT_SLICE + Duration::from_millis(5)));
        assert!(pacer.started(later + ACCEPT_SLICE));
    }

    #[test]
    fn the_accept_loop_pauses_after_a_burst_however_fast() {
        let start = Moment::now();
        let mut pacer = AcceptPacer::new(start);
        for n in 1..ACCEPT_BURST {
            assert!(!pacer.started(start), "paused after {n}");
        }
        assert!(pacer.started(start));
        // The count starts again from the pause.
        assert!(!pacer.started(start));
    }
}
