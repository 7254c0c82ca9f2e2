//! A workaround for connections that tiny_http 0.12.0 accepts but never reads.
//!
//! Its connection pool starts a thread only when its count of idle workers is zero, and that
//! count lags: in a burst, connections queue behind workers that are already busy with
//! keep-alive clients, and wait there until some connection closes. Every task that ends lets
//! a worker take the next queued connection, and a new task when none is idle starts a thread
//! that does the same. So this thread "ticks": it connects to tiny_http's socket and closes
//! at once, which is such a task. It watches the process's thread count every 5 ms and ticks as
//! soon as it grows (new connections arrived, some may be queued), then every 100 ms until it
//! has not grown for [`SETTLE`]. Then it stays quiet: each tick wakes an idle pool thread, which
//! would keep tiny_http's spare threads (they leave after 5 s without a task) alive for good.
//! Remove this module when tiny_http is replaced or fixed.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

const WATCH: Duration = Duration::from_millis(5);
const IDLE_TICK: Duration = Duration::from_millis(100);
/// How long after the last growth the ticks go on.
const SETTLE: Duration = Duration::from_secs(2);

pub(super) struct Unstrander {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

impl Unstrander {
    /// Ticks tiny_http's pool by connecting to its socket at `listening`.
    pub(super) fn start(listening: &Path) -> io::Result<Unstrander> {
        let target = listening.to_owned();
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = {
            let stop = Arc::clone(&stop);
            thread::Builder::new().name("unstrand".into()).spawn(move || run(target, &stop))?
        };
        Ok(Unstrander { stop, thread })
    }

    pub(super) fn stop(self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        let _ = self.thread.join();
    }
}

fn run(target: PathBuf, stop: &(Mutex<bool>, Condvar)) {
    let pause = |d: Duration| {
        let mut stopped = stop.0.lock();
        if !*stopped {
            stop.1.wait_for(&mut stopped, d);
        }
        *stopped
    };
    let mut threads = thread_count();
    let mut since_tick = IDLE_TICK;
    let mut since_growth = Duration::ZERO;
    loop {
        let now = thread_count();
        // A pool that grew has just met new connections, and may have queued some of them.
        let grew = matches!((threads, now), (Some(before), Some(after)) if after > before);
        threads = now;
        if grew {
            since_growth = Duration::ZERO;
        }
        if grew || (since_tick >= IDLE_TICK && since_growth < SETTLE) {
            // The connection closes as it drops: an empty task for the pool.
            let _ = UnixStream::connect(&target);
            since_tick = Duration::ZERO;
        }
        if pause(WATCH) {
            return;
        }
        since_tick += WATCH;
        since_growth = since_growth.saturating_add(WATCH);
    }
}

/// Threads in this process, from `/proc/self/status`; `None` where that cannot be read.
fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| line.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok())
}
