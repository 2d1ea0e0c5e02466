//! The fork-join pool kernels run their tasks on.
//!
//! A network is a chain of layers of microseconds to milliseconds each, every one split
//! into tasks across the cores. What matters is the cost of starting and
//! ending such a split: workers that have gone to sleep between layers
//! take tens of microseconds to wake, which on deep_convnet (13 layers at
//! batch 1) is a large share of the run. So workers here spin on an epoch
//! counter for a while after each job (about a millisecond) before parking,
//! and the calling thread takes tasks itself: a job starts with one atomic
//! increment and ends with a counter reaching its target.
//!
//! Which thread runs which task matters too. Thread `t` of `T` owns the
//! tasks `t·n/T .. (t+1)·n/T` of every job and takes them first, helping
//! the others only once its own run out; kernels number their tasks
//! spatially (tile runs, column blocks, items), so a thread makes the same
//! part of consecutive layers' data and reads what it wrote itself, from
//! its own caches. With one shared counter tasks had gone to whichever
//! thread asked first, and each layer read about half its input from the
//! other core (docs/performance.md, "home task ranges").
//!
//! Contract of [`parallel_for`]: `f(i)` runs exactly once for every `i` in
//! `0..n`, on the calling thread or a worker, and all calls have returned
//! when it returns. A `parallel_for` inside a task runs serially on that
//! thread (kernels are not nested, but nothing breaks if one is).
//!
//! Which pool: [`Pool::enter`] makes a pool current on the calling thread
//! (the JIT does so around each run); otherwise the process-wide pool sized
//! by [`set_global_threads`] (the C ABI's `netc_set_threads`) or, by
//! default, one thread per core.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;

/// How long an idle worker spins before parking, in `spin_loop` hints.
const SPIN_ROUNDS: u32 = 1 << 16;

/// Pools up to this many threads give each thread a home range of the
/// tasks (see [`Job::work`]); larger ones share one counter.
const MAX_HOMES: usize = 16;

/// A counter on a cache line of its own: each thread's home counter is
/// written by that thread alone until it runs dry.
#[repr(align(64))]
struct Padded(AtomicUsize);

/// One `parallel_for` call, on its caller's stack.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    n: usize,
    /// How many home ranges `0..n` is cut into (1: one shared counter).
    homes: usize,
    /// The next task of each home range.
    next: [Padded; MAX_HOMES],
    done: AtomicUsize,
    /// A task panicked; the caller re-raises it once every task is done.
    panicked: AtomicBool,
}

impl<'a> Job<'a> {
    fn new(f: &'a (dyn Fn(usize) + Sync), n: usize, threads: usize) -> Job<'a> {
        let homes = if threads <= MAX_HOMES {
            threads.min(n)
        } else {
            1
        };
        Job {
            f,
            n,
            homes,
            next: std::array::from_fn(|h| Padded(AtomicUsize::new(h * n / homes.max(1)))),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        }
    }

    /// Take and run tasks until none are left, starting with thread
    /// `who`'s home range, then helping the others in turn. Thread `t`
    /// of `T` owns tasks `t·n/T .. (t+1)·n/T`, so the same thread takes
    /// the same part of every layer whenever no thread falls behind:
    /// kernels number their tasks so that part is the same part of the
    /// data, which then stays in that core's caches from one layer to the
    /// next instead of crossing to the other core. A panic is caught and
    /// counted as done: the caller must not return while a worker still
    /// uses the job, and a worker that died would never finish its count.
    fn work(&self, who: usize) {
        let mut ran = 0;
        for r in 0..self.homes {
            let home = (who + r) % self.homes;
            let end = (home + 1) * self.n / self.homes;
            loop {
                let i = self.next[home].0.fetch_add(1, Relaxed);
                if i >= end {
                    break;
                }
                let f = self.f;
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(i))).is_err() {
                    self.panicked.store(true, Relaxed);
                }
                ran += 1;
            }
        }
        if ran > 0 {
            self.done.fetch_add(ran, Release);
        }
    }
}

/// What the caller and the workers share.
struct State {
    /// Bumped once per published job.
    epoch: AtomicU64,
    /// The current job (type-erased `*const Job`), null between jobs.
    job: AtomicPtr<()>,
    /// Workers between loading `job` and being done with it.
    active: AtomicUsize,
    /// Parked workers, and what they park on.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
}

impl State {
    fn new() -> State {
        State {
            epoch: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            active: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
        }
    }
}

