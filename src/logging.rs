//! Lifecycle logs on stderr: timestamp, level, role (master / worker slot)
//! and pid on every line. `RUST_LOG` overrides the default level (info).

use std::io::Write as _;

/// Installs the logger. `role` is "master" or "worker"; workers add their
/// slot from `HTTP_CLUSTER_SLOT`.
pub fn init(role: &str) {
    let who = match (role, std::env::var("HTTP_CLUSTER_SLOT")) {
        ("worker", Ok(slot)) => format!("worker {slot}"),
        _ => role.to_string(),
    };
    let pid = std::process::id();
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,may=warn"))
        .format(move |buf, record| {
            writeln!(buf, "{} {:<5} {who} [{pid}] {}", buf.timestamp_millis(), record.level(), record.args())
        })
        .try_init();
}
