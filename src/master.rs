//! The master: binds and listens (it accepts only from the socket of a
//! slot without a healthy worker, see `pass_orphaned_connections`), starts
//! one worker per slot with the listening socket on its fd 3, and
//! supervises them over that channel: readiness, heartbeats, respawn with
//! backoff, stop.
//!
//! The loop is single-threaded. Signals are blocked and read from a
//! signalfd, so handling them is ordinary code in the loop, not async
//! signal handlers.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::config::Limits;
use crate::control::{self, LineBuffer, MasterMsg, WorkerMsg};
use crate::fdpass;
use crate::listen::{self, ListenAddr, ListenOptions, Listener};
use crate::logging::RepeatedWarning;
use crate::net;
use crate::status::{ControlSocket, Status, WorkerStatus};
use crate::worker::CHANNEL_FD;

/// Everything the master needs to run.
#[derive(Clone, Debug)]
pub struct MasterConfig {
    /// Where to listen (ignored when systemd passes sockets).
    pub binds: Vec<ListenAddr>,
    /// File mode of Unix listening sockets.
    pub unix_mode: u32,
    /// Where `http-cluster status` finds this master (`None`: nowhere).
    pub control_socket: Option<PathBuf>,
    /// `--log-level`, passed on to workers.
    pub log_level: Option<String>,
    /// How connections are spread over workers.
    pub balance: Balance,
    pub workers: usize,
    /// How long a stopping worker may take to finish in-flight requests.
    pub graceful_timeout: Duration,
    /// A worker silent for this long is killed and replaced.
    pub worker_timeout: Duration,
    /// The worker program and its arguments.
    pub command: WorkerCommand,
    pub limits: Limits,
    /// Pending connections the kernel queues per listener.
    pub backlog: i32,
    /// `TCP_DEFER_ACCEPT` of the TCP sockets the master binds, in seconds
    /// (0: off).
    pub defer_accept_secs: u32,
    /// Recycle a worker after this many requests (0: never)...
    pub max_requests: u64,
    /// ...plus up to this many more, chosen per worker.
    pub max_requests_jitter: u64,
    /// Recycle a worker whose resident memory exceeds this (0: never).
    pub max_worker_memory: u64,
}

/// How connections reach workers (`--balance`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Balance {
    /// One listening socket shared by every worker (the seed's design):
    /// whichever worker is waiting accepts. Linux wakes the most recently
    /// waiting process first, so the load piles onto busy workers.
    Shared,
    /// One SO_REUSEPORT socket per worker slot: the kernel spreads new
    /// connections evenly by hash. The master keeps every slot's socket, so
    /// a respawned worker inherits its slot's queue; while a slot has no
    /// ready worker (crashed, respawning, or removed by SIGTTOU) the master
    /// accepts from it and passes the connections to live workers.
    Reuseport,
}

/// What to run as a worker.
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// How a worker process ended, from `waitpid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Exit code 0.
    Clean,
    /// It could not boot (no socket, bad config, app failed to start).
    BootFailure(i32),
    /// Another exit code.
    Failed(i32),
    /// Killed by a signal.
    Signaled(Signal),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Clean => write!(f, "exited cleanly"),
            Exit::BootFailure(c) => write!(f, "failed to boot (exit code {c})"),
            Exit::Failed(c) => write!(f, "exited with code {c}"),
            Exit::Signaled(s) => write!(f, "was killed by {s}"),
        }
    }
}

/// Classifies a `waitpid` status; `None` for statuses that are not an end
/// (stopped, continued, no child).
pub fn classify_exit(status: WaitStatus) -> Option<(Pid, Exit)> {
    match status {
        WaitStatus::Exited(pid, 0) => Some((pid, Exit::Clean)),
        WaitStatus::Exited(pid, code) if code == control::EXIT_BOOT_ERROR || code == control::EXIT_APP_ERROR => {
            Some((pid, Exit::BootFailure(code)))
        }
        WaitStatus::Exited(pid, code) => Some((pid, Exit::Failed(code))),
        WaitStatus::Signaled(pid, sig, _) => Some((pid, Exit::Signaled(sig))),
        _ => None,
    }
}

/// Delay before respawning a slot whose worker died `failures` times in a
/// row: immediately the first time, then doubling from 100 ms up to 10 s,
/// so a crash loop costs little CPU and a one-off crash costs no time.
pub fn respawn_delay(failures: u32) -> Duration {
    match failures {
        0 | 1 => Duration::ZERO,
        n => Duration::from_millis(100u64.saturating_mul(1 << (n - 2).min(7))).min(Duration::from_secs(10)),
    }
}

/// What the master knew about a worker when it exited.
#[derive(Clone, Copy, Debug)]
pub struct ExitContext {
    /// It was told to stop, or the whole master is stopping.
    pub stopping: bool,
    /// Another live worker serves its slot (it was a replacement that
    /// failed), or its slot was removed.
    pub slot_served_by_other: bool,
    /// It had reported ready.
    pub was_ready: bool,
    pub uptime: Duration,
}

/// What a slot does after its worker exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotAction {
    /// Expected, or somebody else serves the slot.
    Nothing,
    /// It could not boot: do not respawn (a reload may retry).
    Halt,
    /// Start a new worker after this delay.
    Respawn(Duration),
}

/// Slot bookkeeping after an exit, as a pure function of what was known:
/// updates the slot's failure count and says what to do.
pub fn after_exit(exit: Exit, seen: ExitContext, slot: &mut SlotState) -> SlotAction {
    if seen.stopping || seen.slot_served_by_other {
        return SlotAction::Nothing;
    }
    if let (Exit::BootFailure(_), false) = (exit, seen.was_ready) {
        slot.halted = true;
        return SlotAction::Halt;
    }
    if seen.uptime >= STABLE_AFTER {
        slot.failures = 0;
    }
    slot.failures += 1;
    let delay = respawn_delay(slot.failures);
    slot.respawn_at = Some(Instant::now() + delay);
    SlotAction::Respawn(delay)
}

/// A worker that ran at least this long resets its slot's failure count.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// A worker whose last heartbeat is older than this (three missed beats)
/// is stalled: with reuseport, the master serves its slot's queue until it
/// recovers or the worker timeout replaces it.
const STALLED_AFTER: Duration = Duration::from_millis(1500);

/// How often the loop wakes without events while something is in
/// progress (a worker starting or stopping, a respawn delay, a reload,
/// connections to pass on).
const TICK: Duration = Duration::from_millis(50);

/// How often it wakes when every worker is up and nothing is pending: only
/// to notice missed heartbeats, which take seconds to matter. The master
/// shares the cores with its workers; at 20 wake-ups a second it showed in
/// their tail latency (`perf sched`: each wake-up held a loaded core for
/// ~0.2 ms, counting the network softirqs that ran in its slice).
const IDLE_TICK: Duration = Duration::from_millis(500);

