//! The clock that connection deadlines are kept in.
//!
//! A keep-alive connection reads the clock and works out a deadline for
//! every request it waits for. With `Instant` that was the precise
//! monotonic clock (38 ns per read in this VM, where the coarse one costs
//! 8) and `Timespec` arithmetic: seconds and nanoseconds compared, added
//! and subtracted with carries, about 150 instructions per request
//! (callgrind, S1) across the deadline, the staged wait and the alarm.
//!
//! Those deadlines are only acted on by the alarm sweep, every 100 ms
//! (`alarm::TICK`), so a coarser clock loses nothing: a [`Moment`] is a
//! whole millisecond of `CLOCK_MONOTONIC_COARSE`, which advances once per
//! kernel tick (every 1-10 ms) and is read with a plain load from the vDSO
//! page. Every comparison reads this same clock, so the sweep and the
//! connection it wakes agree on what is due; against real time a deadline
//! may pass up to a kernel tick early or late (each reading lags by up to
//! a tick), which timeouts of seconds do not notice.

use std::ops::Add;
use std::time::Duration;

/// A point in time, in whole milliseconds of the coarse monotonic clock
/// (since boot). One `u64`: compared, stored in an atomic, and moved
/// forward with plain integer instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Moment(u64);

impl Moment {
    /// Now, by the coarse monotonic clock.
    pub fn now() -> Moment {
        use nix::time::{ClockId, clock_gettime};
        // Linux has had the coarse clock since 2.6.32. Should it be refused
        // (a seccomp filter), the precise one counts from the same start,
        // so readings of either compare; std's `Instant` panics when that
        // one fails too, and so does this.
        let ts = clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE)
            .or_else(|_| clock_gettime(ClockId::CLOCK_MONOTONIC))
            .expect("the monotonic clock is readable");
        // Truncations: seconds since boot and nanoseconds below one second
        // are both non-negative.
        Moment::from_parts(ts.tv_sec() as u64, ts.tv_nsec() as u32)
    }

    /// The moment `secs` and `nanos` into the clock, rounded down.
    fn from_parts(secs: u64, nanos: u32) -> Moment {
        Moment(secs.saturating_mul(1000).saturating_add(u64::from(nanos / 1_000_000)))
    }

    /// Milliseconds since the clock's start: the form an alarm stores.
    pub fn millis(self) -> u64 {
        self.0
    }

    /// How long after `earlier` this is; zero if it is not later.
    pub fn saturating_since(self, earlier: Moment) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// `d` in whole milliseconds, rounded up, so that a deadline `d` after a
/// moment is never earlier than `d` after it.
fn ceil_millis(d: Duration) -> u64 {
    d.as_secs().saturating_mul(1000).saturating_add(u64::from(d.subsec_nanos().div_ceil(1_000_000)))
}

impl Add<Duration> for Moment {
    type Output = Moment;

    /// Saturates at the last representable moment: a timeout too long to
    /// represent never passes.
    fn add(self, d: Duration) -> Moment {
        Moment(self.0.saturating_add(ceil_millis(d)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn durations_are_added_rounded_up_to_the_millisecond() {
        let base = Moment(1000);
        assert_eq!(base + Duration::ZERO, base);
        assert_eq!(base + Duration::from_micros(1), Moment(1001));
        assert_eq!(base + Duration::from_millis(1500), Moment(2500));
        assert_eq!(base + Duration::from_micros(1_500_001), Moment(2501));
        assert_eq!(base + Duration::MAX, Moment(u64::MAX));
        assert_eq!(Moment::from_parts(2, 999_999_999), Moment(2999));
    }

    #[test]
    fn the_time_since_an_earlier_moment_never_goes_negative() {
        let (a, b) = (Moment(1000), Moment(1250));
        assert_eq!(b.saturating_since(a), Duration::from_millis(250));
        assert_eq!(a.saturating_since(b), Duration::ZERO);
    }

    #[test]
    fn the_clock_follows_the_precise_one_within_a_kernel_tick() {
        // Each coarse read is bracketed by precise ones, so being preempted
        // between reads only widens the bounds: the coarse interval lies
        // within the inner and outer precise intervals, give or take how far
        // each coarse reading lags (nominally one tick, more when a loaded
        // host delays the tick) and a millisecond of rounding. The margin is
        // generous: this checks units and direction, not the kernel.
        let tick = nix::time::clock_getres(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
            .map_or(10, |r| Duration::from(r).as_millis() as i128 + 1);
        let tick = 2 * tick + 10;
        let (outer0, m0, inner0) = (Instant::now(), Moment::now(), Instant::now());
        std::thread::sleep(Duration::from_millis(100));
        let (inner1, m1, outer1) = (Instant::now(), Moment::now(), Instant::now());
        let coarse = m1.saturating_since(m0).as_millis() as i128;
        let (inner, outer) = ((inner1 - inner0).as_millis() as i128, (outer1 - outer0).as_millis() as i128);
        assert!(
            coarse >= inner - tick - 1 && coarse <= outer + tick + 1,
            "coarse {coarse} ms, precise {inner}-{outer} ms, tick {tick} ms"
        );
        assert!(m1 > m0);
    }
}
