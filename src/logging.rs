//! Lifecycle logs on stderr: timestamp, level, role (master / worker slot)
//! and pid on every line.
//!
//! The level comes from `--log-level` (`HTTP_CLUSTER_LOG_LEVEL`, which the
//! master passes on to its workers), else `RUST_LOG`, else `info`. Either
//! may be a plain level or a full filter (`info,http_cluster::conn=debug`).

use std::io::Write as _;
use std::time::{Duration, Instant};

use log::Log as _;

/// A warning that can repeat many times a second (an accept loop out of
/// descriptors retries every few milliseconds until connections close):
/// logged at most once a second, with how many were left out, so one
/// condition does not bury the log or fill its disk. The owner calls
/// [`RepeatedWarning::recovered`] when the operation succeeds again, so the
/// failures left out after the last report are counted too.
pub struct RepeatedWarning {
    what: &'static str,
    /// When the last report went out; `None` while the operation works.
    last: Option<Instant>,
    unreported: u64,
}

/// What [`RepeatedWarning`] decided about one failure.
#[derive(Debug, PartialEq)]
enum Report {
    /// Log it, with how many were left out since the last report.
    Now { left_out: u64 },
    /// Counted for the next report.
    Later,
}

impl RepeatedWarning {
    const EVERY: Duration = Duration::from_secs(1);

    pub fn new(what: &'static str) -> RepeatedWarning {
        RepeatedWarning { what, last: None, unreported: 0 }
    }

    pub fn warn(&mut self, e: &dyn std::fmt::Display) {
        match self.failed(Instant::now()) {
            Report::Now { left_out: 0 } => log::warn!("{}: {e}", self.what),
            Report::Now { left_out: n } => log::warn!("{}: {e} (and {n} more since the last report)", self.what),
            Report::Later => {}
        }
    }

    fn failed(&mut self, now: Instant) -> Report {
        if self.last.is_some_and(|t| now.saturating_duration_since(t) < Self::EVERY) {
            self.unreported += 1;
            return Report::Later;
        }
        self.last = Some(now);
        Report::Now { left_out: std::mem::take(&mut self.unreported) }
    }

    /// The operation succeeded: once a second has passed since the last
    /// report, says so with the failures left out since then, and lets the
    /// next failure be reported at once. Within that second it changes
    /// nothing, so a condition that comes and goes with every connection
    /// (each one closed frees the descriptor the next accept takes) still
    /// logs at most once a second. One branch when nothing failed (an
    /// accept loop calls it per connection).
    #[inline]
    pub fn recovered(&mut self) {
        if self.last.is_some() {
            self.report_recovery();
        }
    }

    #[cold]
    fn report_recovery(&mut self) {
        match self.succeeded(Instant::now()) {
            None => {}
            Some(0) => log::info!("{}: working again", self.what),
            Some(n) => log::warn!("{}: working again, after {n} more failures since the last report", self.what),
        }
    }

    /// `Some(failures left out)` when a success at `now` is to be reported.
    fn succeeded(&mut self, now: Instant) -> Option<u64> {
        let last = self.last?;
        if now.saturating_duration_since(last) < Self::EVERY {
            return None;
        }
        self.last = None;
        Some(std::mem::take(&mut self.unreported))
    }
}

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
    let inner = env_logger::Builder::new()
        .parse_filters(&filter(&spec))
        .format(move |buf, record| {
            writeln!(buf, "{} {:<5} {who} [{pid}] {}", buf.timestamp_millis(), record.level(), record.args())
        })
        .build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Logger::new(inner, &spec))).is_ok() {
        log::set_max_level(max);
    }
}

/// env_logger, with may's records that it would drop dropped first.
///
/// may logs at info level when it registers a socket with epoll and when
/// it removes one, so every connection sends two records past `log`'s
/// global level check whenever our own info lines are on; env_logger's
/// directive scan then dropped each in about 65 instructions, 130 of a
/// `Connection: close` request's 6,000 (callgrind).
struct Logger {
    inner: env_logger::Logger,
    /// The most verbose level enabled for may, when one directive decides
    /// it for all of may's modules.
    may_max: Option<log::LevelFilter>,
}

impl Logger {
    fn new(inner: env_logger::Logger, spec: &str) -> Logger {
        // A directive for one of may's modules would make the level differ
        // between them: no shortcut then. (env_logger matches directive
        // names as prefixes of the target, so `may:` already names them.)
        let may_max = (!spec.contains("may:")).then(|| {
            let enabled = |level| inner.enabled(&log::Metadata::builder().target("may").level(level).build());
            log::Level::iter()
                .filter(|&l| enabled(l))
                .map(|l| l.to_level_filter())
                .max()
                .unwrap_or(log::LevelFilter::Off)
        });
        Logger { inner, may_max }
    }

    /// Whether `record` is may's and too verbose for its level.
    fn drops_early(&self, metadata: &log::Metadata<'_>) -> bool {
        let target = metadata.target();
        self.may_max.is_some_and(|max| metadata.level() > max) && (target == "may" || target.starts_with("may::"))
    }
}