#[derive(Debug)]
enum Phase {
    /// Spawned, has not reported ready.
    Starting,
    Ready,
    /// Told to stop; killed at the deadline.
    Stopping {
        deadline: Instant,
    },
}

#[derive(Debug)]
struct Worker {
    slot: usize,
    generation: u64,
    pid: Pid,
    channel: UnixStream,
    lines: LineBuffer,
    phase: Phase,
    spawned: Instant,
    last_heartbeat: Instant,
    connections: u64,
    requests: u64,
    /// Requests after which it is recycled (0: never).
    max_requests: u64,
    /// Already queued for replacement.
    retiring: bool,
    /// After a failed replacement, no new recycling attempt before this.
    recycle_hold: Option<Instant>,
    /// Connections passed to it and not yet taken, oldest first.
    passed: VecDeque<socket2::Socket>,
}

impl Worker {
    fn is_stopping(&self) -> bool {
        matches!(self.phase, Phase::Stopping { .. })
    }

    /// Ready, and its heartbeats are on time.
    fn healthy(&self, now: Instant) -> bool {
        matches!(self.phase, Phase::Ready) && now.duration_since(self.last_heartbeat) < STALLED_AFTER
    }
}

/// What a slot is waiting for when it has no worker.
#[derive(Debug, Default, Clone, Copy)]
pub struct SlotState {
    failures: u32,
    respawn_at: Option<Instant>,
    /// Its worker failed to boot: do not respawn.
    halted: bool,
    /// Added by SIGTTIN and no worker of it ready yet: new connections
    /// are kept off its socket until then (see
    /// [`Master::steer_new_connections`]).
    awaiting_first_worker: bool,
}

/// Why a slot's worker is being replaced by a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Reload,
    MaxRequests,
    MaxMemory,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::Reload => "reload",
            Reason::MaxRequests => "max-requests reached",
            Reason::MaxMemory => "max-worker-memory exceeded",
        })
    }
}

/// A replacement in progress: the new worker of `slot` is starting; the old
/// one serves until the new one is ready.
#[derive(Debug)]
struct Replacement {
    slot: usize,
    new_pid: Pid,
    reason: Reason,
    started: Instant,
}

/// Errors that stop the master.
#[derive(Debug)]
pub enum MasterError {
    Bind(String, io::Error),
    Setup(String),
    /// Every worker failed to boot.
    WorkersCannotBoot,
}

impl std::fmt::Display for MasterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterError::Bind(a, e) => write!(f, "cannot listen on {a}: {e}"),
            MasterError::Setup(e) => write!(f, "{e}"),
            MasterError::WorkersCannotBoot => write!(f, "no worker could boot; see the errors above"),
        }
    }
}

struct Master {
    cfg: MasterConfig,
    /// Closed when a stop begins (see [`Master::handle_stop`]).
    listeners: Vec<Listener>,
    /// The listeners' addresses, for status and the ready line.
    listener_names: Vec<String>,
    /// With `Balance::Reuseport`: per slot ever used, its own socket for
    /// each TCP listener (`None`: that listener is shared, e.g. Unix).
    slot_sockets: Vec<Vec<Option<socket2::Socket>>>,
    /// Per listener, how its SO_REUSEPORT group is steered: `Some(n)`, new
    /// connections go only to its first n sockets (see
    /// [`Master::steer_new_connections`]).
    steered: Vec<Option<u32>>,
    /// Round-robin position for connections the master passes on.
    next_target: usize,
    /// After an accept error on an orphaned socket, not before this.
    orphans_paused_until: Option<Instant>,
    /// Those errors, logged at most once a second (out of descriptors,
    /// every tick fails).
    orphan_accept_failures: RepeatedWarning,
    /// Accepted connections waiting for a healthy worker.
    waiting: Vec<socket2::Socket>,
    control: Option<ControlSocket>,
    started: Instant,
    workers: BTreeMap<i32, Worker>,
    slots: Vec<SlotState>,
    /// The generation new workers belong to; a reload increments it.
    generation: u64,
    /// Slots waiting to be replaced, one at a time.
    queue: VecDeque<(usize, Reason)>,
    replacing: Option<Replacement>,
    stopping: Option<Instant>,
    announced: bool,
    last_memory_check: Instant,
}

/// Raises the open-file soft limit; the workers start with the one found
/// (see [`net::with_starting_open_file_limit`]).
fn raise_open_file_limit() {
    match net::raise_open_file_limit() {
        Ok(found) => {
            if found.soft < found.hard {
                log::info!("open files: soft limit raised from {} to the hard limit, {}", found.soft, found.hard);
            } else {
                log::info!("open files: limit {}", found.soft);
            }
        }
        Err(e) => log::warn!("open files: cannot raise the soft limit to the hard one: {e}"),
    }
}

/// Runs the master until it is stopped. Returns the process exit code.
pub fn run(cfg: MasterConfig) -> Result<i32, MasterError> {
    let mask = supervised_signals();
    // Blocked before any worker exists; each worker unblocks them again
    // (Command does not reset the signal mask of its child).
    mask.thread_block().map_err(|e| MasterError::Setup(format!("blocking signals: {e}")))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| MasterError::Setup(format!("signalfd: {e}")))?;
    raise_open_file_limit();

    let listeners = match listen::from_systemd().map_err(MasterError::Setup)? {
        Some(inherited) => {
            log::info!("socket activation: {} sockets from systemd (--bind ignored)", inherited.len());
            // A master before us may have left its steering on the group
            // (see `Master::steer_new_connections`): systemd's copy of the
            // socket keeps the group, and the program, alive.
            for l in inherited.iter().filter(|l| l.is_reuseport_tcp()) {
                if let Err(e) = listen::steer_reuseport(&l.socket, None) {
                    log::warn!("{}: cannot reset the steering of new connections: {e}", l.addr);
                }
            }
            inherited
        }
        None => {
            let opts = ListenOptions {
                backlog: cfg.backlog,
                unix_mode: cfg.unix_mode,
                reuse_port: cfg.balance == Balance::Reuseport,
                defer_accept_secs: cfg.defer_accept_secs,
            };
            cfg.binds
                .iter()
                .map(|a| listen::bind(a, &opts).map_err(|e| MasterError::Bind(a.to_string(), e)))
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    if cfg.balance == Balance::Reuseport {
        for l in listeners.iter().filter(|l| matches!(l.addr, ListenAddr::Tcp(_))) {
            if !l.socket.reuse_port().unwrap_or(false) {
                log::warn!("{}: no SO_REUSEPORT (socket activation without ReusePort=yes?); workers share it", l.addr);
            }
            // The master accepts from it while slot 0 has no worker.
            l.socket.set_nonblocking(true).map_err(|e| MasterError::Setup(format!("{}: {e}", l.addr)))?;
        }
    }
    let names: Vec<String> = listeners.iter().map(|l| l.addr.to_string()).collect();
    // The kernel's own figure, not the flag: it rounds up to its SYN-ACK
    // retransmission times, and systemd's sockets bring their own value.
    let described: Vec<String> = listeners
        .iter()
        .map(|l| match (&l.addr, listen::defer_accept(&l.socket)) {
            (ListenAddr::Tcp(_), Ok(secs)) if secs > 0 => format!("{} (accept deferred up to {secs} s)", l.addr),
            _ => l.addr.to_string(),
        })
        .collect();
    log::info!(
        "listening on {}, starting {} workers: {}",
        described.join(" "),
        cfg.workers,
        cfg.command.program.display()
    );
    // A second server started with the same control path keeps serving;
    // only its status is unreachable (two masters must not steal it).
    let control = cfg.control_socket.as_deref().and_then(|path| match ControlSocket::bind(path) {
        Ok(c) => Some(c),
        Err(e) => {
            log::warn!("control socket {}: {e}; `http-cluster status` cannot reach this master", path.display());
            None
        }
    });

    let steered = vec![None; listeners.len()];
    let mut master = Master {
        slots: vec![SlotState::default(); cfg.workers],
        cfg,
        listener_names: names,
        listeners,
        slot_sockets: Vec::new(),
        steered,
        next_target: 0,
        orphans_paused_until: None,
        orphan_accept_failures: RepeatedWarning::new("accepting for a slot without a worker (retried every tick)"),
        waiting: Vec::new(),
        control,
        started: Instant::now(),
        workers: BTreeMap::new(),
        generation: 1,
        queue: VecDeque::new(),
        replacing: None,
        stopping: None,
        announced: false,
        last_memory_check: Instant::now(),
    };
    for slot in 0..master.cfg.workers {
        master.spawn_worker(slot);
    }
    master.run_loop(&signals)
}

fn supervised_signals() -> SigSet {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGUSR1,
    ] {
        mask.add(s);
    }
    mask
}

