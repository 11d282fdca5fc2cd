//! The worker's connection coroutines, kept between connections and reused
//! last in, first out.
//!
//! Starting a connection on a fresh may coroutine cost about 1,900
//! instructions of its 9,500 under a connection-per-request load (callgrind,
//! S4): may allocates six objects per spawn and frees them at the end, and
//! its own pool of finished coroutines is first in, first out, so each
//! connection started on the coldest stack of 256. A coroutine that finished
//! a connection here instead parks on the idle stack and takes the next one:
//! handing over a connection is two short locks and an unpark (a push on the
//! scheduler thread's own run queue), and the stack it runs on is the one
//! used last.
//!
//! A coroutine waits on its slot's own blocker, not on `coroutine::park`:
//! a wake-up left over from the hand-over would otherwise make a handler's
//! first `park` on the next connection return at once.

use std::sync::{Arc, Mutex, MutexGuard};

use may::sync::Blocker;

/// Where a job waits for the idle connection coroutine it was handed to,
/// and how that coroutine is woken.
struct Slot<J> {
    job: Mutex<Option<J>>,
    wake: Blocker,
}

impl<J> Slot<J> {
    fn job(&self) -> MutexGuard<'_, Option<J>> {
        self.job.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How a new coroutine is started when no idle one is left.
pub type Spawn = fn(Box<dyn FnOnce() + Send>) -> std::io::Result<()>;

/// Idle connection coroutines of one worker, and what they run.
pub struct Pool<J> {
    /// The slots of the idle coroutines, the one that went idle last on top.
    idle: Mutex<Vec<Arc<Slot<J>>>>,
    /// Idle coroutines kept at most; one that finds the stack full ends
    /// (its stack goes back to may's pool, or is freed).
    keep: usize,
    /// Runs one job: serves a connection until it ends.
    work: Box<dyn Fn(J) + Send + Sync>,
}

impl<J: Send + 'static> Pool<J> {
    pub fn new(keep: usize, work: impl Fn(J) + Send + Sync + 'static) -> Arc<Pool<J>> {
        Arc::new(Pool { idle: Mutex::new(Vec::new()), keep, work: Box::new(work) })
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Arc<Slot<J>>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many coroutines are parked idle.
    pub fn idle_count(&self) -> usize {
        self.idle().len()
    }

    /// Runs `job` on the coroutine that went idle last, or on a new one
    /// started with `spawn`. Callable from a coroutine or a thread; the job
    /// never runs on the caller's stack. If no coroutine can be started,
    /// the job is dropped (and with it its connection, which closes).
    pub fn run(self: &Arc<Self>, job: J, spawn: Spawn) -> std::io::Result<()> {
        let idle = self.idle().pop();
        match idle {
            Some(slot) => {
                *slot.job() = Some(job);
                slot.wake.unpark();
                Ok(())
            }
            None => {
                let pool = self.clone();
                spawn(Box::new(move || pool.serve(job)))
            }
        }
    }

    /// The body of every connection coroutine: run the job, go idle, wait
    /// for the next one.
    fn serve(self: Arc<Self>, first: J) {
        // Made on the coroutine, the blocker parks the coroutine (not the
        // thread); it never cancels (ours are never cancelled anyway).
        let slot = Arc::new(Slot { job: Mutex::new(None), wake: Blocker::new(true) });
        let mut job = first;
        loop {
            (self.work)(job);
            {
                let mut idle = self.idle();
                if idle.len() >= self.keep {
                    return;
                }
                idle.push(slot.clone());
            }
            // An unpark that came before the park makes it return at once;
            // one left over (the job was taken before the park) only costs
            // a turn of this loop.
            job = loop {
                if let Some(job) = slot.job().take() {
                    break job;
                }
                let _ = slot.wake.park(None);
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::{Pool, Spawn};

    /// Spawns on a may coroutine with may's default stack.
    const SPAWN: Spawn = |f| {
        // SAFETY: the test jobs keep no thread-local state across a wait
        // and fit the default stack.
        unsafe { may::coroutine::spawn(f) };
        Ok(())
    };

    /// A job: report which coroutine ran it (by an address on its stack:
    /// the same for every job a coroutine runs), then hold it until told
    /// (may's channel parks the coroutine, not the thread).
    type Job = (usize, mpsc::Sender<(usize, usize)>, Option<may::sync::mpsc::Receiver<()>>);

    fn pool(keep: usize) -> std::sync::Arc<Pool<Job>> {
        Pool::new(keep, |(n, report, hold): Job| {
            let marker = 0u8;
            let me = std::hint::black_box(&marker) as *const u8 as usize;
            report.send((n, me)).unwrap();
            if let Some(hold) = hold {
                hold.recv().unwrap();
            }
        })
    }

    /// Waits until `pool` has `n` idle coroutines (they park on their own
    /// schedule, after the job's report).
    fn until_idle(pool: &Pool<Job>, n: usize) {
        for _ in 0..500 {
            if pool.idle_count() == n {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("{} idle coroutines, expected {n}", pool.idle_count());
    }

    #[test]
    fn a_finished_coroutine_takes_the_next_job_last_in_first_out() {
        let pool = pool(8);
        let (report, reports) = mpsc::channel();
        // Two jobs at once: two coroutines.
        let (release_a, hold_a) = may::sync::mpsc::channel();
        let (release_b, hold_b) = may::sync::mpsc::channel();
        pool.run((1, report.clone(), Some(hold_a)), SPAWN).unwrap();
        pool.run((2, report.clone(), Some(hold_b)), SPAWN).unwrap();
        let a = reports.recv_timeout(Duration::from_secs(5)).unwrap();
        let b = reports.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_ne!(a.1, b.1);
        let co_of = |n| if a.0 == n { a.1 } else { b.1 };
        // Job 1 ends first, then job 2: the next job goes to job 2's
        // coroutine, the one after to job 1's.
        release_a.send(()).unwrap();
        until_idle(&pool, 1);
        release_b.send(()).unwrap();
        until_idle(&pool, 2);
        pool.run((3, report.clone(), None), SPAWN).unwrap();
        assert_eq!(reports.recv_timeout(Duration::from_secs(5)).unwrap(), (3, co_of(2)));
        until_idle(&pool, 2);
        let (release_c, hold_c) = may::sync::mpsc::channel();
        pool.run((4, report.clone(), Some(hold_c)), SPAWN).unwrap();
        pool.run((5, report.clone(), None), SPAWN).unwrap();
        let mut next = [
            reports.recv_timeout(Duration::from_secs(5)).unwrap(),
            reports.recv_timeout(Duration::from_secs(5)).unwrap(),
        ];
        next.sort();
        assert_eq!(next, [(4, co_of(2)), (5, co_of(1))]);
        release_c.send(()).unwrap();
        until_idle(&pool, 2);
    }

    #[test]
    fn coroutines_beyond_the_idle_limit_end() {
        let pool = pool(1);
        let (report, reports) = mpsc::channel();
        let holds: Vec<_> = (0..3)
            .map(|n| {
                let (release, hold) = may::sync::mpsc::channel();
                pool.run((n, report.clone(), Some(hold)), SPAWN).unwrap();
                release
            })
            .collect();
        for _ in 0..3 {
            reports.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        for release in holds {
            release.send(()).unwrap();
        }
        until_idle(&pool, 1);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(pool.idle_count(), 1);
    }
}