/// A fixed set of spinning workers plus the calling thread.
pub struct Pool {
    state: Arc<State>,
    threads: usize,
    workers: Vec<JoinHandle<()>>,
    /// Serialises callers: one job at a time.
    caller: Mutex<()>,
}

thread_local! {
    /// The pool entered on this thread, if any.
    static CURRENT: Cell<*const Pool> = const { Cell::new(std::ptr::null()) };
    /// Whether this thread is running a task (nested jobs run serially).
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

/// Sets `IN_TASK` for the life of a task and restores it after.
struct TaskScope(bool);

impl TaskScope {
    fn enter() -> TaskScope {
        TaskScope(IN_TASK.with(|t| t.replace(true)))
    }
}

impl Drop for TaskScope {
    fn drop(&mut self) {
        IN_TASK.with(|t| t.set(self.0));
    }
}

fn worker(state: Arc<State>, who: usize) {
    let mut seen = state.epoch.load(Acquire);
    let _scope = TaskScope::enter();
    loop {
        let mut spins = 0;
        while state.epoch.load(Acquire) == seen {
            if state.shutdown.load(Acquire) {
                return;
            }
            spins += 1;
            if spins < SPIN_ROUNDS {
                std::hint::spin_loop();
                continue;
            }
            // Park. `sleepers` is raised under the lock before the epoch is
            // checked again, and the caller takes the lock to notify after
            // bumping the epoch, so a wake-up cannot fall between the two.
            let guard = state.lock.lock().unwrap_or_else(|e| e.into_inner());
            state.sleepers.fetch_add(1, SeqCst);
            let mut guard = guard;
            while state.epoch.load(SeqCst) == seen && !state.shutdown.load(SeqCst) {
                guard = state.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            state.sleepers.fetch_sub(1, SeqCst);
            drop(guard);
            spins = 0;
        }
        seen = state.epoch.load(Acquire);
        state.active.fetch_add(1, SeqCst);
        let job = state.job.load(SeqCst) as *const Job;
        if !job.is_null() {
            // SAFETY: the job's caller waits for `active` to drop to zero
            // before its stack frame (and the job) goes away; a job seen
            // here after that frame cleared `job` is a newer, live one.
            unsafe { (*job).work(who) };
        }
        state.active.fetch_sub(1, Release);
    }
}

impl Pool {
    /// A pool of `threads` threads in all (0: one per core): the caller
    /// and `threads − 1` workers.
    pub fn new(threads: usize) -> std::io::Result<Pool> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let mut pool = Pool::serial();
        pool.threads = threads;
        for i in 1..threads {
            let state = pool.state.clone();
            let handle = std::thread::Builder::new()
                .name(format!("netc-worker-{i}"))
                .spawn(move || worker(state, i))?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    /// A pool of the calling thread alone.
    fn serial() -> Pool {
        Pool {
            state: Arc::new(State::new()),
            threads: 1,
            workers: Vec::new(),
            caller: Mutex::new(()),
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Make this pool current on the calling thread while `f` runs.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore(*const Pool);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(CURRENT.with(|c| c.replace(self)));
        f()
    }

    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        let _one_job = self.caller.lock().unwrap_or_else(|e| e.into_inner());
        let job = Job::new(f, n, self.threads);
        let st = &*self.state;
        st.job.store(&job as *const Job as *mut (), SeqCst);
        st.epoch.fetch_add(1, SeqCst);
        if st.sleepers.load(SeqCst) > 0 {
            let _guard = st.lock.lock().unwrap_or_else(|e| e.into_inner());
            st.wake.notify_all();
        }
        {
            let _scope = TaskScope::enter();
            job.work(0);
        }
        while job.done.load(Acquire) < n {
            std::hint::spin_loop();
        }
        st.job.store(std::ptr::null_mut(), SeqCst);
        while st.active.load(SeqCst) != 0 {
            std::hint::spin_loop();
        }
        if job.panicked.load(Relaxed) {
            panic!("a parallel task panicked");
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.state.shutdown.store(true, SeqCst);
        {
            let _guard = self.state.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.state.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

static GLOBAL: OnceLock<Pool> = OnceLock::new();
static GLOBAL_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Size the process-wide pool (0: one thread per core). Returns false if
/// it has already started.
pub fn set_global_threads(threads: usize) -> bool {
    if GLOBAL.get().is_some() {
        return false;
    }
    GLOBAL_THREADS.store(threads, SeqCst);
    true
}

/// Run `f` with the pool current on this thread: the one entered with
/// [`Pool::enter`], else the process-wide one.
fn with_pool<R>(f: impl FnOnce(&Pool) -> R) -> R {
    let current = CURRENT.with(|c| c.get());
    if !current.is_null() {
        // SAFETY: `enter` keeps the pool alive and current only while its
        // closure runs on this thread.
        return f(unsafe { &*current });
    }
    // A machine that cannot start threads still runs, on one.
    f(GLOBAL
        .get_or_init(|| Pool::new(GLOBAL_THREADS.load(SeqCst)).unwrap_or_else(|_| Pool::serial())))
}

/// Threads the current pool runs tasks on (1 inside a task).
pub fn current_threads() -> usize {
    if IN_TASK.with(|t| t.get()) {
        return 1;
    }
    with_pool(|p| p.threads)
}

/// Run `f(i)` for every `i` in `0..n` on the current pool; see the module
/// contract.
pub fn parallel_for(n: usize, f: impl Fn(usize) + Sync) {
    if n == 0 {
        return;
    }
    if n == 1 || IN_TASK.with(|t| t.get()) {
        (0..n).for_each(f);
        return;
    }
    with_pool(|p| {
        if p.threads > 1 {
            p.run(n, &f)
        } else {
            (0..n).for_each(&f)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_runs_exactly_once() {
        let pool = Pool::new(3).unwrap();
        for n in [0, 1, 2, 7, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.enter(|| {
                parallel_for(n, |i| {
                    hits[i].fetch_add(1, Relaxed);
                })
            });
            assert!(hits.iter().all(|h| h.load(Relaxed) == 1), "n = {n}");
        }
    }

    /// A thread alone runs its home range first, then the others' in
    /// turn, each from its start: the order kernels rely on for locality.
    #[test]
    fn a_thread_starts_with_its_home_range() {
        /// The indices one thread runs, in the order it runs them.
        fn order(n: usize, threads: usize, who: usize) -> Vec<usize> {
            let (next, seen) = (AtomicUsize::new(0), AtomicU64::new(0));
            let record = |i: usize| {
                let at = next.fetch_add(1, Relaxed);
                seen.fetch_or((i as u64) << (4 * at), Relaxed);
            };
            let job = Job::new(&record, n, threads);
            job.work(who);
            assert_eq!(job.done.load(Relaxed), n);
            let seen = seen.load(Relaxed);
            (0..next.load(Relaxed))
                .map(|at| (seen >> (4 * at) & 15) as usize)
                .collect()
        }
        assert_eq!(order(7, 3, 1), [2, 3, 4, 5, 6, 0, 1]);
        assert_eq!(order(7, 3, 0), [0, 1, 2, 3, 4, 5, 6]);
        // More threads than tasks: one home per task.
        assert_eq!(order(2, 4, 1), [1, 0]);
    }

    #[test]
    fn many_short_jobs_and_parked_workers() {
        let pool = Pool::new(2).unwrap();
        let total = AtomicUsize::new(0);
        for round in 0..2000 {
            pool.enter(|| {
                parallel_for(4, |i| {
                    total.fetch_add(i + 1, Relaxed);
                })
            });
            if round == 1000 {
                // Long enough for the worker to park.
                std::thread::sleep(std::time::Duration::from_millis(30));
            }
        }
        assert_eq!(total.load(Relaxed), 2000 * 10);
    }

    #[test]
    fn nested_jobs_run_serially_and_threads_report_it() {
        let pool = Pool::new(2).unwrap();
        let count = AtomicUsize::new(0);
        pool.enter(|| {
            assert_eq!(current_threads(), 2);
            parallel_for(3, |_| {
                assert_eq!(current_threads(), 1);
                parallel_for(5, |_| {
                    count.fetch_add(1, Relaxed);
                });
            })
        });
        assert_eq!(count.load(Relaxed), 15);
    }

    #[test]
    fn a_panicking_task_does_not_hang_the_pool() {
        let pool = Pool::new(2).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.enter(|| parallel_for(4, |i| assert!(i != 2, "task {i}")))
        }));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        pool.enter(|| {
            parallel_for(8, |_| {
                count.fetch_add(1, Relaxed);
            })
        });
        assert_eq!(count.load(Relaxed), 8);
    }
}