impl Master {
    /// One screen: wait, dispatch signals, read reports, reap, kill the
    /// hung, advance replacements, fill empty slots.
    fn run_loop(&mut self, signals: &SignalFd) -> Result<i32, MasterError> {
        loop {
            self.wait_for_events(signals);
            while let Ok(Some(info)) = signals.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGTERM) => self.handle_stop("SIGTERM", self.cfg.graceful_timeout),
                    Ok(Signal::SIGINT) => self.handle_stop("SIGINT", Duration::ZERO),
                    Ok(Signal::SIGQUIT) => self.handle_stop("SIGQUIT", Duration::ZERO),
                    Ok(Signal::SIGHUP) => self.handle_hup(),
                    Ok(Signal::SIGTTIN) => self.handle_ttin(),
                    Ok(Signal::SIGTTOU) => self.handle_ttou(),
                    Ok(Signal::SIGUSR1) => self.handle_reopen(),
                    _ => {} // SIGCHLD: reaped below on every pass.
                }
            }
            self.read_channels();
            self.pass_orphaned_connections();
            if let Some(control) = &self.control {
                control.serve_pending(|| self.status());
            }
            self.reap_workers();
            self.murder_workers();
            if let Some(code) = self.check_done()? {
                return Ok(code);
            }
            self.check_recycling();
            self.advance_replacements();
            self.manage_workers();
            self.steer_new_connections();
            self.announce_when_ready();
        }
    }

    /// Sleeps until a signal, a channel message, or the next tick.
    fn wait_for_events(&self, signals: &SignalFd) {
        let mut fds = Vec::with_capacity(self.workers.len() + 1);
        fds.push(PollFd::new(signals.as_fd(), PollFlags::POLLIN));
        for w in self.workers.values() {
            fds.push(PollFd::new(w.channel.as_fd(), PollFlags::POLLIN));
        }
        if let Some(control) = &self.control {
            fds.push(PollFd::new(control.listener.as_fd(), PollFlags::POLLIN));
        }
        let orphans = self.orphaned_sockets();
        for socket in &orphans {
            fds.push(PollFd::new(socket.as_fd(), PollFlags::POLLIN));
        }
        // Orphaned sockets need no short tick: they are in the poll set, so
        // a connection arriving on one wakes us. (A slot removed by SIGTTOU
        // leaves its socket orphaned for good.)
        let tick = if self.is_settled() { IDLE_TICK } else { TICK };
        let timeout = PollTimeout::try_from(tick).unwrap_or(PollTimeout::NONE);
        let _ = poll(&mut fds, timeout);
    }

    /// Nothing time-sensitive is under way: every worker is ready, no
    /// slot waits for a respawn, no stop, reload or recycling is in
    /// progress, and no connection waits to be passed on.
    fn is_settled(&self) -> bool {
        self.stopping.is_none()
            && self.replacing.is_none()
            && self.queue.is_empty()
            && self.waiting.is_empty()
            && self.orphans_paused_until.is_none_or(|t| Instant::now() >= t)
            && self.slots.iter().all(|s| s.respawn_at.is_none())
            && self.workers.values().all(|w| matches!(w.phase, Phase::Ready) && !w.retiring)
    }

    /// Starts a worker for `slot`; `None` if it could not even be spawned.
    fn spawn_worker(&mut self, slot: usize) -> Option<Pid> {
        let max_requests =
            recycle_after(self.cfg.max_requests, self.cfg.max_requests_jitter, slot as u64 ^ self.generation);
        let sockets = self.sockets_for(slot);
        match start_worker(&self.cfg, &sockets, slot) {
            Ok(mut w) => {
                w.generation = self.generation;
                w.max_requests = max_requests;
                log::info!("worker {slot} spawned, pid {}, generation {}", w.pid, w.generation);
                let pid = w.pid;
                self.workers.insert(pid.as_raw(), w);
                self.slots[slot].respawn_at = None;
                Some(pid)
            }
            Err(e) => {
                log::error!("worker {slot}: cannot spawn {}: {e}", self.cfg.command.program.display());
                // A replacement: the old worker keeps the slot, and the
                // caller rolls back or retries later. The slot is not
                // empty, so it gets no respawn time (which would keep the
                // master from ever settling).
                if self.workers.values().any(|w| w.slot == slot && !w.is_stopping()) {
                    return None;
                }
                let state = &mut self.slots[slot];
                if spawn_error_is_permanent(&e) {
                    // Like a worker that cannot boot: retrying a program
                    // that is not there or not executable only loops; a
                    // reload retries it, and with every slot halted the
                    // master exits non-zero.
                    state.halted = true;
                    state.respawn_at = None;
                    return None;
                }
                state.failures += 1;
                state.respawn_at = Some(Instant::now() + respawn_delay(state.failures).max(TICK));
                None
            }
        }
    }

    fn read_channels(&mut self) {
        for w in self.workers.values_mut() {
            w.read_messages(self.cfg.graceful_timeout);
        }
    }

    /// The sockets a worker of `slot` serves, in `--bind` order: the shared
    /// listeners, or with reuseport the slot's own socket for each TCP
    /// listener (created on first use, joining the listener's group).
    fn sockets_for(&mut self, slot: usize) -> Vec<socket2::Socket> {
        if self.cfg.balance == Balance::Reuseport {
            while self.slot_sockets.len() <= slot {
                let index = self.slot_sockets.len();
                let own = self.listeners.iter().map(|l| self.slot_socket(l, index)).collect();
                self.slot_sockets.push(own);
            }
        }
        let own = self.slot_sockets.get(slot);
        self.listeners
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match own.and_then(|o| o[i].as_ref()) {
                Some(s) => s.try_clone().ok(),
                None => l.socket.try_clone().ok(),
            })
            .collect()
    }

    /// A new SO_REUSEPORT socket for `slot` beside listener `l`; `None`
    /// (share `l`) for Unix sockets, sockets from systemd without
    /// SO_REUSEPORT, and slot 0, which uses `l` itself.
    fn slot_socket(&self, l: &Listener, slot: usize) -> Option<socket2::Socket> {
        let ListenAddr::Tcp(addr) = l.addr else { return None };
        if slot == 0 || !l.socket.reuse_port().unwrap_or(false) {
            return None;
        }
        // Set up like the listener (which systemd may have made), but for
        // the group.
        let opts = ListenOptions {
            backlog: self.cfg.backlog,
            unix_mode: self.cfg.unix_mode,
            reuse_port: true,
            defer_accept_secs: listen::defer_accept(&l.socket).unwrap_or(self.cfg.defer_accept_secs),
        };
        match listen::bind_tcp(addr, &opts).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("slot {slot}: cannot open its own socket on {addr} ({e}); it shares the first one");
                None
            }
        }
    }

    /// Keeps new connections off the sockets of slots removed by SIGTTOU,
    /// and of slots SIGTTIN added until their first worker is ready. Their
    /// sockets stay open, with their queues, which the master serves (see
    /// [`Master::orphaned_sockets`]), but the kernel would go on giving
    /// each its share of new connections, all through the master. So each
    /// TCP group is steered to the sockets of the slots in service, and left
    /// to the kernel's hash again once every socket has one. Runs on every
    /// pass of the loop; it acts only when that number changes.
    ///
    /// A group lists its sockets in the order they started listening: the
    /// listener (slot 0's), then each slot's own, created in slot order and
    /// never closed before the master stops, so the slots in service come
    /// first. That holds while this master is alone in the group. Another
    /// process that joins it (a second server on the same address, an old
    /// master still draining under socket activation), or a member that
    /// closes (the kernel moves the last socket into the gap), shifts the
    /// indices: a slot in service may then get less than its share, or a
    /// removed slot's socket some, which the master passes on. Nothing is
    /// lost either way, and the kernel's hash is back when the slots are
    /// full. Slots that are merely without a worker for a while (crashed,
    /// booting, stalled) keep their share: their queues wait for the
    /// replacement or are passed on meanwhile.
    fn steer_new_connections(&mut self) {
        if self.cfg.balance != Balance::Reuseport || self.stopping.is_some() {
            return;
        }
        for (slot, state) in self.slots.iter_mut().enumerate() {
            if state.awaiting_first_worker
                && self.workers.values().any(|w| w.slot == slot && matches!(w.phase, Phase::Ready))
            {
                state.awaiting_first_worker = false;
            }
        }
        let in_service = self.slots.iter().take_while(|s| !s.awaiting_first_worker).count();
        // Only a TCP listener in a reuseport group has slot sockets beside
        // it; for any other, `live == all` and nothing is done.
        for (i, l) in self.listeners.iter().enumerate() {
            // The listener itself, then the slots' own sockets that exist.
            let own =
                |slots: usize| 1 + self.slot_sockets.iter().take(slots).skip(1).filter(|o| o[i].is_some()).count();
            let (live, all) = (own(in_service), own(self.slot_sockets.len()));
            let want = (live < all).then(|| u32::try_from(live).unwrap_or(u32::MAX));
            if want == self.steered[i] {
                continue;
            }
            if let Err(e) = listen::steer_reuseport(&l.socket, want) {
                log::warn!(
                    "{}: cannot steer new connections ({e}); the master passes on those for idle sockets",
                    l.addr
                );
            }
            // Not retried on failure: what reaches an idle slot's socket is
            // still served, through the master.
            self.steered[i] = want;
        }
    }

    /// Reuseport sockets whose slot has no healthy worker to accept from
    /// them: crashed, still booting, removed by SIGTTOU, or late with its
    /// heartbeats (a handler blocks its thread: its queue must not wait for
    /// the worker timeout). Empty when there is nobody healthy to pass
    /// connections to: they wait in the kernel queue.
    fn orphaned_sockets(&self) -> Vec<&socket2::Socket> {
        let now = Instant::now();
        let ready =
            |slot: usize| slot < self.slots.len() && self.workers.values().any(|w| w.slot == slot && w.healthy(now));
        if self.stopping.is_some()
            || !self.workers.values().any(|w| w.healthy(now))
            || self.orphans_paused_until.is_some_and(|t| now < t)
        {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (slot, own) in self.slot_sockets.iter().enumerate() {
            if ready(slot) {
                continue;
            }
            for (i, socket) in own.iter().enumerate() {
                match socket {
                    Some(s) => out.push(s),
                    // Slot 0 uses the listener itself.
                    None if slot == 0 && self.listeners[i].is_reuseport_tcp() => out.push(&self.listeners[i].socket),
                    None => {}
                }
            }
        }
        out
    }

    /// Accepts what waits on orphaned sockets and passes each connection
    /// to a ready worker over its channel (`conn` + the descriptor).
    fn pass_orphaned_connections(&mut self) {
        let mut accepted = Vec::new();
        let mut failed = None;
        // An accept that took a connection or found the queue empty: Linux
        // takes the descriptor before it looks at the queue, so either
        // means there are descriptors again.
        let mut worked = false;
        for socket in self.orphaned_sockets() {
            // Bounded per pass so signals and heartbeats are not starved.
            while accepted.len() < 256 {
                match socket.accept() {
                    Ok((conn, _)) => {
                        worked = true;
                        accepted.push(conn);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        worked = true;
                        break; // the queue is empty
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        if let Some(e) = failed {
            // EMFILE and friends: the socket stays readable, so polling it
            // again at once would spin. Leave it to the next tick.
            self.orphan_accept_failures.warn(&e);
            self.orphans_paused_until = Some(Instant::now() + TICK);
        } else if worked {
            self.orphan_accept_failures.recovered();
        }
        // Connections nobody could take last time go first.
        let waiting = std::mem::take(&mut self.waiting);
        for conn in waiting.into_iter().chain(accepted) {
            self.pass_connection(conn);
        }
    }

    /// Sends `conn` to a healthy worker, round-robin, and keeps our copy
    /// until the worker says it took it: a worker that dies with the
    /// message still in its channel (killed, or stopped and then killed)
    /// would otherwise take a connection it never saw with it.
    fn pass_connection(&mut self, conn: socket2::Socket) {
        let now = Instant::now();
        let targets: Vec<i32> = self
            .workers
            .values()
            .filter(|w| w.slot < self.slots.len() && w.healthy(now))
            .map(|w| w.pid.as_raw())
            .collect();
        for k in 0..targets.len() {
            let pid = targets[(self.next_target + k) % targets.len()];
            let Some(w) = self.workers.get_mut(&pid) else { continue };
            if fdpass::send_with_fd(w.channel.as_fd(), MasterMsg::Conn.encode().as_bytes(), conn.as_fd()).is_ok() {
                self.next_target = self.next_target.wrapping_add(k + 1);
                w.passed.push_back(conn);
                return;
            }
        }
        // No healthy worker right now (the last one just died): hold it
        // until one is ready, as the kernel would have.
        self.waiting.push(conn);
    }

    /// A live worker other than `except` serves `slot`.
    fn slot_served(&self, slot: usize, except: Pid) -> bool {
        self.workers.values().any(|w| w.slot == slot && w.pid != except && !w.is_stopping())
    }

    /// Collects every exited child and decides what its slot does next.
    fn reap_workers(&mut self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(s) => s,
                Err(_) => return, // ECHILD: no children left.
            };
            let Some((pid, exit)) = classify_exit(status) else { return };
            let Some(mut w) = self.workers.remove(&pid.as_raw()) else { continue };
            // What it wrote before dying is still in the channel: a `took`
            // there means it had that connection, which must not be served
            // a second time by another worker.
            w.read_messages(self.cfg.graceful_timeout);
            // Connections passed to it that it never took: to someone else.
            if !w.passed.is_empty() {
                log::info!(
                    "worker {} (pid {pid}) died before taking {} passed connections; passing them on",
                    w.slot,
                    w.passed.len()
                );
            }
            for conn in std::mem::take(&mut w.passed) {
                self.pass_connection(conn);
            }
            let uptime = w.spawned.elapsed();
            let seen = ExitContext {
                stopping: w.is_stopping() || self.stopping.is_some(),
                slot_served_by_other: self.slot_served(w.slot, pid) || w.slot >= self.slots.len(),
                was_ready: !matches!(w.phase, Phase::Starting),
                uptime,
            };
            let Some(state) = self.slots.get_mut(w.slot) else { continue };
            match after_exit(exit, seen, state) {
                SlotAction::Nothing if seen.stopping => {
                    log::info!("worker {} (pid {pid}) {exit} after stopping", w.slot);
                }
                SlotAction::Nothing => {
                    // A replacement that failed (the old worker still
                    // serves), or a worker of a slot removed by SIGTTOU.
                    log::warn!("worker {} (pid {pid}, generation {}) {exit} before taking over", w.slot, w.generation);
                }
                SlotAction::Halt => log::error!("worker {} (pid {pid}) {exit}; not respawning this slot", w.slot),
                SlotAction::Respawn(delay) => {
                    log::warn!(
                        "worker {} (pid {pid}) {exit} after {:.1}s ({} connections open); respawning in {:?}",
                        w.slot,
                        uptime.as_secs_f64(),
                        w.connections,
                        delay
                    );
                }
            }
        }
    }

    /// Kills workers that stopped heartbeating, and stopping workers past
    /// their deadline.
    fn murder_workers(&mut self) {
        let now = Instant::now();
        for w in self.workers.values() {
            let reason = match w.phase {
                Phase::Stopping { deadline } if now >= deadline => "did not finish within the graceful timeout",
                Phase::Ready if now.duration_since(w.last_heartbeat) > self.cfg.worker_timeout => {
                    "sent no heartbeat within the worker timeout (a handler may block its thread)"
                }
                Phase::Starting if now.duration_since(w.spawned) > self.cfg.worker_timeout => {
                    "did not become ready within the worker timeout"
                }
                _ => continue,
            };
            log::error!(
                "worker {} (pid {}) {reason}; last heartbeat {:.1}s ago, {} connections open, {} requests served; killing it",
                w.slot,
                w.pid,
                now.duration_since(w.last_heartbeat).as_secs_f64(),
                w.connections,
                w.requests
            );
            let _ = kill(w.pid, Signal::SIGKILL);
        }
    }

    /// Queues a replacement for workers past their request or memory limit.
    fn check_recycling(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let check_memory = self.cfg.max_worker_memory > 0 && self.last_memory_check.elapsed() >= Duration::from_secs(1);
        if check_memory {
            self.last_memory_check = Instant::now();
        }
        let mut due = Vec::new();
        for w in self.workers.values_mut() {
            if w.retiring || !matches!(w.phase, Phase::Ready) || w.recycle_hold.is_some_and(|t| Instant::now() < t) {
                continue;
            }
            let reason = if w.max_requests > 0 && w.requests >= w.max_requests {
                Some(Reason::MaxRequests)
            } else if check_memory && rss_bytes(w.pid).is_some_and(|rss| rss > self.cfg.max_worker_memory) {
                Some(Reason::MaxMemory)
            } else {
                None
            };
            if let Some(reason) = reason {
                log::info!("worker {} (pid {}): {reason}; replacing it", w.slot, w.pid);
                w.retiring = true;
                due.push((w.slot, reason));
            }
        }
        self.queue.extend(due);
    }

    /// Drives replacements one slot at a time: start the new worker, wait
    /// until it is ready, then retire the old one. A new worker that fails
    /// leaves the old one serving; a failed reload is abandoned (rollback).
    fn advance_replacements(&mut self) {
        if self.stopping.is_some() {
            self.queue.clear();
            self.replacing = None;
            return;
        }
        if let Some(r) = &self.replacing {
            match self.workers.get(&r.new_pid.as_raw()).map(|w| &w.phase) {
                Some(Phase::Ready) => {
                    let (slot, new_pid, reason) = (r.slot, r.new_pid, r.reason);
                    log::info!(
                        "worker {slot}: pid {new_pid} ready after {:.0?} ({reason}); retiring the old worker",
                        r.started.elapsed()
                    );
                    let deadline = Instant::now() + self.cfg.graceful_timeout;
                    for w in self.workers.values_mut().filter(|w| w.slot == slot && w.pid != new_pid) {
                        w.stop(deadline, control::RETIRE_IDLE_GRACE);
                    }
                    self.replacing = None;
                    if reason == Reason::Reload && !self.reload_pending() {
                        log::info!("reload complete: generation {} serves every slot", self.generation);
                        notify(&[sd_notify::NotifyState::Ready]);
                    }
                }
                Some(_) => return, // still starting; murder_workers bounds the wait
                None => {
                    let (slot, reason) = (r.slot, r.reason);
                    self.replacing = None;
                    self.replacement_failed(slot, reason, "failed to become ready");
                }
            }
        }
        while self.replacing.is_none() {
            let Some((slot, reason)) = self.queue.pop_front() else { return };
            if slot >= self.slots.len() {
                continue;
            }
            match self.spawn_worker(slot) {
                Some(new_pid) => self.replacing = Some(Replacement { slot, new_pid, reason, started: Instant::now() }),
                None => self.replacement_failed(slot, reason, "could not be spawned"),
            }
        }
    }

    /// The old worker of `slot` keeps serving. A reload stops here and the
    /// slots not yet replaced keep their workers (rollback); a recycling is
    /// retried later.
    fn replacement_failed(&mut self, slot: usize, reason: Reason, why: &str) {
        log::error!("worker {slot}: replacement ({reason}) {why}; the old worker keeps serving");
        if reason == Reason::Reload {
            let skipped = self.queue.iter().filter(|(_, r)| *r == Reason::Reload).count();
            self.queue.retain(|(_, r)| *r != Reason::Reload);
            log::error!(
                "reload to generation {} rolled back: {skipped} more slots keep their workers",
                self.generation
            );
            let status = format!("reload to generation {} failed; previous workers serve", self.generation);
            notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&status)]);
        } else if let Some(old) = self.workers.values_mut().find(|w| w.slot == slot && w.retiring) {
            // Try again later, backing off like a crash loop.
            let failures = self.slots.get_mut(slot).map_or(1, |state| {
                state.failures += 1;
                state.failures
            });
            old.retiring = false;
            old.recycle_hold = Some(Instant::now() + respawn_delay(failures).max(Duration::from_secs(1)));
        }
    }

    /// Fills empty slots whose respawn time has come.
    fn manage_workers(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let now = Instant::now();
        for slot in 0..self.slots.len() {
            let state = self.slots[slot];
            let occupied = self.workers.values().any(|w| w.slot == slot && !w.is_stopping());
            if occupied || state.halted {
                continue;
            }
            if state.respawn_at.is_none_or(|t| now >= t) {
                self.spawn_worker(slot);
            }
        }
    }

    fn announce_when_ready(&mut self) {
        if self.announced || self.stopping.is_some() {
            return;
        }
        let ready = self.workers.values().filter(|w| matches!(w.phase, Phase::Ready)).count();
        let live_slots = self.slots.iter().filter(|s| !s.halted).count();
        if ready == live_slots && ready > 0 {
            self.announced = true;
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "http-cluster listening on {} ({} workers)", self.listener_names.join(" "), ready);
            let _ = out.flush();
            let status = format!("{ready} workers ready");
            notify(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::MainPid(std::process::id()),
                sd_notify::NotifyState::Status(&status),
            ]);
        }
    }

    /// SIGHUP: replace every slot's worker with one started from the
    /// program on disk now, slot by slot, each only after its successor is
    /// ready.
    fn handle_hup(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        self.generation += 1;
        self.queue.retain(|(_, r)| *r != Reason::Reload);
        let slots = self.slots.len();
        self.queue.extend((0..slots).map(|s| (s, Reason::Reload)));
        for state in &mut self.slots {
            // A reload is also the way to retry slots halted by a boot error.
            state.halted = false;
            state.failures = 0;
        }
        log::info!("SIGHUP: reloading {slots} workers to generation {}", self.generation);
        // systemd (Type=notify-reload, or ExecReload with Type=notify) waits
        // for READY=1 again, sent when the reload completes or rolls back.
        match sd_notify::NotifyState::monotonic_usec_now() {
            Ok(now) => notify(&[sd_notify::NotifyState::Reloading, now]),
            Err(_) => notify(&[sd_notify::NotifyState::Reloading]),
        }
    }

    /// SIGTTIN: one more worker.
    fn handle_ttin(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        self.slots.push(SlotState { awaiting_first_worker: true, ..SlotState::default() });
        log::info!("SIGTTIN: scaling up to {} workers", self.slots.len());
    }

    /// SIGTTOU: one worker fewer (never below one); the removed worker
    /// drains first.
    fn handle_ttou(&mut self) {
        if self.stopping.is_some() || self.slots.len() <= 1 {
            return;
        }
        self.slots.pop();
        let removed = self.slots.len();
        // A replacement under way for the removed slot is moot.
        let reloading = self.reload_pending();
        self.queue.retain(|(slot, _)| *slot != removed);
        if self.replacing.as_ref().is_some_and(|r| r.slot == removed) {
            self.replacing = None;
        }
        if reloading && !self.reload_pending() {
            // The reload's last slot was the one removed: it is complete.
            notify(&[sd_notify::NotifyState::Ready]);
        }
        let deadline = Instant::now() + self.cfg.graceful_timeout;
        for w in self.workers.values_mut().filter(|w| w.slot == removed) {
            w.stop(deadline, control::RETIRE_IDLE_GRACE);
        }
        log::info!("SIGTTOU: scaling down to {} workers", self.slots.len());
    }

    fn handle_stop(&mut self, signal: &str, grace: Duration) {
        if self.stopping.is_some() {
            if grace.is_zero() {
                log::info!("{signal}: stopping now");
                for w in self.workers.values() {
                    let _ = kill(w.pid, Signal::SIGKILL);
                }
            }
            return;
        }
        let deadline = Instant::now() + grace;
        self.stopping = Some(deadline);
        notify(&[sd_notify::NotifyState::Stopping]);
        // Nobody will accept again: the listening sockets close now (the
        // workers close their copies as their accept loops end), so new
        // clients are refused at once and can go elsewhere, instead of
        // queueing in a backlog that is reset when we exit. Under socket
        // activation systemd keeps its own copy, and the queue.
        self.slot_sockets.clear();
        self.listeners.clear();
        if grace.is_zero() {
            log::info!("{signal}: fast stop");
            for w in self.workers.values() {
                let _ = kill(w.pid, Signal::SIGKILL);
            }
        } else {
            log::info!("{signal}: graceful stop, up to {grace:?}");
            for w in self.workers.values_mut() {
                w.stop(deadline, Duration::ZERO);
            }
        }
    }

    /// A reload is queued or under way.
    fn reload_pending(&self) -> bool {
        self.queue.iter().any(|(_, r)| *r == Reason::Reload)
            || self.replacing.as_ref().is_some_and(|r| r.reason == Reason::Reload)
    }

    /// SIGUSR1: workers reopen their access log (after logrotate moved it).
    fn handle_reopen(&mut self) {
        log::info!("SIGUSR1: workers reopen their log files");
        for w in self.workers.values_mut().filter(|w| !w.is_stopping()) {
            let _ = w.channel.write_all(MasterMsg::Reopen.encode().as_bytes());
        }
    }

    /// What `http-cluster status` shows.
    fn status(&self) -> Status {
        let now = Instant::now();
        let workers = self
            .workers
            .values()
            .map(|w| WorkerStatus {
                slot: w.slot,
                pid: w.pid.as_raw(),
                generation: w.generation,
                phase: match w.phase {
                    Phase::Starting => "starting",
                    Phase::Ready => "ready",
                    Phase::Stopping { .. } => "stopping",
                }
                .to_string(),
                uptime_secs: now.duration_since(w.spawned).as_secs_f64(),
                connections: w.connections,
                requests: w.requests,
                rss_bytes: rss_bytes(w.pid),
                last_heartbeat_secs: now.duration_since(w.last_heartbeat).as_secs_f64(),
            })
            .collect();
        let state = if self.stopping.is_some() {
            "stopping"
        } else if self.replacing.is_some() || !self.queue.is_empty() {
            "replacing workers"
        } else if self.announced {
            "ready"
        } else {
            "starting"
        };
        Status {
            master_pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            generation: self.generation,
            listeners: self.listener_names.clone(),
            state: state.to_string(),
            workers,
        }
    }

    /// `Some(code)` when the master should exit.
    fn check_done(&mut self) -> Result<Option<i32>, MasterError> {
        if self.stopping.is_some() {
            return Ok(self.workers.is_empty().then_some(0));
        }
        if self.workers.is_empty() && self.slots.iter().all(|s| s.halted) {
            return Err(MasterError::WorkersCannotBoot);
        }
        Ok(None)
    }
}

