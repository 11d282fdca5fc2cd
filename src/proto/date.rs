//! The `Date` header value, rendered at most once a second per process.
//!
//! may forbids thread-locals in coroutines, so the cache is a process-wide
//! seqlock over atomics: readers never block and never spin; whoever first
//! sees a new second renders it and publishes it for everyone else.

use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `Sun, 06 Nov 1994 08:49:37 GMT` is 29 bytes.
pub const DATE_LEN: usize = 29;

struct DateCache {
    /// `second << 1`, with the low bit set while a writer is publishing.
    stamp: AtomicU64,
    /// The 29 rendered bytes, packed into 32.
    words: [AtomicU64; 4],
}

static CACHE: DateCache = DateCache { stamp: AtomicU64::new(0), words: [const { AtomicU64::new(0) }; 4] };

/// The current date in IMF-fixdate form (RFC 9110 §5.6.7).
pub fn now() -> [u8; DATE_LEN] {
    at(second())
}

/// The date of Unix second `secs` in IMF-fixdate form.
pub fn at(secs: u64) -> [u8; DATE_LEN] {
    let want = secs << 1;
    let seen = CACHE.stamp.load(Ordering::Acquire);
    if seen == want {
        let words: [u64; 4] = std::array::from_fn(|i| CACHE.words[i].load(Ordering::Relaxed));
        fence(Ordering::Acquire);
        if CACHE.stamp.load(Ordering::Relaxed) == want {
            return unpack(words);
        }
    }
    let date = render(secs);
    // Publish unless another thread is writing or the cache is already
    // newer; losing this race only costs that thread a render.
    if seen & 1 == 0
        && seen < want
        && CACHE.stamp.compare_exchange(seen, want | 1, Ordering::Acquire, Ordering::Relaxed).is_ok()
    {
        // The odd stamp must be visible before any of the new words, so a
        // reader that saw new words also sees the stamp change (seqlock).
        fence(Ordering::Release);
        for (slot, word) in CACHE.words.iter().zip(pack(&date)) {
            slot.store(word, Ordering::Relaxed);
        }
        CACHE.stamp.store(want, Ordering::Release);
    }
    date
}

/// The current Unix second, as [`now`] and [`at`] count it: whole seconds
/// since the epoch from the coarse clock. It is read once per response,
/// and the coarse clock is a plain load from the vDSO page where the
/// precise one also reads the TSC. Its tick (a few milliseconds at most)
/// is far below the header's one-second resolution.
pub fn second() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME_COARSE) {
        Ok(ts) => u64::try_from(ts.tv_sec()).unwrap_or(0),
        Err(_) => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    }
}

fn render(secs: u64) -> [u8; DATE_LEN] {
    let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
    let mut out = [b' '; DATE_LEN];
    let n = text.len().min(DATE_LEN);
    out[..n].copy_from_slice(&text.as_bytes()[..n]);
    out
}

fn pack(date: &[u8; DATE_LEN]) -> [u64; 4] {
    let mut bytes = [0u8; 32];
    bytes[..DATE_LEN].copy_from_slice(date);
    std::array::from_fn(|i| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap_or_default()))
}

fn unpack(words: [u64; 4]) -> [u8; DATE_LEN] {
    let mut bytes = [0u8; 32];
    for (i, w) in words.iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    let mut out = [0u8; DATE_LEN];
    out.copy_from_slice(&bytes[..DATE_LEN]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_imf_fixdate() {
        assert_eq!(&render(784111777), b"Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn cached_value_matches_a_fresh_render() {
        let a = now();
        let b = now();
        let parsed = httpdate::parse_http_date(std::str::from_utf8(&b).unwrap()).unwrap();
        let age = SystemTime::now().duration_since(parsed).unwrap_or_default();
        assert!(age < Duration::from_secs(3), "{:?}", std::str::from_utf8(&a));
    }

    #[test]
    fn pack_round_trips() {
        let d = render(0);
        assert_eq!(unpack(pack(&d)), d);
    }
}
