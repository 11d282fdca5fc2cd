//! Lifecycle logs on stderr: timestamp, level, role (master / worker slot)
//! and pid on every line.
//!
//! The level comes from `--log-level` (`HTTP_CLUSTER_LOG_LEVEL`, which the
//! master passes on to its workers), else `RUST_LOG`, else `info`. Either
//! may be a plain level or a full filter (`info,http_cluster::conn=debug`).

use std::io::Write as _;

/// The environment variable that carries `--log-level` to workers.
pub const LEVEL_ENV: &str = "HTTP_CLUSTER_LOG_LEVEL";

/// Installs the logger. `role` is "master" or "worker"; workers add their
/// slot from `HTTP_CLUSTER_SLOT`. `level` overrides the environment.
pub fn init(role: &str, level: Option<&str>) {
    let who = match (role, std::env::var("HTTP_CLUSTER_SLOT")) {
        ("worker", Ok(slot)) => format!("worker {slot}"),
        _ => role.to_string(),
    };
    let pid = std::process::id();
    let spec = level
        .map(str::to_string)
        .or_else(|| std::env::var(LEVEL_ENV).ok())
        .or_else(|| std::env::var("RUST_LOG").ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "info".to_string());
    let _ = env_logger::Builder::new()
        .parse_filters(&filter(&spec))
        .format(move |buf, record| {
            writeln!(buf, "{} {:<5} {who} [{pid}] {}", buf.timestamp_millis(), record.level(), record.args())
        })
        .try_init();
}

/// may logs every coroutine detail at debug level; a plain level applies
/// to our code and keeps may at warn unless the filter names it.
fn filter(spec: &str) -> String {
    if spec.contains("may") { spec.to_string() } else { format!("{spec},may=warn") }
}

#[cfg(test)]
mod tests {
    #[test]
    fn may_stays_quiet_unless_named() {
        assert_eq!(super::filter("debug"), "debug,may=warn");
        assert_eq!(super::filter("debug,may=trace"), "debug,may=trace");
    }
}