impl Worker {
    /// A worker just started in `slot`, its channel non-blocking.
    fn new(slot: usize, pid: Pid, channel: UnixStream) -> Worker {
        let now = Instant::now();
        Worker {
            slot,
            generation: 0,
            max_requests: 0,
            retiring: false,
            recycle_hold: None,
            passed: VecDeque::new(),
            pid,
            channel,
            lines: LineBuffer::default(),
            phase: Phase::Starting,
            spawned: now,
            last_heartbeat: now,
            connections: 0,
            requests: 0,
        }
    }

    fn handle_message(&mut self, line: &[u8], graceful_timeout: Duration) {
        match WorkerMsg::parse(line) {
            Some(WorkerMsg::Ready) => {
                if let Phase::Starting = self.phase {
                    log::info!("worker {} (pid {}) ready in {:.0?}", self.slot, self.pid, self.spawned.elapsed());
                    self.phase = Phase::Ready;
                }
                self.last_heartbeat = Instant::now();
            }
            Some(WorkerMsg::Heartbeat { connections, requests }) => {
                self.last_heartbeat = Instant::now();
                self.connections = connections;
                self.requests = requests;
            }
            Some(WorkerMsg::Took) => {
                // It holds its own descriptor now; ours can go.
                self.passed.pop_front();
            }
            Some(WorkerMsg::Draining) => {
                if !self.is_stopping() {
                    log::info!("worker {} (pid {}) drains on its own; replacing it", self.slot, self.pid);
                    self.phase = Phase::Stopping { deadline: Instant::now() + graceful_timeout };
                }
            }
            None => log::warn!(
                "worker {} (pid {}): unknown message {:?}",
                self.slot,
                self.pid,
                String::from_utf8_lossy(line)
            ),
        }
    }

