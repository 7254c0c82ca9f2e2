//! The public listener and one relay per client connection: `http-front` accepts, and each
//! connection's `relay-in` thread copies the client's bytes to tiny_http over a loopback
//! connection (checking each read with [`Tracker`] first), while its `relay-out` thread copies
//! tiny_http's answers back. `relay-in` owns the connection: it joins `relay-out`, writes our own
//! last answer if one is due (505, 408), closes both sockets and forgets the connection.
//! [`Connections`] maps the loopback address tiny_http sees to the client's connection.
//!
//! Upstream defect: tiny_http 0.12.0 deadlocks a connection thread, and keeps its two file
//! descriptors, on a request line with version `HTTP/2.0` or `HTTP/3.0` (`client.rs`: it asks
//! for the next response writer while the request it just parsed still holds the previous one).
//! Nothing can unblock that thread, so such a line must never reach it: the tracker finds it,
//! the relay forwards nothing more, lets the answers to earlier requests drain, then answers
//! `505` itself and closes (`tests/hostile.rs`). The relay also enforces the idle timeout on the
//! client side and owns the connection's identity (the quarantine's key), so a connection ends,
//! with everything it held, when the client is silent, and at shutdown.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::tracker::{Position, Tracker, Verdict};
use crate::http::api::Reply;
use crate::http::error::ApiError;
use crate::log;

/// Relay threads copy through a buffer on the heap; their stacks stay small.
const RELAY_STACK: usize = 128 << 10;
const BUFFER: usize = 16 << 10;
/// After a failed `accept` (out of file descriptors, most likely), wait this long.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Why a connection was cut short, as the request being read on it should learn it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// The client was silent for the idle timeout.
    IdleTimeout = 1,
    /// The server is stopping.
    ShuttingDown = 2,
}

/// One client connection and its loopback twin.
pub(crate) struct Conn {
    client: TcpStream,
    server: TcpStream,
    peer: SocketAddr,
    quarantined: AtomicBool,
    cut: AtomicU8,
    /// Set by `relay-in` once it forwards nothing more; `relay-out` then leaves the client
    /// socket to it.
    in_done: AtomicBool,
    /// Set by `relay-out` when tiny_http closed the connection first.
    server_closed: AtomicBool,
}

