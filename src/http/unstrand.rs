//! A workaround for connections that tiny_http 0.12.0 accepts but never reads.
//!
//! Its connection pool starts a thread only when its count of idle workers is zero, and that
//! count lags: in a burst, connections queue behind workers that are already busy with
//! keep-alive clients, and wait there until some connection closes. Every task that ends lets
//! a worker take the next queued connection, and a new task when none is idle starts a thread
//! that does the same. So this thread "ticks": it connects to tiny_http's listener and closes
//! at once, which is such a task. It watches the process's thread count every 5 ms and ticks as
//! soon as it grows (new connections arrived, some may be queued), then every 100 ms until it
//! has not grown for [`SETTLE`]. Then it stays quiet: each tick wakes an idle pool thread, which
//! would keep tiny_http's spare threads (they leave after 5 s without a task) alive for good.
//! Remove this module when tiny_http is replaced or fixed.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

const WATCH: Duration = Duration::from_millis(5);
const IDLE_TICK: Duration = Duration::from_millis(100);
/// How long after the last growth the ticks go on.
const SETTLE: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Unstrander {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

impl Unstrander {
    pub fn start(listening: SocketAddr) -> io::Result<Unstrander> {
        let target = SocketAddr::new(loopback_for(listening.ip()), listening.port());
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = {
            let stop = Arc::clone(&stop);
            thread::Builder::new().name("unstrand".into()).spawn(move || run(target, &stop))?
        };
        Ok(Unstrander { stop, thread })
    }

    pub fn stop(self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        let _ = self.thread.join();
    }
}

fn run(target: SocketAddr, stop: &(Mutex<bool>, Condvar)) {
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
            let _ = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT);
            since_tick = Duration::ZERO;
        }
        if pause(WATCH) {
            return;
        }
        since_tick += WATCH;
        since_growth = since_growth.saturating_add(WATCH);
    }
}

/// Where to reach a listener bound to `ip` from this host.
pub(super) fn loopback_for(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// Threads in this process, from `/proc/self/status`; `None` where that cannot be read.
fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| line.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok())
}