    /// Handles every complete message waiting in the channel.
    fn read_messages(&mut self, graceful_timeout: Duration) {
        let mut buf = [0u8; 512];
        loop {
            match self.channel.read(&mut buf) {
                Ok(0) => break, // EOF: the exit is seen by reap_workers.
                Ok(n) => match self.lines.feed(&buf[..n]) {
                    Ok(lines) => {
                        for line in lines {
                            self.handle_message(&line, graceful_timeout);
                        }
                    }
                    Err(control::LineTooLong) => {
                        log::error!("worker {} (pid {}): garbage on its channel; killing it", self.slot, self.pid);
                        let _ = kill(self.pid, Signal::SIGKILL);
                        break;
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break, // WouldBlock (nothing more) or a dead peer.
            }
        }
    }

    fn stop(&mut self, deadline: Instant, idle_grace: Duration) {
        if self.is_stopping() {
            return;
        }
        self.phase = Phase::Stopping { deadline };
        let msg = MasterMsg::Stop { idle_grace }.encode();
        match self.channel.write_all(msg.as_bytes()) {
            Ok(()) => {}
            // The channel is full (a burst of passed connections, or a
            // worker slow to read it): SIGTERM, which a worker takes as
            // the same graceful drain, not a kill mid-request.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let _ = kill(self.pid, Signal::SIGTERM);
            }
            // It is already gone or going; reap_workers will see it.
            Err(_) => {
                let _ = kill(self.pid, Signal::SIGKILL);
            }
        }
    }
}

/// The request count after which a worker is recycled: `max` plus a
/// pseudo-random share of `jitter`, so workers started together do not all
/// restart together.
pub fn recycle_after(max: u64, jitter: u64, seed: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    if jitter == 0 {
        return max;
    }
    // splitmix64: enough spread for this, no dependency.
    let mut z = seed.wrapping_add(std::process::id() as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    // Saturating: --max-requests and the jitter are anyone's u64s, and a
    // sum that wrapped would recycle workers after a handful of requests.
    max.saturating_add(z % jitter.saturating_add(1))
}

/// A spawn error that retrying cannot fix: the program is missing, not
/// executable, or not a format the kernel runs. (Out of processes, memory
/// or descriptors may pass.)
fn spawn_error_is_permanent(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied)
        || e.raw_os_error() == Some(nix::libc::ENOEXEC)
}

/// Resident memory of `pid`, from /proc/PID/statm.
fn rss_bytes(pid: Pid) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // The kernel's page size, not 4 KiB: arm64 kernels may use 64 KiB.
    // SAFETY: sysconf only reads a system setting; it has no preconditions.
    let page = unsafe { nix::libc::sysconf(nix::libc::_SC_PAGESIZE) };
    Some(pages.saturating_mul(u64::try_from(page).ok()?))
}