impl Conn {
    /// The client's address and port.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Nothing more sent on this connection is acted on; ends with the connection.
    pub(crate) fn quarantine(&self) {
        self.quarantined.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_quarantined(&self) -> bool {
        self.quarantined.load(Ordering::Relaxed)
    }

    /// Why the relay stopped forwarding, if it stopped for a reason the request should report.
    pub(crate) fn cut(&self) -> Option<Cut> {
        match self.cut.load(Ordering::Acquire) {
            1 => Some(Cut::IdleTimeout),
            2 => Some(Cut::ShuttingDown),
            _ => None,
        }
    }

    fn set_cut(&self, cut: Cut) {
        let _ = self.cut.compare_exchange(0, cut as u8, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Wakes both relay threads at once: every read and write on both sockets fails.
    fn abort(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }
}

/// The live connections by the address tiny_http sees them from (the relay's loopback end).
#[derive(Default)]
pub(crate) struct Connections {
    live: Mutex<HashMap<SocketAddr, Arc<Conn>>>,
    emptied: Condvar,
}

impl Connections {
    /// The client connection that tiny_http sees as `seen_from`; `None` for our own loopback
    /// connections (the unstrander's, the health probe's).
    pub(crate) fn get(&self, seen_from: SocketAddr) -> Option<Arc<Conn>> {
        self.live.lock().get(&seen_from).cloned()
    }

    fn insert(&self, key: SocketAddr, conn: Arc<Conn>) {
        self.live.lock().insert(key, conn);
    }

    fn remove(&self, key: SocketAddr) {
        let mut live = self.live.lock();
        live.remove(&key);
        if live.is_empty() {
            self.emptied.notify_all();
        }
    }

    fn each(&self, f: impl Fn(&Conn)) {
        let live: Vec<Arc<Conn>> = self.live.lock().values().cloned().collect();
        live.iter().for_each(|conn| f(conn));
    }

    /// Waits until no connection is left, or `until`; whether none is.
    fn wait_empty(&self, until: Instant) -> bool {
        let mut live = self.live.lock();
        while !live.is_empty() {
            if self.emptied.wait_until(&mut live, until).timed_out() {
                break;
            }
        }
        live.is_empty()
    }
}

struct Setup {
    /// Where tiny_http listens.
    server: SocketAddr,
    idle_timeout: Duration,
    connections: Arc<Connections>,
    stopping: AtomicBool,
}

/// The accept thread and every relay; [`Front::stop`] ends them.
pub(crate) struct Front {
    setup: Arc<Setup>,
    public: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl Front {
    /// Accepts on `public` (whose accepted sockets inherit its timeouts) and relays each
    /// connection to `server`.
    pub(crate) fn start(
        public: TcpListener,
        server: SocketAddr,
        idle_timeout: Duration,
        connections: Arc<Connections>,
    ) -> io::Result<Front> {
        let setup = Arc::new(Setup { server, idle_timeout, connections, stopping: AtomicBool::new(false) });
        let addr = public.local_addr()?;
        let acceptor = {
            let setup = Arc::clone(&setup);
            thread::Builder::new().name("http-front".into()).spawn(move || accept(&public, &setup))?
        };
        Ok(Front { setup, public: addr, acceptor })
    }

    /// Stops accepting; every connection forwards nothing more (a body being read ends as
    /// "shutting down"), and gets `grace` to receive the answers under way; then whatever is
    /// left is cut. Returns once every relay is gone.
    pub(crate) fn stop(self, grace: Duration) {
        self.setup.stopping.store(true, Ordering::Release);
        // Wakes the accept thread, which then sees `stopping`.
        let _ = TcpStream::connect_timeout(&super::loopback(self.public), Duration::from_secs(1));
        let _ = self.acceptor.join();
        let connections = &self.setup.connections;
        connections.each(|conn| {
            conn.set_cut(Cut::ShuttingDown);
            // `relay-in` wakes from its read and half-closes towards tiny_http.
            let _ = conn.client.shutdown(Shutdown::Read);
        });
        if !connections.wait_empty(Instant::now() + grace) {
            connections.each(Conn::abort);
            connections.wait_empty(Instant::now() + grace);
        }
    }
}

fn accept(listener: &TcpListener, setup: &Arc<Setup>) {
    let mut failures = 0u32;
    loop {
        let accepted = listener.accept();
        if setup.stopping.load(Ordering::Acquire) {
            return;
        }
        match accepted {
            Ok((client, peer)) => {
                failures = 0;
                let setup = Arc::clone(setup);
                let started = thread::Builder::new()
                    .name("relay-in".into())
                    .stack_size(RELAY_STACK)
                    .spawn(move || relay(client, peer, &setup));
                if let Err(error) = started {
                    log::info(format_args!("cannot start a relay thread ({error}); a connection was closed"));
                }
            }
            // The listener's receive timeout (copied to accepted sockets) also bounds `accept`.
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                if failures == 0 {
                    log::info(format_args!("accept failed ({error}); retrying"));
                }
                failures = failures.saturating_add(1);
                thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

/// How `relay-in` stopped forwarding.
enum End {
    /// The client closed its side, or its connection failed.
    ClientGone,
    /// tiny_http closed the connection first.
    ServerClosed,
    /// The client was silent for the idle timeout.
    Idle,
    /// A request line tiny_http cannot answer.
    Refused,
    Stopping,
}

/// `relay-in`: the whole life of one client connection.
fn relay(client: TcpStream, peer: SocketAddr, setup: &Setup) {
    let server = match TcpStream::connect(setup.server) {
        Ok(server) => server,
        Err(error) => {
            log::info(format_args!("cannot reach the HTTP workers over loopback ({error}); a connection was closed"));
            return;
        }
    };
    let Ok(key) = server.local_addr() else { return };
    let _ = server.set_nodelay(true);
    // A tiny_http that neither reads nor writes for this long is given up on.
    let _ = server.set_write_timeout(Some(setup.idle_timeout));
    let _ = server.set_read_timeout(Some(setup.idle_timeout));
    let conn = Arc::new(Conn {
        client,
        server,
        peer,
        quarantined: AtomicBool::new(false),
        cut: AtomicU8::new(0),
        in_done: AtomicBool::new(false),
        server_closed: AtomicBool::new(false),
    });
    setup.connections.insert(key, Arc::clone(&conn));
    if setup.stopping.load(Ordering::Acquire) {
        conn.set_cut(Cut::ShuttingDown);
    }
    let out = {
        let conn = Arc::clone(&conn);
        let idle = setup.idle_timeout;
        thread::Builder::new().name("relay-out".into()).stack_size(RELAY_STACK).spawn(move || relay_out(&conn, idle))
    };
    let last_word = match out {
        Ok(out) => {
            let mut tracker = Tracker::default();
            let end = relay_in(&conn, &mut tracker);
            let last_word = last_word(&conn, &end, tracker.position());
            conn.in_done.store(true, Ordering::Release);
            // tiny_http reads an end of stream: it answers what it has, then closes.
            let _ = conn.server.shutdown(Shutdown::Write);
            let _ = out.join();
            last_word
        }
        Err(_) => None,
    };
    if let Some(error) = last_word {
        let _ = (&conn.client).write_all(&raw_reply(&error));
    }
    let _ = conn.client.shutdown(Shutdown::Both);
    setup.connections.remove(key);
}

/// Copies the client's bytes to tiny_http until something ends it.
fn relay_in(conn: &Conn, tracker: &mut Tracker) -> End {
    let mut buffer = vec![0; BUFFER];
    loop {
        if conn.cut() == Some(Cut::ShuttingDown) {
            return End::Stopping;
        }
        let read = match (&conn.client).read(&mut buffer) {
            Ok(0) if conn.server_closed.load(Ordering::Acquire) => return End::ServerClosed,
            Ok(0) if conn.cut() == Some(Cut::ShuttingDown) => return End::Stopping,
            Ok(0) => return End::ClientGone,
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return End::Idle,
            Err(_) => return End::ClientGone,
        };
        let (forward, verdict) = match tracker.feed(&buffer[..read]) {
            Verdict::Forward => (read, None),
            Verdict::Refuse { forward } => (forward, Some(End::Refused)),
        };
        if (&conn.server).write_all(&buffer[..forward]).is_err() {
            return End::ServerClosed;
        }
        if let Some(end) = verdict {
            return end;
        }
    }
}

/// What we answer ourselves once tiny_http's answers are out, if anything.
fn last_word(conn: &Conn, end: &End, position: Position) -> Option<ApiError> {
    match (end, position) {
        (End::Refused, _) => Some(ApiError::VersionNotSupported),
        // tiny_http reads a short body itself and drops the connection without a word when it
        // stalls; a longer one is read by our handler, which answers 408 on learning the cut.
        (End::Idle, Position::InBody { buffered }) => {
            conn.set_cut(Cut::IdleTimeout);
            buffered.then_some(ApiError::RequestTimeout)
        }
        // tiny_http's own read timeout (the same idle timeout) came first.
        (End::ServerClosed, Position::InBody { buffered: true }) => Some(ApiError::RequestTimeout),
        (End::Idle, _) => {
            conn.set_cut(Cut::IdleTimeout);
            None
        }
        _ => None,
    }
}

/// `relay-out`: copies tiny_http's answers to the client until tiny_http closes.
fn relay_out(conn: &Conn, idle: Duration) {
    let mut buffer = vec![0; BUFFER];
    let mut draining_since: Option<Instant> = None;
    loop {
        match (&conn.server).read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => {
                if (&conn.client).write_all(&buffer[..read]).is_err() {
                    // The client does not take its answers: nothing more is worth doing.
                    conn.abort();
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                // Quiet while the client may still send: fine. Quiet for longer than the idle
                // timeout once nothing more is forwarded: tiny_http is given up on.
                if conn.in_done.load(Ordering::Acquire) {
                    let since = *draining_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= idle {
                        conn.abort();
                        return;
                    }
                }
            }
            Err(_) => break,
        }
    }
    if !conn.in_done.load(Ordering::Acquire) {
        // tiny_http closed first (`Connection: close`, a head it refused, its own timeout):
        // wake `relay-in`, which then closes the client's connection.
        conn.server_closed.store(true, Ordering::Release);
        let _ = conn.client.shutdown(Shutdown::Read);
    }
}

/// A complete HTTP/1.1 answer for `error`, closing the connection.
fn raw_reply(error: &ApiError) -> Vec<u8> {
    let reply = Reply::error(error);
    let reason = match reply.status {
        408 => "Request Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    };
    let mut bytes = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(&reply.body);
    bytes
}
