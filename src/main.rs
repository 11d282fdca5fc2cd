//! `http-cluster`: the master binary. `http-cluster status` asks a running
//! master for its workers; `http-cluster worker` (hidden) is the worker
//! mode that serves the built-in app.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use http_cluster::config::{Limits, parse_duration};
use http_cluster::listen::ListenAddr;
use http_cluster::master::{self, Balance, MasterConfig, WorkerCommand};

/// A pre-fork HTTP/1.1 server: the master listens, per-core workers accept.
#[derive(Parser, Debug)]
#[command(
    name = "http-cluster",
    version,
    about,
    after_help = "Every option can also be set as an environment variable (shown in brackets).\n\n\
Examples:\n  http-cluster --bind 127.0.0.1:8080\n  http-cluster --bind [::1]:8080 --bind unix:/run/app.sock -- target/release/hello\n  \
http-cluster status --json"
)]
struct Cli {
    /// Where to listen; repeat for several listeners: `HOST:PORT`,
    /// `[IPV6]:PORT`, or `unix:PATH`. Port 0 picks a free port. Ignored
    /// under systemd socket activation (LISTEN_FDS).
    #[arg(
        long,
        env = "HTTP_CLUSTER_BIND",
        default_value = "127.0.0.1:8080",
        value_delimiter = ',',
        help_heading = "Listening"
    )]
    bind: Vec<String>,

    /// How connections are spread over workers: `reuseport` (one
    /// SO_REUSEPORT socket per worker slot, spread by hash; the master serves
    /// the queue of a slot whose worker is down or stalled) or `shared` (one
    /// socket; the kernel wakes the worker that waited last, so keep-alive
    /// load piles up on one worker: 1.2-1.55x its fair share at wrk -c64 in
    /// our runs, against 1.03x).
    #[arg(long, env = "HTTP_CLUSTER_BALANCE", value_enum, default_value = "reuseport", help_heading = "Listening")]
    balance: Balance,

    /// File mode of Unix listening sockets, in octal (who may connect).
    #[arg(long, env = "HTTP_CLUSTER_UNIX_MODE", default_value = "660", value_parser = parse_mode, help_heading = "Listening")]
    unix_mode: u32,

    /// Pending connections the kernel queues (capped by net.core.somaxconn).
    #[arg(long, env = "HTTP_CLUSTER_BACKLOG", default_value_t = 1024, help_heading = "Listening")]
    backlog: i32,

    /// How long the kernel holds a new TCP connection until its first bytes
    /// arrive before a worker accepts it (TCP_DEFER_ACCEPT; 0 turns it
    /// off). HTTP clients send their request at once, so a worker wakes
    /// once per connection instead of twice: a third less server CPU per
    /// request under Connection: close load on loopback. A client silent
    /// this long is then accepted and the head timeout starts; the kernel
    /// rounds the time up to its SYN-ACK retransmissions (1, 3, 7, 15, 31,
    /// 63 s). Whole seconds, at most 60. Under socket activation,
    /// DeferAcceptSec= of the .socket unit applies instead.
    #[arg(long, env = "HTTP_CLUSTER_DEFER_ACCEPT", default_value = "1s", value_parser = parse_defer_accept, help_heading = "Listening")]
    defer_accept: u32,

    /// Worker processes [default: CPUs this process may run on].
    #[arg(long, env = "HTTP_CLUSTER_WORKERS", help_heading = "Workers")]
    workers: Option<usize>,

    /// On SIGTERM, how long workers may take to finish in-flight requests.
    #[arg(long, env = "HTTP_CLUSTER_GRACEFUL_TIMEOUT", default_value = "30s", value_parser = parse_duration, help_heading = "Workers")]
    graceful_timeout: Duration,

    /// A worker that sends no heartbeat for this long is killed and replaced.
    /// At least 2 s: heartbeats come every 0.5 s, a little late under load.
    #[arg(long, env = "HTTP_CLUSTER_WORKER_TIMEOUT", default_value = "30s", value_parser = parse_worker_timeout, help_heading = "Workers")]
    worker_timeout: Duration,

    /// Recycle a worker after it served this many requests (0: never); its
    /// replacement is started and ready first.
    #[arg(long, env = "HTTP_CLUSTER_MAX_REQUESTS", default_value_t = 0, help_heading = "Workers")]
    max_requests: u64,

    /// Add up to this many requests to --max-requests, per worker, so
    /// workers do not all recycle at once.
    #[arg(long, env = "HTTP_CLUSTER_MAX_REQUESTS_JITTER", default_value_t = 0, help_heading = "Workers")]
    max_requests_jitter: u64,

    /// Recycle a worker whose resident memory exceeds this many bytes (0: never).
    #[arg(long, env = "HTTP_CLUSTER_MAX_WORKER_MEMORY", default_value_t = 0, help_heading = "Workers")]
    max_worker_memory: u64,

    /// Control socket for `http-cluster status` [default: $XDG_RUNTIME_DIR/http-cluster.sock,
    /// else /tmp/http-cluster-UID.sock]. `none` disables it.
    #[arg(long, env = "HTTP_CLUSTER_CONTROL_SOCKET", value_name = "PATH", help_heading = "Operations")]
    control_socket: Option<PathBuf>,

    /// Log level of the lifecycle logs on stderr (error, warn, info, debug,
    /// trace, or an env_logger filter); `RUST_LOG` is used when unset.
    #[arg(long, env = "HTTP_CLUSTER_LOG_LEVEL", value_name = "LEVEL", help_heading = "Logging")]
    log_level: Option<String>,

    #[command(flatten)]
    limits: Limits,

    /// Worker program and its arguments (default: the built-in app). It gets
    /// the listening socket on fd 3.
    #[arg(last = true, value_name = "PROGRAM ARGS")]
    command: Vec<OsString>,
}

