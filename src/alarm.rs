//! Deadlines for connections waiting on their socket, without a timer per
//! wait.
//!
//! A connection that waits for input (or for room to write) parks its
//! coroutine on the socket alone (may's `wait_io`, which has no timeout) and
//! records in its [`Alarm`] when it wants to be woken. Every [`TICK`] the
//! worker's sweep ([`Alarms::sweep`]) wakes each connection whose alarm is
//! due; the woken coroutine finds no input, reads the clock and decides:
//! time out, move on to its next stage (give back its buffers, park), or
//! wait again.
//!
//! Why not may's read and write timeouts: each wait then registers a timer
//! (an allocation, a hashed lookup under a lock, and its removal when input
//! comes), and on a keep-alive connection every request is such a wait,
//! while a deadline is almost never reached. The sweep costs one pass over
//! the open connections per tick instead, and a deadline fires at most one
//! tick late (may's timers were rounded to the same 100 ms), give or take
//! the coarse clock's own tick (see `clock`).
//!
//! While the worker has no connection at all, the sweep does not tick: it
//! waits until the next connection registers (see [`Alarms::idle`]), so an
//! idle worker is not woken ten times a second for nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use may::io::WaitIoWaker;
use may::sync::Semphore;
use slab::Slab;

use crate::clock::Moment;

/// How often due alarms are rung: the precision of every connection
/// timeout.
pub const TICK: Duration = Duration::from_millis(100);

/// The alarm is not set.
const UNSET: u64 = u64::MAX;

/// When one connection wants to be woken, and how.
pub struct Alarm {
    due: AtomicU64,
    waker: WaitIoWaker,
}

impl Alarm {
    /// Wake the connection's coroutine at `at` if it is still waiting then.
    pub fn set(&self, at: Moment) {
        self.due.store(at.millis().min(UNSET - 1), Ordering::Relaxed);
    }

    pub fn clear(&self) {
        self.due.store(UNSET, Ordering::Relaxed);
    }

    /// Wakes the coroutine if its time has come. The alarm is unset first,
    /// so a coroutine the scheduler has not run yet is not woken again at
    /// the next tick. A wake that comes when the coroutine is not waiting
    /// only makes its next wait return at once; callers re-check anyway.
    fn ring_if_due(&self, now: u64) {
        let due = self.due.load(Ordering::Relaxed);
        if due <= now && self.due.compare_exchange(due, UNSET, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.waker.wakeup();
        }
    }
}

/// The alarms of one worker's open connections.
pub struct Alarms {
    registry: Mutex<Registry>,
    /// Posted once when the first connection registers while the sweep
    /// waits in [`Alarms::idle`].
    first_registered: Semphore,
}

#[derive(Default)]
struct Registry {
    alarms: Slab<Arc<Alarm>>,
    /// The sweep waits for [`Alarms::first_registered`] (or is about to).
    sweep_waits: bool,
}

impl Default for Alarms {
    fn default() -> Self {
        Alarms { registry: Mutex::default(), first_registered: Semphore::new(0) }
    }
}

impl std::fmt::Debug for Alarms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alarms").field("registered", &self.lock().alarms.len()).finish()
    }
}

impl Alarms {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new alarm that wakes through `waker`, swept until the returned
    /// handle is dropped.
    pub fn register(self: &Arc<Self>, waker: WaitIoWaker) -> AlarmHandle {
        let alarm = Arc::new(Alarm { due: AtomicU64::new(UNSET), waker });
        let (key, wake_sweep) = {
            let mut registry = self.lock();
            (registry.alarms.insert(alarm.clone()), std::mem::take(&mut registry.sweep_waits))
        };
        if wake_sweep {
            self.first_registered.post();
        }
        AlarmHandle { alarms: self.clone(), key, alarm }
    }

    /// Returns once at least one alarm is registered: at once if one is,
    /// otherwise when the next connection registers. Called by the sweep
    /// coroutine between ticks, and by nothing else: a second caller would
    /// share the one post and might wait for ever. It parks the coroutine,
    /// not the thread.
    ///
    /// Exactly one post answers each wait: the flag is set and taken under
    /// the lock, and a post that lands before the wait starts is kept by
    /// the semaphore, so the wait then returns at once.
    pub(crate) fn idle(&self) {
        {
            let mut registry = self.lock();
            if !registry.alarms.is_empty() {
                return;
            }
            registry.sweep_waits = true;
        }
        self.first_registered.wait();
    }

    /// Wakes every connection whose alarm is due. Runs every [`TICK`] on
    /// the worker's scheduler while any alarm is registered.
    pub fn sweep(&self) {
        let now = Moment::now().millis();
        for (_, alarm) in self.lock().alarms.iter() {
            alarm.ring_if_due(now);
        }
    }
}

/// One connection's registered alarm.
pub struct AlarmHandle {
    alarms: Arc<Alarms>,
    key: usize,
    alarm: Arc<Alarm>,
}

impl std::ops::Deref for AlarmHandle {
    type Target = Alarm;
    fn deref(&self) -> &Alarm {
        &self.alarm
    }
}

impl Drop for AlarmHandle {
    fn drop(&mut self) {
        self.alarms.lock().alarms.remove(self.key);
    }
}