/// Tells systemd (when it started us with `Type=notify`) about the
/// service's state; a no-op otherwise.
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        log::warn!("sd_notify: {e}");
    }
}

/// Starts one worker process with the channel on its fd 3 and hands it the
/// listening sockets, one message each, in `--bind` order.
fn start_worker(cfg: &MasterConfig, listeners: &[socket2::Socket], slot: usize) -> io::Result<Worker> {
    let (ours, theirs) = UnixStream::pair()?;
    let mut cmd = Command::new(&cfg.command.program);
    cmd.args(&cfg.command.args)
        .envs(cfg.limits.to_env())
        .env("HTTP_CLUSTER_SLOT", slot.to_string())
        .env(crate::worker::GRACEFUL_TIMEOUT_ENV, format!("{}ms", cfg.graceful_timeout.as_millis()))
        .env(crate::worker::LISTENERS_ENV, listeners.len().to_string())
        .envs(cfg.log_level.as_ref().map(|l| (crate::logging::LEVEL_ENV, l)))
        // systemd's variables are for the master only: a worker must not
        // report readiness or take fds 3.. as sockets.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES");
    // A worker built with this library raises the limit again itself; any
    // other program (one using select(), say) gets what it would have had.
    net::with_starting_open_file_limit(&mut cmd);
    let child_end = theirs.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (dup2, fcntl, sigprocmask); it does
    // not allocate or take locks.
    unsafe {
        cmd.pre_exec(move || {
            let placed = if child_end == CHANNEL_FD {
                // Already in place; only drop close-on-exec.
                nix::libc::fcntl(CHANNEL_FD, nix::libc::F_SETFD, 0)
            } else {
                // dup2 clears close-on-exec on the new descriptor.
                nix::libc::dup2(child_end, CHANNEL_FD)
            };
            if placed < 0 {
                return Err(io::Error::last_os_error());
            }
            // The master blocks the signals it reads from its signalfd; a
            // worker must start with the default mask.
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(theirs);
    let pid = Pid::from_raw(child.id() as i32);
    // The child is reaped with waitpid in reap_workers; dropping the handle
    // neither waits nor kills.
    drop(child);
    // A worker that dies before taking the socket (EPIPE here) is still a
    // process to reap: its exit code says why, so it is tracked like any.
    for listener in listeners {
        if let Err(e) = fdpass::send_fd(ours.as_fd(), fdpass::LISTENER_PAYLOAD, listener.as_fd()) {
            log::warn!("worker {slot} (pid {pid}): could not hand over its sockets: {e}");
            break;
        }
    }
    ours.set_nonblocking(true)?;
    Ok(Worker::new(slot, pid, ours))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stop that finds the worker's channel full asks for the same
    /// graceful drain by SIGTERM; only a dead channel means SIGKILL.
    #[test]
    fn stop_on_a_full_channel_is_a_sigterm_not_a_kill() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let (ours, _theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        // Fill the channel: nobody reads `_theirs`.
        let filler = [b'x'; 4096];
        while (&ours).write(&filler).is_ok() {}
        let mut worker = Worker::new(0, pid, ours);
        worker.phase = Phase::Ready;
        worker.stop(Instant::now() + Duration::from_secs(30), Duration::ZERO);
        assert!(worker.is_stopping());
        let status = child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(nix::libc::SIGTERM));
    }

    #[test]
    fn exit_statuses_are_classified() {
        let pid = Pid::from_raw(42);
        assert_eq!(classify_exit(WaitStatus::Exited(pid, 0)), Some((pid, Exit::Clean)));
        assert_eq!(classify_exit(WaitStatus::Exited(pid, 3)), Some((pid, Exit::BootFailure(3))));
        assert_eq!(classify_exit(WaitStatus::Exited(pid, 4)), Some((pid, Exit::BootFailure(4))));
        assert_eq!(classify_exit(WaitStatus::Exited(pid, 101)), Some((pid, Exit::Failed(101))));
        assert_eq!(
            classify_exit(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some((pid, Exit::Signaled(Signal::SIGKILL)))
        );
        assert_eq!(classify_exit(WaitStatus::StillAlive), None);
        assert_eq!(classify_exit(WaitStatus::Stopped(pid, Signal::SIGSTOP)), None);
    }

    fn seen(uptime_s: u64) -> ExitContext {
        ExitContext {
            stopping: false,
            slot_served_by_other: false,
            was_ready: true,
            uptime: Duration::from_secs(uptime_s),
        }
    }

    #[test]
    fn a_crash_respawns_at_once_then_backs_off() {
        let mut slot = SlotState::default();
        assert_eq!(
            after_exit(Exit::Signaled(Signal::SIGKILL), seen(1), &mut slot),
            SlotAction::Respawn(Duration::ZERO)
        );
        assert_eq!(after_exit(Exit::Failed(1), seen(1), &mut slot), SlotAction::Respawn(Duration::from_millis(100)));
        assert_eq!(after_exit(Exit::Failed(1), seen(1), &mut slot), SlotAction::Respawn(Duration::from_millis(200)));
        assert!(slot.respawn_at.is_some() && !slot.halted);
        // A worker that ran long enough starts the count afresh.
        assert_eq!(after_exit(Exit::Failed(1), seen(60), &mut slot), SlotAction::Respawn(Duration::ZERO));
        assert_eq!(slot.failures, 1);
    }

    #[test]
    fn a_boot_failure_halts_the_slot_only_before_ready() {
        let mut slot = SlotState::default();
        let booting = ExitContext { was_ready: false, ..seen(0) };
        assert_eq!(after_exit(Exit::BootFailure(3), booting, &mut slot), SlotAction::Halt);
        assert!(slot.halted);
        // Exit code 3 from a worker that had been serving is a crash.
        let mut slot = SlotState::default();
        assert_eq!(after_exit(Exit::BootFailure(3), seen(5), &mut slot), SlotAction::Respawn(Duration::ZERO));
        // Any other early exit is retried with backoff.
        let mut slot = SlotState::default();
        assert_eq!(after_exit(Exit::Failed(1), booting, &mut slot), SlotAction::Respawn(Duration::ZERO));
    }

    #[test]
    fn expected_exits_and_failed_replacements_leave_the_slot_alone() {
        let mut slot = SlotState::default();
        let stopping = ExitContext { stopping: true, ..seen(5) };
        assert_eq!(after_exit(Exit::Signaled(Signal::SIGKILL), stopping, &mut slot), SlotAction::Nothing);
        let replaced = ExitContext { slot_served_by_other: true, was_ready: false, ..seen(0) };
        assert_eq!(after_exit(Exit::BootFailure(3), replaced, &mut slot), SlotAction::Nothing);
        assert!(!slot.halted, "a failed replacement must not halt a slot the old worker still serves");
        assert_eq!((slot.failures, slot.respawn_at), (0, None));
    }

    #[test]
    fn recycling_limits_spread_within_the_jitter() {
        assert_eq!(recycle_after(0, 100, 1), 0, "0 disables recycling");
        assert_eq!(recycle_after(1000, 0, 1), 1000);
        let limits: Vec<u64> = (0..64).map(|seed| recycle_after(1000, 100, seed)).collect();
        assert!(limits.iter().all(|&l| (1000..=1100).contains(&l)));
        let distinct: std::collections::HashSet<_> = limits.iter().collect();
        assert!(distinct.len() > 16, "jitter spreads workers apart: {limits:?}");
        // Extreme settings neither panic nor wrap to a tiny limit.
        assert!(recycle_after(5, u64::MAX, 7) >= 5);
        assert_eq!(recycle_after(u64::MAX, 10, 7), u64::MAX);
    }

    #[test]
    fn respawn_backoff_starts_immediate_and_is_capped() {
        assert_eq!(respawn_delay(1), Duration::ZERO);
        assert_eq!(respawn_delay(2), Duration::from_millis(100));
        assert_eq!(respawn_delay(3), Duration::from_millis(200));
        assert_eq!(respawn_delay(5), Duration::from_millis(800));
        assert_eq!(respawn_delay(50), Duration::from_secs(10));
        let mut prev = Duration::ZERO;
        for n in 1..40 {
            assert!(respawn_delay(n) >= prev);
            prev = respawn_delay(n);
        }
    }
}
