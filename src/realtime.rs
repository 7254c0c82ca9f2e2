//! Asks the OS to run the calling thread ahead of ordinary threads (`SCHED_FIFO`), for the
//! pacer thread.
//!
//! Why: under load hundreds of connection and handler threads share two cores, and an ordinary
//! thread woken at its deadline waits its turn for a slice of a CPU (measured under `make bench`:
//! 1 to 5 ms late for one release in ten, 40 ms at worst). A real-time thread runs as soon as it
//! wakes. The pacer sleeps except for a spin of at most 500 µs per release, so it cannot starve
//! the rest. Linux allows this to root or with `CAP_SYS_NICE`; elsewhere the pacer stays an
//! ordinary thread and says so once.
#![allow(unsafe_code)]

use std::io;

/// The lowest real-time priority: above every ordinary thread, below anything the
/// administrator marked real-time.
const PRIORITY: i32 = 1;

/// Moves the calling thread to `SCHED_FIFO` at [`PRIORITY`].
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
