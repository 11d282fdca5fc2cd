//! Every limit and timeout of the server, each a named setting with a safe
//! default, and the other settings a worker applies to its connections.
//!
//! The master parses these from its command line (or `HTTP_CLUSTER_*`
//! environment variables) and hands them to every worker program through the
//! same environment variables, so an external worker built with this library
//! runs with exactly the limits the operator gave the master.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser};

/// Upper bound for `--max-headers`: the head parser keeps its header slots on
/// the coroutine stack, so the count is capped at compile time.
pub const MAX_HEADERS_CAP: usize = 256;

/// Limits a worker applies to every connection and request.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
#[command(next_help_heading = "HTTP limits")]
pub struct Limits {
    /// Longest request line (method, target, version) in bytes; longer is
    /// answered 414. 8 KiB, like nginx's large header buffer, fits any
    /// real-world URL. At most 1 MiB, like the head that holds it.
    #[arg(long, env = "HTTP_CLUSTER_MAX_REQUEST_LINE", default_value_t = 8 * 1024,
          value_parser = parse_head_bytes)]
    pub max_request_line: usize,

    /// Largest request head (request line plus headers) in bytes; larger is
    /// answered 431. 16 KiB is Node's default and twice what browsers send
    /// with heavy cookies; it bounds the memory one connection pins. At
    /// most 1 MiB (offsets into a head are stored in 32 bits, and a
    /// connection's read buffer is sized for a whole head).
    #[arg(long, env = "HTTP_CLUSTER_MAX_HEAD_BYTES", default_value_t = 16 * 1024,
          value_parser = parse_head_bytes)]
    pub max_head_bytes: usize,

    /// Most header fields in one request; more is answered 431. Apache's
    /// default of 100; capped at 256.
    #[arg(long, env = "HTTP_CLUSTER_MAX_HEADERS", default_value_t = 100,
          value_parser = clap::value_parser!(u16).range(1..=MAX_HEADERS_CAP as i64))]
    pub max_headers: u16,

    /// Largest request body in bytes, checked against Content-Length before
    /// any of it is read and counted for chunked bodies; larger is answered
    /// 413. Bodies stream through handlers and are never buffered whole, so
    /// the default is generous (1 GiB); lower it for APIs.
    #[arg(long, env = "HTTP_CLUSTER_MAX_BODY_BYTES", default_value_t = 1 << 30)]
    pub max_body_bytes: u64,

    /// Most bytes of chunk extensions (`;name=value` after chunk sizes) in
    /// one body, all chunks together. Nobody uses extensions; the bound
    /// stops a client from sending more framing than data.
    #[arg(long, env = "HTTP_CLUSTER_MAX_CHUNK_EXT_BYTES", default_value_t = 4096)]
    pub max_chunk_ext_bytes: usize,

    /// Largest trailer section of a chunked body in bytes (trailers are
    /// parsed and discarded).
    #[arg(long, env = "HTTP_CLUSTER_MAX_TRAILER_BYTES", default_value_t = 8 * 1024)]
    pub max_trailer_bytes: usize,

    /// Requests served on one connection before it is closed (0: no limit).
    /// Bounds how long one client can pin a worker; high enough that
    /// keep-alive clients reconnect rarely.
    #[arg(long, env = "HTTP_CLUSTER_MAX_REQUESTS_PER_CONN", default_value_t = 100_000)]
    pub max_requests_per_conn: u64,

    /// Request body bytes the server reads and discards when a handler
    /// answers without reading the body, to keep the connection alive for the
    /// next request; a larger unread body closes the connection instead.
    #[arg(long, env = "HTTP_CLUSTER_MAX_DRAIN_BYTES", default_value_t = 64 * 1024)]
    pub max_drain_bytes: u64,

    /// Time allowed to receive a whole request head (slowloris defence);
    /// past it the client gets a 408. A connection's first request counts
    /// from accept (a PROXY header included; the master's --defer-accept
    /// has the kernel hold a connection until its first bytes, by default
    /// for about 1 s at most), later ones from their first byte.
    #[arg(long, env = "HTTP_CLUSTER_HEAD_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub head_timeout: Duration,

    /// How long an idle keep-alive connection is kept open. 75 s (nginx's
    /// default) outlasts the 60 s idle timeout of common load balancers, so
    /// the balancer, not this server, closes idle upstream connections and
    /// never sends a request onto a connection we are closing.
    #[arg(long, env = "HTTP_CLUSTER_IDLE_TIMEOUT", default_value = "75s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Longest wait for the next bytes of a request body.
    #[arg(long, env = "HTTP_CLUSTER_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// Longest a write may stall (client not reading) before the connection
    /// is dropped.
    #[arg(long, env = "HTTP_CLUSTER_WRITE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// An idle keep-alive connection quiet this long gives up its coroutine
    /// and buffers: the worker watches its socket with a small record
    /// instead (under 1 KiB, against 16 KiB for a parked coroutine), and
    /// calls the handler again on another coroutine when the next request
    /// arrives. So the handler's `for req in read` loop also ends at such a
    /// pause. 0 keeps every connection on one coroutine and one handler
    /// call for its whole life (for handlers that keep per-connection state
    /// between requests).
    #[arg(long, env = "HTTP_CLUSTER_PARK_IDLE_AFTER", default_value = "1s", value_parser = parse_duration,
          help_heading = "Connections")]
    pub park_idle_after: Duration,

    /// Every connection starts with a HAProxy PROXY protocol header (v1 or
    /// v2) from the load balancer in front; handlers see the client address
    /// it carries. Connections without a valid header are closed. Enable
    /// only behind a proxy that sends it: anyone else could forge addresses.
    #[arg(long, env = "HTTP_CLUSTER_PROXY_PROTOCOL", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", help_heading = "Connections")]
    pub proxy_protocol: bool,

    /// Access log in the combined log format: a file path, or `-` for
    /// stdout. Each worker buffers its lines and writes them at least twice
    /// a second; SIGUSR1 to the master reopens the file (logrotate).
    #[arg(long, env = "HTTP_CLUSTER_ACCESS_LOG", value_name = "PATH|-", help_heading = "Logging")]
    pub access_log: Option<String>,
}