impl log::Log for Logger {
    /// env_logger's answer: the shortcut only ever drops what it drops.
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.drops_early(record.metadata()) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// may logs every coroutine detail at debug level; a plain level applies
/// to our code and keeps may at warn unless the filter names it. Only a
/// default level more verbose than warn is capped for may: with `error`,
/// `off` or no default level, `may=warn` would make may the louder one.
/// The directive goes before a `/regex` part, which runs to the end.
fn filter(spec: &str) -> String {
    let (directives, regex) = match spec.split_once('/') {
        Some((directives, regex)) => (directives, Some(regex)),
        None => (spec, None),
    };
    let verbose_default = directives
        .split(',')
        .any(|d| matches!(d.trim().parse::<log::LevelFilter>(), Ok(l) if l > log::LevelFilter::Warn));
    if directives.contains("may") || !verbose_default {
        return spec.to_string();
    }
    match regex {
        Some(regex) => format!("{directives},may=warn/{regex}"),
        None => format!("{directives},may=warn"),
    }
}

#[cfg(test)]
mod tests {
    use log::Log as _;

    use super::{RepeatedWarning, Report};
    use std::time::{Duration, Instant};

    #[test]
    fn a_repeated_warning_goes_out_once_a_second_and_its_tail_is_counted_on_recovery() {
        let mut w = RepeatedWarning::new("accept");
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(w.failed(at(0)), Report::Now { left_out: 0 });
        for ms in (10..1000).step_by(10) {
            assert_eq!(w.failed(at(ms)), Report::Later);
        }
        assert_eq!(w.failed(at(1000)), Report::Now { left_out: 99 });
        // Failures and successes by turns (each closed connection frees
        // one descriptor): still one report a second.
        for ms in (1010..1990).step_by(20) {
            assert_eq!(w.succeeded(at(ms)), None);
            assert_eq!(w.failed(at(ms + 10)), Report::Later);
        }
        assert_eq!(w.succeeded(at(2000)), Some(49));
        // Not lost when failures stop: the tail is told with the first
        // success a second after the last report.
        assert_eq!(w.failed(at(2100)), Report::Now { left_out: 0 });
        assert_eq!(w.failed(at(2110)), Report::Later);
        assert_eq!(w.failed(at(2120)), Report::Later);
        assert_eq!(w.succeeded(at(2130)), None);
        assert_eq!(w.succeeded(at(3100)), Some(2));
        // Reported once; then the next failure is news at once.
        assert_eq!(w.succeeded(at(3110)), None);
        assert_eq!(w.failed(at(3120)), Report::Now { left_out: 0 });
    }

    /// The shortcut drops only what env_logger drops, and does drop may's
    /// per-connection info lines at the default level.
    #[test]
    fn may_records_are_dropped_early_only_where_env_logger_drops_them() {
        let specs = [
            "info",
            "debug",
            "warn,may=trace",
            "info,may::io=debug",
            "info,may:=debug",
            "off",
            "trace",
            "may=info",
            "debug/ready",
        ];
        let targets = ["may", "may::io::sys::select", "mayfly", "http_cluster::conn", "maybe::may"];
        for spec in specs {
            let filter = super::filter(spec);
            let inner = env_logger::Builder::new().parse_filters(&filter).build();
            let logger = super::Logger::new(env_logger::Builder::new().parse_filters(&filter).build(), spec);
            for target in targets {
                for level in log::Level::iter() {
                    let metadata = log::Metadata::builder().target(target).level(level).build();
                    assert!(
                        !(logger.drops_early(&metadata) && inner.enabled(&metadata)),
                        "{spec}: {target} at {level} dropped early, env_logger would log it"
                    );
                    assert_eq!(
                        log::Log::enabled(&logger, &metadata),
                        inner.enabled(&metadata),
                        "{spec}: {target} {level}"
                    );
                }
            }
        }
        let logger =
            super::Logger::new(env_logger::Builder::new().parse_filters(&super::filter("info")).build(), "info");
        let select = log::Metadata::builder().target("may::io::sys::select").level(log::Level::Info).build();
        assert!(logger.drops_early(&select));
    }

    #[test]
    fn may_stays_quiet_unless_named() {
        assert_eq!(super::filter("debug"), "debug,may=warn");
        assert_eq!(super::filter("debug,may=trace"), "debug,may=trace");
        assert_eq!(super::filter("info,http_cluster::conn=debug"), "info,http_cluster::conn=debug,may=warn");
        // The regex part runs to the end of the spec: the cap goes before it.
        assert_eq!(super::filter("info/ready"), "info,may=warn/ready");
        // Quieter than warn, or no default level: capping may at warn
        // would make it louder than the rest.
        assert_eq!(super::filter("off"), "off");
        assert_eq!(super::filter("error"), "error");
        assert_eq!(super::filter("http_cluster=debug"), "http_cluster=debug");
    }
}
