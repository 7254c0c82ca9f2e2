//! How the OS schedules our threads: the pacer and the worker ask to run ahead of ordinary
//! threads (`SCHED_FIFO`), and the HTTP threads run at a lower priority than ordinary ones.
//!
//! Why: under load hundreds of connection and handler threads share two cores, and an ordinary
//! thread woken at its deadline waits its turn for a slice of a CPU, so the pacer releases late
//! and the worker's calls stretch. A real-time thread runs as soon as it wakes; both sleep
//! almost all the time (the pacer spins at most 500 µs per release), so they cannot starve the
//! rest. Linux allows this to root or with `CAP_SYS_NICE`; without it they stay ordinary and
//! say so once. Lowering a thread's own priority needs no privilege, so the HTTP threads start
//! `HTTP_NICENESS` lower (a higher nice value): then the pacer and the worker win a busy CPU
//! even where they cannot be real-time. The compaction thread goes lower still (`SCHED_IDLE`).
//! The libc calls below are `unsafe` (the crate's only others are in `allocator.rs`, `journal/disk.rs` and `http/compat/relay.rs`).
#![allow(unsafe_code)]

use std::io;
use std::thread;
use std::time::Duration;

use crate::log;

/// The lowest real-time priority: above every ordinary thread, below anything the
/// administrator marked real-time.
const PRIORITY: i32 = 1;

/// How much higher the HTTP threads' nice value is than the process's (the highest is 19).
pub(crate) const HTTP_NICENESS: i32 = 10;

/// Raises the calling thread, and logs whether that worked, naming it `who`.
pub(crate) fn raise_and_say(who: &str) {
    match raise_current_thread() {
        Ok(()) => log::info(format_args!("{who} thread: real-time scheduling (SCHED_FIFO)")),
        Err(error) => log::info(format_args!(
            "{who} thread: ordinary scheduling ({error}); under full CPU load it may wait a scheduler slice to run"
        )),
    }
}

/// Moves the calling thread to `SCHED_FIFO` at the lowest real-time priority.
#[cfg(target_os = "linux")]
pub fn raise_current_thread() -> io::Result<()> {
    set_this_thread_policy(libc::SCHED_FIFO, PRIORITY)
}

/// Moves the calling thread to `policy` at `priority` (0 for a policy that is not real-time).
#[cfg(target_os = "linux")]
fn set_this_thread_policy(policy: libc::c_int, priority: i32) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: priority };
    // SAFETY: `sched_setscheduler` reads `param` (a valid, initialised struct that outlives the
    // call) and changes only the scheduling policy of the calling thread (pid 0).
    let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub fn raise_current_thread() -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "real-time threads are only requested on Linux"))
}

/// Runs `f` on a new thread named `name` that first lowers itself by `HTTP_NICENESS`, and
/// returns what `f` returns; logs once how the lowering went. Linux gives a new thread its
/// creator's nice value, so every thread `f` starts, and every thread those start later, runs
/// lowered too: the HTTP side starts this way, and so tiny_http's accept and connection
/// threads (which are not ours to hook) start lowered, however many it adds under load. The
/// calling thread keeps its priority. Fails only if no thread can be started.
pub fn start_lowered<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    thread::scope(|scope| {
        let starter = thread::Builder::new().name(name.to_owned()).spawn_scoped(scope, move || {
            match lower_this_thread() {
                Ok(nice) => log::info(format_args!(
                    "{name} and the threads it starts: nice {nice}, below the pacer and the worker"
                )),
                Err(error) => {
                    log::info(format_args!("{name} and the threads it starts: priority not lowered ({error})"))
                }
            }
            f()
        })?;
        Ok(starter.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    })
}

/// How long the calling thread has spent runnable but waiting for a CPU since it started, from
/// `/proc/thread-self/schedstat`; `None` where the OS does not say.
pub(crate) fn runnable_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().nth(1)?.parse().ok().map(Duration::from_nanos)
}

/// Moves the calling thread to `SCHED_IDLE`: it runs only when a CPU has nothing else to do.
/// Any thread may lower itself so; none can come back without privileges.
#[cfg(target_os = "linux")]
pub(crate) fn idle_this_thread() -> io::Result<()> {
    set_this_thread_policy(libc::SCHED_IDLE, 0)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn idle_this_thread() -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "thread priorities are only changed on Linux"))
}

/// Raises the calling thread's nice value by [`HTTP_NICENESS`] (up to 19, the lowest priority)
/// and returns the new value. Affects this thread only (Linux keeps a nice value per thread).
#[cfg(target_os = "linux")]
pub(crate) fn lower_this_thread() -> io::Result<i32> {
    let nice = (this_thread_nice()? + HTTP_NICENESS).min(19);
    // SAFETY: `gettid` has no preconditions; `setpriority` with `PRIO_PROCESS` and a thread id
    // changes only that thread's nice value and touches no memory of ours.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if rc == 0 {
        Ok(nice)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn lower_this_thread() -> io::Result<i32> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "thread priorities are only changed on Linux"))
}

/// The calling thread's nice value.
#[cfg(target_os = "linux")]
pub(crate) fn this_thread_nice() -> io::Result<i32> {
    // SAFETY: `__errno_location` points at this thread's `errno`, which we clear because
    // `getpriority` may return -1 on success; `gettid` and `getpriority` touch no memory of ours.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t);
        match io::Error::last_os_error() {
            error if nice == -1 && error.raw_os_error() != Some(0) => Err(error),
            _ => Ok(nice),
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn this_thread_nice() -> io::Result<i32> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "thread priorities are only read on Linux"))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_lowered_start_lowers_every_thread_it_starts_and_not_the_caller() {
        let caller = this_thread_nice().unwrap();
        let (starter, child, grandchild) = start_lowered("lowered-test", || {
            let nested = || {
                let grandchild = thread::spawn(|| this_thread_nice().unwrap()).join().unwrap();
                (this_thread_nice().unwrap(), grandchild)
            };
            let (child, grandchild) = thread::spawn(nested).join().unwrap();
            (this_thread_nice().unwrap(), child, grandchild)
        })
        .unwrap();
        let lowered = (caller + HTTP_NICENESS).min(19);
        assert_eq!((starter, child, grandchild), (lowered, lowered, lowered));
        assert_eq!(this_thread_nice().unwrap(), caller, "the caller keeps its priority");
    }

    #[test]
    fn a_panic_in_a_lowered_start_reaches_the_caller() {
        let caught = std::panic::catch_unwind(|| start_lowered("lowered-panic", || panic!("on purpose")));
        assert!(caught.is_err());
    }

    #[test]
    fn an_idle_thread_is_sched_idle_and_the_caller_is_not() {
        // SAFETY (both calls): `sched_getscheduler(0)` reads the calling thread's policy only.
        let policy = || unsafe { libc::sched_getscheduler(0) };
        let before = policy();
        let idle = thread::spawn(move || idle_this_thread().map(|()| policy())).join().unwrap().unwrap();
        assert_eq!(idle, libc::SCHED_IDLE);
        assert_eq!(policy(), before);
    }

    #[test]
    fn the_pacers_runnable_time_is_read_where_linux_says_it() {
        assert!(runnable_time().is_some());
    }
}
