//! `http-cluster`: the master binary. `http-cluster worker` (hidden) is the
//! worker mode that serves the built-in app.

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use http_cluster::config::{Limits, parse_duration};
use http_cluster::master::{self, MasterConfig, WorkerCommand};

/// A pre-fork HTTP/1.1 server: the master listens, per-core workers accept.
#[derive(Parser, Debug)]
#[command(
    name = "http-cluster",
    version,
    about,
    after_help = "Examples:\n  http-cluster --bind 127.0.0.1:8080\n  http-cluster --workers 4 -- target/release/hello"
)]
struct Cli {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "HTTP_CLUSTER_BIND", default_value = "127.0.0.1:8080", help_heading = "Listening")]
    bind: String,

    /// Pending connections the kernel queues (capped by net.core.somaxconn).
    #[arg(long, env = "HTTP_CLUSTER_BACKLOG", default_value_t = 1024, help_heading = "Listening")]
    backlog: i32,

    /// Worker processes [default: CPUs this process may run on].
    #[arg(long, env = "HTTP_CLUSTER_WORKERS", help_heading = "Workers")]
    workers: Option<usize>,

    /// On SIGTERM, how long workers may take to finish in-flight requests.
    #[arg(long, env = "HTTP_CLUSTER_GRACEFUL_TIMEOUT", default_value = "30s", value_parser = parse_duration, help_heading = "Workers")]
    graceful_timeout: Duration,

    /// A worker that sends no heartbeat for this long is killed and replaced.
    #[arg(long, env = "HTTP_CLUSTER_WORKER_TIMEOUT", default_value = "30s", value_parser = parse_duration, help_heading = "Workers")]
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

    #[command(flatten)]
    limits: Limits,

    /// Worker program and its arguments (default: the built-in app). It gets
    /// the listening socket on fd 3.
    #[arg(last = true, value_name = "PROGRAM ARGS")]
    command: Vec<OsString>,
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "worker") {
        http_cluster::worker::run(http_cluster::builtin::app);
    }
    let cli = Cli::parse();
    http_cluster::logging::init("master");
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

fn config_from(cli: Cli) -> Result<MasterConfig, String> {
    let bind: SocketAddr = cli
        .bind
        .to_socket_addrs()
        .map_err(|e| format!("--bind {}: {e}", cli.bind))?
        .next()
        .ok_or_else(|| format!("--bind {}: no address", cli.bind))?;
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
        bind,
        workers,
        graceful_timeout: cli.graceful_timeout,
        worker_timeout: cli.worker_timeout,
        command,
        limits: cli.limits,
        backlog: cli.backlog,
        max_requests: cli.max_requests,
        max_requests_jitter: cli.max_requests_jitter,
        max_worker_memory: cli.max_worker_memory,
    })
}
