//! Asks the OS to run the calling thread ahead of ordinary threads (`SCHED_FIFO`), for the
//! pacer and worker threads.
//!
//! Why: under load hundreds of connection and handler threads share two cores, and an ordinary
//! thread woken at its deadline waits its turn for a slice of a CPU (measured under `make bench`:
//! the pacer 1 to 5 ms late for one release in ten, 40 ms at worst; the worker's 5 ms calls took
//! 9 ms, so the batches fell a third behind the rate limit). A real-time thread runs as soon as
//! it wakes. Both sleep almost all the time (the pacer spins at most 500 µs per release), so
//! they cannot starve the rest. The queue lock inherits priority (`pacer.rs`), so a handler
//! preempted while holding it runs at once when one of them waits for it. Linux allows this to
//! root or with `CAP_SYS_NICE`; elsewhere the threads stay ordinary and say so once.
#![allow(unsafe_code)]

use std::io;

use crate::log;

/// The lowest real-time priority: above every ordinary thread, below anything the
/// administrator marked real-time.
const PRIORITY: i32 = 1;

/// A mutex for data the real-time threads share with ordinary ones. On Linux it inherits
/// priority: while a real-time thread waits for it, whoever holds it runs at that priority, so
/// a holder preempted by busy ordinary threads cannot keep a real-time one waiting (measured:
/// up to 40 ms with a plain mutex under `make bench`). Its slow path is a system call, so keep
/// it out of places where many ordinary threads contend (see `Queue::lock`).
#[cfg(target_os = "linux")]
pub type PiMutex<T> = priority_inheriting_lock::PriorityInheritingLock<T>;
#[cfg(target_os = "linux")]
pub type PiGuard<'a, T> = priority_inheriting_lock::PriorityInheritingLockGuard<'a, T>;
#[cfg(not(target_os = "linux"))]
pub type PiMutex<T> = parking_lot::Mutex<T>;
#[cfg(not(target_os = "linux"))]
pub type PiGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

/// Checks, once at start, that the kernel has the priority-inheriting futexes [`PiMutex`] uses
/// (`CONFIG_FUTEX_PI`, in every mainstream kernel): without them a contended lock would panic
/// in the middle of serving, so the service refuses to start instead, saying why.
#[cfg(target_os = "linux")]
pub fn check_priority_inheritance() -> Result<(), String> {
    use std::sync::Arc;
    use std::time::Duration;
    let lock = Arc::new(PiMutex::new(()));
    let held = lock.lock();
    let contender = {
        let lock = Arc::clone(&lock);
        // Blocks in the kernel (FUTEX_LOCK_PI) until the lock is let go: the path to check.
        std::thread::Builder::new().name("pi-check".into()).spawn(move || drop(lock.lock()))
    }
    .map_err(|e| format!("cannot start a thread: {e}"))?;
    std::thread::sleep(Duration::from_millis(2));
    drop(held);
    contender.join().map_err(|_| {
        "this kernel has no priority-inheriting futexes (CONFIG_FUTEX_PI), which ingestd's queue lock needs".to_owned()
    })
}

#[cfg(not(target_os = "linux"))]
pub fn check_priority_inheritance() -> Result<(), String> {
    Ok(())
}

/// Raises the calling thread, and logs whether that worked, naming it `who`.
pub fn raise_and_say(who: &str) {
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
    let param = libc::sched_param { sched_priority: PRIORITY };
    // SAFETY: `sched_setscheduler` reads `param` (a valid, initialised struct that outlives the
    // call) and changes only the scheduling policy of the calling thread (pid 0).
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
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