impl Default for Limits {
    fn default() -> Self {
        // The clap defaults are the single source of the default values;
        // the environment is ignored here.
        use clap::{CommandFactory, FromArgMatches};
        let cmd = LimitsFromEnv::command().mut_args(|a| a.env(None::<&str>));
        let matches = cmd.try_get_matches_from(Vec::<String>::new()).expect("defaults parse");
        LimitsFromEnv::from_arg_matches(&matches).expect("defaults are valid").limits
    }
}

/// A parser that reads only `HTTP_CLUSTER_*` variables (and defaults): what a
/// worker process does at start.
#[derive(Parser, Debug)]
#[command(no_binary_name = true)]
struct LimitsFromEnv {
    #[command(flatten)]
    limits: Limits,
}

impl LimitsFromEnv {
    fn parse_from_env_only(env: impl Iterator<Item = (String, String)>) -> Result<LimitsFromEnv, clap::Error> {
        // clap reads the process environment; a custom set is applied by
        // turning it into arguments, which take precedence over env.
        let args: Vec<String> = env
            .filter_map(|(k, v)| {
                let flag = k.strip_prefix("HTTP_CLUSTER_")?.to_ascii_lowercase().replace('_', "-");
                Some(format!("--{flag}={v}"))
            })
            .collect();
        LimitsFromEnv::try_parse_from(args)
    }
}

impl Limits {
    /// Limits from the `HTTP_CLUSTER_*` environment variables, defaults for
    /// those unset. Used by worker processes.
    pub fn from_env() -> Result<Limits, clap::Error> {
        LimitsFromEnv::parse_from_env_only(std::iter::empty()).map(|p| p.limits)
    }

    /// The environment variables that reproduce these limits in a worker.
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("HTTP_CLUSTER_MAX_REQUEST_LINE", self.max_request_line.to_string()),
            ("HTTP_CLUSTER_MAX_HEAD_BYTES", self.max_head_bytes.to_string()),
            ("HTTP_CLUSTER_MAX_HEADERS", self.max_headers.to_string()),
            ("HTTP_CLUSTER_MAX_BODY_BYTES", self.max_body_bytes.to_string()),
            ("HTTP_CLUSTER_MAX_CHUNK_EXT_BYTES", self.max_chunk_ext_bytes.to_string()),
            ("HTTP_CLUSTER_MAX_TRAILER_BYTES", self.max_trailer_bytes.to_string()),
            ("HTTP_CLUSTER_MAX_REQUESTS_PER_CONN", self.max_requests_per_conn.to_string()),
            ("HTTP_CLUSTER_MAX_DRAIN_BYTES", self.max_drain_bytes.to_string()),
            ("HTTP_CLUSTER_HEAD_TIMEOUT", DurationArg(self.head_timeout).to_string()),
            ("HTTP_CLUSTER_IDLE_TIMEOUT", DurationArg(self.idle_timeout).to_string()),
            ("HTTP_CLUSTER_BODY_TIMEOUT", DurationArg(self.body_timeout).to_string()),
            ("HTTP_CLUSTER_WRITE_TIMEOUT", DurationArg(self.write_timeout).to_string()),
            ("HTTP_CLUSTER_PARK_IDLE_AFTER", DurationArg(self.park_idle_after).to_string()),
            ("HTTP_CLUSTER_PROXY_PROTOCOL", self.proxy_protocol.to_string()),
        ];
        if let Some(path) = &self.access_log {
            env.push(("HTTP_CLUSTER_ACCESS_LOG", path.clone()));
        }
        env
    }
}