/// `http-cluster status`: what a running master's workers are doing.
#[derive(Parser, Debug)]
#[command(name = "http-cluster status")]
struct StatusCli {
    /// The master's control socket (its --control-socket).
    #[arg(long, env = "HTTP_CLUSTER_CONTROL_SOCKET", value_name = "PATH")]
    control_socket: Option<PathBuf>,

    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    match std::env::args_os().nth(1) {
        Some(a) if a == "worker" => http_cluster::worker::run(http_cluster::builtin::app),
        Some(a) if a == "status" => return status(StatusCli::parse_from(std::env::args_os().skip(1))),
        _ => {}
    }
    let cli = Cli::parse();
    http_cluster::logging::init("master", cli.log_level.as_deref());
    let cfg = match config_from(cli) {
        Ok(cfg) => cfg,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(2);
        }
    };
    match master::run(cfg) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn status(cli: StatusCli) -> ExitCode {
    let path = control_path(cli.control_socket).unwrap_or_else(http_cluster::status::default_path);
    match http_cluster::status::query(&path) {
        Ok(s) if cli.json => {
            println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(s) => {
            print!("{}", http_cluster::status::render(&s));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("http-cluster status: cannot reach a master at {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// `none` disables the control socket; unset means the default path.
fn control_path(arg: Option<PathBuf>) -> Option<PathBuf> {
    match arg {
        Some(p) if p.as_os_str() == "none" => None,
        Some(p) => Some(p),
        None => Some(http_cluster::status::default_path()),
    }
}

/// `--worker-timeout`: a duration of at least 2 s. Heartbeats come every
/// 0.5 s; a shorter timeout would kill healthy workers, and 0 every worker
/// before it finished booting, in an endless loop.
fn parse_worker_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(2) {
        return Err("expected at least 2s (heartbeats come every 0.5 s)".to_string());
    }
    Ok(d)
}

/// Whole seconds (a fraction rounds up: the kernel counts in seconds).
fn parse_defer_accept(s: &str) -> Result<u32, String> {
    let d = parse_duration(s)?;
    if d > Duration::from_secs(60) {
        return Err("expected at most 60s".to_string());
    }
    Ok(d.as_secs_f64().ceil() as u32)
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal file mode like 660"))
}

fn config_from(cli: Cli) -> Result<MasterConfig, String> {
    let binds = cli.bind.iter().map(|b| ListenAddr::parse(b)).collect::<Result<Vec<_>, _>>()?;
    let workers = cli.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    let command = match cli.command.split_first() {
        Some((program, args)) => WorkerCommand { program: PathBuf::from(program), args: args.to_vec() },
        None => {
            // Resolved once at start: a reload later runs whatever binary is
            // at this path then (not /proc/self/exe, which would pin the old
            // inode).
            let program = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
            WorkerCommand { program, args: vec!["worker".into()] }
        }
    };
    Ok(MasterConfig {
        binds,
        unix_mode: cli.unix_mode,
        control_socket: control_path(cli.control_socket),
        log_level: cli.log_level,
        balance: cli.balance,
        workers,
        graceful_timeout: cli.graceful_timeout,
        worker_timeout: cli.worker_timeout,
        command,
        limits: cli.limits,
        backlog: cli.backlog,
        defer_accept_secs: cli.defer_accept,
        max_requests: cli.max_requests,
        max_requests_jitter: cli.max_requests_jitter,
        max_worker_memory: cli.max_worker_memory,
    })
}