/// Largest `--max-head-bytes` accepted.
pub const MAX_HEAD_BYTES_CAP: usize = 1 << 20;

fn parse_head_bytes(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_HEAD_BYTES_CAP).contains(&n) => Ok(n),
        _ => Err(format!("expected a number of bytes from 1 to {MAX_HEAD_BYTES_CAP}")),
    }
}

/// Longest duration any setting accepts: a year, far past any useful
/// timeout (deadlines are "now plus the setting", and saturate beyond).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses `250ms`, `10s`, `2m` or a bare number of seconds (`1.5`), up to
/// [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let value = f64::from_str(num.trim()).map_err(|_| format!("not a duration: {s:?} (try 10s or 250ms)"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("not a duration: {s:?}"));
    }
    match Duration::try_from_secs_f64(value * scale) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(format!("{s:?} is longer than a year")),
    }
}

/// Renders a duration so that [`parse_duration`] reads it back exactly.
pub struct DurationArg(pub Duration);

impl fmt::Display for DurationArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("31536000"), Ok(MAX_DURATION));
        assert!(parse_duration("31536001").is_err());
        assert!(parse_duration("1e19").is_err());
    }

    #[test]
    fn head_bytes_are_bounded() {
        assert_eq!(parse_head_bytes("16384"), Ok(16384));
        assert_eq!(parse_head_bytes("1048576"), Ok(1 << 20));
        assert!(parse_head_bytes("1048577").is_err());
        assert!(parse_head_bytes("0").is_err());
        assert!(parse_head_bytes("lots").is_err());
    }

    #[test]
    fn request_line_is_bounded_like_the_head() {
        let parse = |v: &str| {
            LimitsFromEnv::parse_from_env_only(std::iter::once((
                "HTTP_CLUSTER_MAX_REQUEST_LINE".to_string(),
                v.to_string(),
            )))
            .map(|l| l.limits.max_request_line)
        };
        assert_eq!(parse("1048576").ok(), Some(1 << 20));
        assert!(parse("1048577").is_err());
        assert!(parse("18446744073709551615").is_err());
    }

    #[test]
    fn to_env_round_trips_every_limit() {
        let limits = Limits {
            max_request_line: 1,
            max_head_bytes: 2,
            max_headers: 3,
            max_body_bytes: 4,
            max_chunk_ext_bytes: 5,
            max_trailer_bytes: 6,
            max_requests_per_conn: 7,
            max_drain_bytes: 8,
            head_timeout: Duration::from_millis(9),
            idle_timeout: Duration::from_millis(10),
            body_timeout: Duration::from_millis(11),
            write_timeout: Duration::from_millis(12),
            park_idle_after: Duration::from_millis(13),
            proxy_protocol: true,
            access_log: Some("/var/log/x.log".into()),
        };
        let env = limits.to_env();
        let parsed =
            LimitsFromEnv::parse_from_env_only(env.iter().map(|(k, v)| (k.to_string(), v.clone()))).expect("parse");
        assert_eq!(parsed.limits, limits);

        // Every flag clap knows has an env var that to_env sets, and no other.
        let cmd = LimitsFromEnv::command();
        let mut known: Vec<String> =
            cmd.get_arguments().filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned())).collect();
        let mut sent: Vec<String> = env.iter().map(|(k, _)| k.to_string()).collect();
        known.sort();
        sent.sort();
        assert_eq!(known, sent);
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        // The README's table of limits and timeouts, field by field.
        let documented = Limits {
            max_request_line: 8 * 1024,
            max_head_bytes: 16 * 1024,
            max_headers: 100,
            max_body_bytes: 1 << 30,
            max_chunk_ext_bytes: 4 * 1024,
            max_trailer_bytes: 8 * 1024,
            max_requests_per_conn: 100_000,
            max_drain_bytes: 64 * 1024,
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            park_idle_after: Duration::from_secs(1),
            proxy_protocol: false,
            access_log: None,
        };
        assert_eq!(Limits::default(), documented);
    }
}
