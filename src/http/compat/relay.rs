//! The public listener and the relay to tiny_http: two `http-relay-N` threads each run an epoll
//! loop over non-blocking sockets. Each accepts client connections in turn, opens their twins to
//! tiny_http's internal endpoint (a Unix socket, `endpoint.rs`) once a whole head is ready to
//! forward, and moves bytes both ways as each connection's [`Link`] asks (the link holds the
//! state; this module does the I/O, the timers and the bookkeeping). Every request reaches
//! tiny_http stamped with its connection's identity (a header right after the request line, see
//! `tracker.rs`), and [`Connections`]
//! maps a stamp to the client's connection ([`Conn`]: its peer address, its quarantine, why it
//! was cut).
//!
//! Upstream defect: tiny_http 0.12.0 deadlocks a connection thread, and keeps its two file
//! descriptors, on a request line with version `HTTP/2.0` or `HTTP/3.0` (`client.rs`: it asks
//! for the next response writer while the request it just parsed still holds the previous one).
//! Nothing can unblock that thread, so such a line must never reach it: the link's tracker
//! finds it, nothing more is forwarded, the answers to earlier requests drain, then the relay
//! answers `505` itself and closes (`tests/hostile.rs`). The relay also enforces the idle
//! timeout on the client side and owns the connection's identity (the quarantine's key), so a
//! connection ends, with everything it held, when the client is silent, and at shutdown.
//!
//! Room for new clients: a connection takes [`FDS_PER_CONNECTION`] file descriptors, and
//! tiny_http's accept loop ends when it runs out, so near the most the open-files limit allows
//! (less [`FDS_KEPT`]), connections idle for [`IDLE_ENOUGH`] or more (between requests, or in a
//! head they began) are closed, longest idle first, to keep [`HEADROOM`] free; each relay closes
//! its own and wakes the others when it has none. With none idle, a new client gets `503
//! overloaded`, as does one that tiny_http's full backlog turns away for [`CONNECT_PATIENCE`].
//! Each head goes to tiny_http stamped with a per-process secret, so a request that did not
//! come through a relay (none can be trusted) is known.
//!
//! Why epoll rather than threads per connection: a thread pair per connection cost two thread
//! wake-ups per request; here, under load, one wake-up serves many ready sockets.
//! Level-triggered: a socket is watched only for what its link wants (reading while its buffer
//! has room, writing while bytes wait), one read per readiness suffices (edge-triggered would
//! read again until `EAGAIN`), and writes are tried at once, so epoll is asked to watch for
//! writability only when a socket is full.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustix::buffer::spare_capacity;
use rustix::event::{epoll, eventfd, EventfdFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{self as net, AddressFamily, SendFlags, SocketAddrUnix, SocketFlags, SocketType};

use super::link::{raw_reply, Interest, Link, CAP};
use super::strand::Strands;
use super::tracker::{Caps, CHUNK_LINE_CAP};
use crate::http::api::{route_label, Reply, UNMATCHED};
use crate::http::error::ApiError;
use crate::http::serial::Serial;
use crate::http::telemetry;
use crate::log;

/// File descriptors a client connection takes: its socket, ours to tiny_http, tiny_http's end
/// and the copy tiny_http makes of it (one to read, one to write).
const FDS_PER_CONNECTION: u64 = 4;
/// File descriptors kept for everything else: listeners, epoll, the journal, logs, upstream calls.
const FDS_KEPT: u64 = 64;

/// After a failed `accept` (out of file descriptors, most likely), stop accepting this long.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// While tiny_http's socket has a full backlog (a burst of new connections), a connection to
/// it is tried again this often, for [`CONNECT_PATIENCE`] at most; then the client gets a 503.
const CONNECT_RETRY: Duration = Duration::from_millis(5);
const CONNECT_PATIENCE: Duration = Duration::from_secs(1);
/// A message repeated for many connections is logged at most this often, with a count.
const LOG_EVERY: Duration = Duration::from_secs(1);
/// Connections kept free for new clients, near the most the open-files limit allows, by closing
/// idle ones (see [`Relay::trim_idle`]).
const HEADROOM: usize = 8;
/// Only a connection idle at least this long is closed to make room: one just opened may be
/// about to send its request.
const IDLE_ENOUGH: Duration = Duration::from_secs(1);
/// Connections accepted per wake-up, so that a flood of them does not starve the others.
const ACCEPTS_PER_WAKE: usize = 64;
/// Readiness events taken per wake-up.
const EVENTS: usize = 256;
/// The epoll data of the listener and of the waker; a link's sockets use `id * 2 + side`.
const LISTENER: u64 = u64::MAX;
const WAKER: u64 = u64::MAX - 1;

/// Empty connections made to tiny_http for connections it left unread (`/metrics`): a process
/// runs one HTTP server, so a count for all its relays.
static NUDGES: AtomicU64 = AtomicU64::new(0);

/// How many empty connections the relays have made to free a stranded one.
pub(crate) fn nudges() -> u64 {
    NUDGES.load(Ordering::Relaxed)
}

/// Looks at unanswered first requests, each ending in a nudge or in finding the request read
/// (`/metrics`, beside the nudges).
static LOOKS: AtomicU64 = AtomicU64::new(0);

pub(crate) fn looks() -> u64 {
    LOOKS.load(Ordering::Relaxed)
}

/// Why a connection was cut short, as the request being read on it should learn it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// The client did not send a whole head or body within the idle timeout.
    IdleTimeout = 1,
    /// The server is stopping.
    ShuttingDown = 2,
    /// The chunked body grew past `--max-body`.
    BodyTooLarge = 3,
    /// The chunked body is not framed as chunked bodies are.
    BadChunk = 4,
}

impl Cut {
    /// What the request whose body was cut short is answered; `max_body` is `--max-body`.
    pub(crate) fn error(self, max_body: usize) -> ApiError {
        match self {
            Cut::IdleTimeout => ApiError::RequestTimeout,
            Cut::ShuttingDown => ApiError::ShuttingDown,
            Cut::BodyTooLarge => ApiError::BodyTooLarge { limit: max_body },
            Cut::BadChunk => ApiError::BadFraming(format!(
                "the chunked body is malformed: each chunk is a hexadecimal size (a line of at most \
                 {CHUNK_LINE_CAP} bytes), CRLF, that many bytes, CRLF; the last is 0, CRLF, CRLF, with no trailers"
            )),
        }
    }
}

/// One client connection, as `http/` sees it.
pub(crate) struct Conn {
    peer: SocketAddr,
    quarantined: AtomicBool,
    /// The relay has closed it: answers can no longer reach the client.
    closed: AtomicBool,
    cut: AtomicU8,
    answers: Serial,
    /// Requests sent to tiny_http and not yet answered (briefly below zero when an answer
    /// comes before the relay counts its request).
    in_flight: AtomicIsize,
    /// The relay holds requests of this connection until earlier ones are answered.
    waiting: AtomicBool,
    /// Wakes the relay that carries the connection.
    relay: Arc<OwnedFd>,
    /// Its number, and where its relay learns which links to close.
    id: u64,
    closing: Arc<Mutex<Vec<u64>>>,
}

impl Conn {
    fn new(id: u64, peer: SocketAddr, relay: Arc<OwnedFd>, closing: Arc<Mutex<Vec<u64>>>) -> Conn {
        Conn {
            id,
            closing,
            peer,
            quarantined: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            cut: AtomicU8::new(0),
            answers: Serial::default(),
            in_flight: AtomicIsize::new(0),
            waiting: AtomicBool::new(false),
            relay,
        }
    }

    /// One of its requests is answered: the relay may send tiny_http one more.
    pub(crate) fn answered(&self) {
        // Ordered with the relay's `waiting` then `in_flight` (all SeqCst): either it sees this
        // answer, or this sees it waiting and wakes it.
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) {
            let _ = rustix::io::write(&*self.relay, &1u64.to_ne_bytes());
        }
    }

    /// Nothing more the client sends is forwarded; the connection closes once the answers
    /// under way are out (the `Connection: close` tiny_http would not send).
    pub(crate) fn close_after_answers(&self) {
        self.closing.lock().push(self.id);
        let _ = rustix::io::write(&*self.relay, &1u64.to_ne_bytes());
    }

    /// How many more requests tiny_http may get from it now.
    fn room_in_flight(&self) -> usize {
        let in_flight = usize::try_from(self.in_flight.load(Ordering::SeqCst)).unwrap_or(0);
        MAX_IN_FLIGHT.saturating_sub(in_flight)
    }

    /// Its requests' answers, one at a time.
    pub(crate) fn answers(&self) -> &Serial {
        &self.answers
    }

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

    /// Whether the relay has closed the connection: no answer can reach the client any more.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Why the relay stopped forwarding, if it stopped for a reason the request should report.
    pub(crate) fn cut(&self) -> Option<Cut> {
        match self.cut.load(Ordering::Acquire) {
            1 => Some(Cut::IdleTimeout),
            2 => Some(Cut::ShuttingDown),
            3 => Some(Cut::BodyTooLarge),
            4 => Some(Cut::BadChunk),
            _ => None,
        }
    }

    /// Set before the relay half-closes towards tiny_http, so a body reader that meets the end
    /// of its stream finds the reason.
    fn set_cut(&self, cut: Cut) {
        if self.cut.load(Ordering::Relaxed) == 0 {
            let _ = self.cut.compare_exchange(0, cut as u8, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

/// The most requests of one connection tiny_http has at once: a client that pipelines more
/// waits, and one that never reads its answers holds no more than this.
const MAX_IN_FLIGHT: usize = 8;

/// The header the relay puts first in every request it forwards: `<secret>.<connection>`.
pub(crate) const STAMP: &str = "X-Ingestd-Relay";

/// The live connections by the number in their stamp.
pub(crate) struct Connections {
    /// Random per process: a stamp is ours only with it (a client cannot make one up).
    secret: String,
    live: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Default for Connections {
    fn default() -> Connections {
        Connections { secret: uuid::Uuid::new_v4().simple().to_string(), live: Mutex::default() }
    }
}

/// Where a request reaching tiny_http came from, by its stamp.
pub(crate) enum Origin {
    /// A client connection the relay carries.
    Client(Arc<Conn>),
    /// Our own health probe.
    Probe,
    /// No stamp of ours: a request after a body whose end nobody knows, one on a connection
    /// already gone, or one from a local process that reached tiny_http's socket itself.
    /// Never acted on.
    Unknown,
}

/// The number in the probe's stamp; connections count from 1.
const PROBE: u64 = 0;

impl Connections {
    /// Where a request with this stamp (its first header's value, if that is ours) came from.
    pub(crate) fn origin(&self, stamp: Option<&str>) -> Origin {
        let Some((secret, id)) = stamp.and_then(|stamp| stamp.split_once('.')) else {
            return Origin::Unknown;
        };
        match id.parse() {
            _ if secret != self.secret => Origin::Unknown,
            Ok(PROBE) => Origin::Probe,
            Ok(id) => self.live.lock().get(&id).cloned().map_or(Origin::Unknown, Origin::Client),
            Err(_) => Origin::Unknown,
        }
    }

    /// The header line (CRLF included) that the health probe's requests carry.
    pub(crate) fn probe_stamp(&self) -> String {
        String::from_utf8_lossy(&self.stamp(PROBE)).into_owned()
    }

    /// The header line (CRLF included) that connection `id`'s requests carry.
    fn stamp(&self, id: u64) -> Vec<u8> {
        format!("{STAMP}: {}.{id}\r\n", self.secret).into_bytes()
    }

    fn insert(&self, id: u64, conn: Arc<Conn>) {
        self.live.lock().insert(id, conn);
    }

    fn remove(&self, id: u64) {
        self.live.lock().remove(&id);
    }

    fn len(&self) -> usize {
        self.live.lock().len()
    }
}

/// The most client connections open at once: beyond, tiny_http's accept loop would run out of
/// file descriptors (it then panics, and every connection waits for it to be restarted).
fn most_connections() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
    usize::try_from(soft.saturating_sub(FDS_KEPT) / FDS_PER_CONNECTION).unwrap_or(usize::MAX).max(1)
}

/// The `http-relay-N` threads; [`Front::stop`] ends them.
pub(crate) struct Front {
    /// One per relay thread.
    wakers: Vec<Arc<OwnedFd>>,
    stop_by: Arc<Mutex<Option<Instant>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Front {
    /// Accepts on `public` and relays each connection to tiny_http's socket at `server`, with
    /// `relays` threads; each accepts in turn and keeps the connections it accepted. Requests
    /// beyond `caps` are refused.
    pub(crate) fn start(
        public: TcpListener,
        server: &Path,
        idle_timeout: Duration,
        caps: Caps,
        connections: Arc<Connections>,
        relays: usize,
    ) -> io::Result<Front> {
        public.set_nonblocking(true)?;
        // std listens with a backlog of 128; listening again on a listening socket resizes it.
        net::listen(&public, super::BACKLOG)?;
        let relays = relays.max(1) as u64;
        let stop_by = Arc::new(Mutex::new(None));
        let mut front = Front { wakers: Vec::new(), stop_by: Arc::clone(&stop_by), threads: Vec::new() };
        let wakers = (0..relays)
            .map(|_| eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        for (index, waker) in (0..relays).zip(&wakers) {
            let listener = public.try_clone()?;
            let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
            let waker = Arc::clone(waker);
            watch_listener(&epoll, &listener)?;
            epoll::add(&epoll, &*waker, epoll::EventData::new_u64(WAKER), epoll::EventFlags::IN)?;
            let relay = Relay {
                epoll,
                listener: Some(listener),
                waker: Arc::clone(&waker),
                server: server.to_owned(),
                idle: idle_timeout,
                caps,
                connections: Arc::clone(&connections),
                links: HashMap::new(),
                // Numbers 1 + index, 1 + index + relays, ...: no two relays share one.
                next_id: index + 1,
                id_step: relays,
                timers: BinaryHeap::new(),
                accept_paused_until: None,
                accept_failures: 0,
                stop_by: None,
                strands: Strands::default(),
                holding: HashSet::new(),
                scratch: vec![0; CAP],
                most_connections: most_connections(),
                refusing: false,
                evicting: false,
                unreachable_log: log::Throttle::new(LOG_EVERY),
                closing: Arc::default(),
                others: wakers.iter().filter(|other| !Arc::ptr_eq(other, &waker)).cloned().collect(),
            };
            let stop_by = Arc::clone(&stop_by);
            let started = thread::Builder::new().name(format!("http-relay-{index}")).spawn(move || relay.run(&stop_by));
            match started {
                Ok(thread) => {
                    front.wakers.push(waker);
                    front.threads.push(thread);
                }
                Err(error) => {
                    front.stop(Duration::ZERO);
                    return Err(error);
                }
            }
        }
        Ok(front)
    }

    /// Stops accepting; every connection forwards nothing more (a body being read ends as
    /// "shutting down"), and gets `grace` to receive the answers under way; then whatever is
    /// left is cut. Returns once the relay threads are gone.
    pub(crate) fn stop(self, grace: Duration) {
        *self.stop_by.lock() = Some(Instant::now() + grace);
        for waker in &self.wakers {
            let _ = rustix::io::write(&**waker, &1u64.to_ne_bytes());
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Watches the listener; with several relays, one of them wakes per new connection.
fn watch_listener(epoll: &OwnedFd, listener: &TcpListener) -> io::Result<()> {
    let flags = epoll::EventFlags::IN | epoll::EventFlags::EXCLUSIVE;
    epoll::add(epoll, listener, epoll::EventData::new_u64(LISTENER), flags)?;
    Ok(())
}

/// A link and its two sockets.
struct Entry {
    link: Link,
    client: OwnedFd,
    /// Opened with the first bytes for tiny_http: a connection that never sends a whole head
    /// (silent, dripping, or refused at once) takes none of tiny_http's threads.
    server: Option<OwnedFd>,
    /// What epoll watches each socket for.
    watching: [Interest; 2],
    /// The last write to each socket would have blocked; cleared when it is writable again.
    blocked: [bool; 2],
    conn: Arc<Conn>,
    /// The earliest timer queued for this link.
    scheduled: Option<Instant>,
    /// Since when tiny_http's socket has turned its connection away (a full backlog).
    connecting_since: Option<Instant>,
}

const CLIENT: usize = 0;
const SERVER: usize = 1;

/// A link's socket on `side`, if it has one.
fn socket<'a>(client: &'a OwnedFd, server: &'a Option<OwnedFd>, side: usize) -> Option<&'a OwnedFd> {
    if side == CLIENT {
        Some(client)
    } else {
        server.as_ref()
    }
}

/// The loop's state; owned by one `http-relay-N` thread.
struct Relay {
    epoll: OwnedFd,
    listener: Option<TcpListener>,
    waker: Arc<OwnedFd>,
    /// tiny_http's internal socket.
    server: PathBuf,
    idle: Duration,
    caps: Caps,
    connections: Arc<Connections>,
    links: HashMap<u64, Entry>,
    /// The number of the next link, and the step to the one after.
    next_id: u64,
    id_step: u64,
    /// Each link's deadline, lazily: an entry whose time is no longer its link's `scheduled`
    /// is skipped; a link whose deadline moved later is looked at early and queued again.
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    accept_paused_until: Option<Instant>,
    accept_failures: u32,
    /// Set once stopping: when every link is cut, done or not.
    stop_by: Option<Instant>,
    /// Links whose connection tiny_http may have left unread.
    strands: Strands,
    /// Links holding requests until earlier ones are answered ([`Conn::answered`] wakes the loop).
    holding: HashSet<u64>,
    /// Every read lands here first.
    scratch: Vec<u8>,
    /// [`most_connections`], over all relays; beyond, a new connection gets a 503 and is closed.
    most_connections: usize,
    /// Whether it is refusing new connections (logged once per episode).
    refusing: bool,
    /// Whether it is closing idle connections to make room (logged once per episode).
    evicting: bool,
    /// "cannot reach the HTTP workers", once a [`LOG_EVERY`] at most.
    unreachable_log: log::Throttle,
    /// Links to close once their answers are out ([`Conn::close_after_answers`]).
    closing: Arc<Mutex<Vec<u64>>>,
    /// The other relays' wakers: woken to close their idle connections (see [`Relay::trim_idle`]).
    others: Vec<Arc<OwnedFd>>,
}

impl Relay {
    fn run(mut self, stop_by: &Mutex<Option<Instant>>) {
        let mut events = Vec::with_capacity(EVENTS);
        loop {
            let now = Instant::now();
            self.on_time(now);
            if let Some(by) = self.stop_by {
                if self.links.is_empty() {
                    return;
                }
                if now >= by {
                    let ids: Vec<u64> = self.links.keys().copied().collect();
                    for id in ids {
                        self.with_link(id, now, Link::abort);
                    }
                    return;
                }
            }
            let timeout = self.next_wake().map(|at| wait_for(at.saturating_duration_since(now)));
            events.clear();
            match epoll::wait(&self.epoll, spare_capacity(&mut events), timeout.as_ref()) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(error) => {
                    log::info(format_args!("the relay cannot wait for its sockets ({error}); retrying"));
                    thread::sleep(ACCEPT_BACKOFF);
                }
            }
            let now = Instant::now();
            for event in &events {
                match event.data.u64() {
                    LISTENER => self.accept(now),
                    WAKER => {
                        let mut count = [0; 8];
                        let _ = rustix::io::read(&*self.waker, &mut count);
                        if let Some(by) = *stop_by.lock() {
                            self.begin_stop(by, now);
                        }
                        let holding: Vec<u64> = self.holding.iter().copied().collect();
                        for id in holding {
                            self.with_link(id, now, |_| {});
                        }
                        let closing = std::mem::take(&mut *self.closing.lock());
                        for id in closing {
                            self.with_link(id, now, |link| link.close_after_answers(now));
                        }
                        self.trim_idle(now, false);
                    }
                    data => self.on_ready(data >> 1, (data & 1) as usize, event.flags, now),
                }
            }
        }
    }

    /// The next time the loop has something to do without any socket being ready.
    fn next_wake(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((at, _))| *at);
        [timer, self.accept_paused_until, self.stop_by, self.strands.next_due()].into_iter().flatten().min()
    }

    /// Fires the timers that are due, ticks tiny_http's pool, and resumes accepting after a pause.
    fn on_time(&mut self, now: Instant) {
        for id in self.strands.due(now) {
            LOOKS.fetch_add(1, Ordering::Relaxed);
            let server = self.links.get(&id).and_then(|entry| entry.server.as_ref());
            // A request waiting for a busy handler is no strand: tiny_http has read it.
            if server.is_some_and(|server| unread_by_peer(server).is_ok_and(|unread| unread > 0)) {
                // Closed at once: an empty task for tiny_http's pool.
                let _ = connect(&self.server);
                NUDGES.fetch_add(1, Ordering::Relaxed);
            } else {
                self.strands.answered(id);
            }
        }
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(entry) = self.links.get_mut(&id) else { continue };
            if entry.scheduled != Some(at) {
                continue;
            }
            entry.scheduled = None;
            if !entry.link.to_client().is_empty() {
                client_queue(entry, now);
            }
            self.with_link(id, now, |link| link.expire(now));
        }
        if self.accept_paused_until.is_some_and(|until| until <= now) {
            self.accept_paused_until = None;
            if let Some(listener) = &self.listener {
                let _ = watch_listener(&self.epoll, listener);
            }
        }
    }

    fn begin_stop(&mut self, by: Instant, now: Instant) {
        if self.stop_by.is_some() {
            return;
        }
        self.stop_by = Some(by);
        // Closing it deregisters it.
        self.listener = None;
        let ids: Vec<u64> = self.links.keys().copied().collect();
        for id in ids {
            self.with_link(id, now, |link| link.stop(now));
        }
    }

    fn accept(&mut self, now: Instant) {
        for _ in 0..ACCEPTS_PER_WAKE {
            let Some(listener) = &self.listener else { return };
            match net::acceptfrom_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC) {
                Ok((client, from)) => {
                    self.accept_failures = 0;
                    if !self.has_room(now) {
                        refuse(&client, &mut self.scratch);
                        // Their idle connections make room for the next one.
                        self.wake_others();
                        continue;
                    }
                    let peer = from.and_then(|from| SocketAddr::try_from(from).ok());
                    self.open(client, peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))), now);
                    self.trim_idle(now, true);
                }
                Err(Errno::AGAIN) => return,
                Err(Errno::INTR | Errno::CONNABORTED) => {}
                Err(error) => {
                    if self.accept_failures == 0 {
                        log::info(format_args!("accept failed ({error}); retrying"));
                    }
                    self.accept_failures = self.accept_failures.saturating_add(1);
                    let _ = epoll::delete(&self.epoll, listener);
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    /// Whether a new connection may be relayed, once an idle one is closed if need be; says
    /// once when they start being refused.
    fn has_room(&mut self, now: Instant) -> bool {
        let open = self.connections.len();
        let room = open < self.most_connections || self.evict_idle(now);
        if open < self.most_connections {
            self.evicting = false;
        }
        if !room && !self.refusing {
            log::info(format_args!(
                "{open} connections open, the most the open-files limit allows, none idle: new ones get 503 until \
                 some close"
            ));
        }
        self.refusing = !room;
        room
    }

    /// Near the most connections, closes this relay's idle ones, longest idle first, until
    /// [`HEADROOM`] are free again; with none of its own to close, wakes the other relays (when
    /// `wake_others`: from an accept, never from a wake-up, or two relays would wake each other
    /// for ever), which do the same with theirs. So idle connections, wherever they are, cannot
    /// use up the room new clients need.
    fn trim_idle(&mut self, now: Instant, wake_others: bool) {
        while self.connections.len() > self.most_connections.saturating_sub(HEADROOM) {
            if !self.evict_idle(now) {
                if wake_others {
                    self.wake_others();
                }
                return;
            }
        }
    }

    fn wake_others(&self) {
        for other in &self.others {
            let _ = rustix::io::write(&**other, &1u64.to_ne_bytes());
        }
    }

    /// Closes this relay's connection that has been idle longest between requests (nothing of a
    /// request held, nothing owed; for [`IDLE_ENOUGH`] at least), as its idle timeout would: idle
    /// connections alone cannot lock new clients out (a health check among them). Whether one
    /// was closed.
    fn evict_idle(&mut self, now: Instant) -> bool {
        let idle = self.links.iter().filter(|(_, entry)| entry.conn.in_flight.load(Ordering::SeqCst) == 0);
        let long_enough = |since: &Instant| now.saturating_duration_since(*since) >= IDLE_ENOUGH.min(self.idle);
        let mut idle: Vec<(Instant, u64)> =
            idle.filter_map(|(&id, entry)| Some((entry.link.idle_since().filter(long_enough)?, id))).collect();
        idle.sort_unstable();
        let Some(id) =
            idle.into_iter().map(|(_, id)| id).find(|id| self.links.get_mut(id).is_some_and(|entry| quiet(entry, now)))
        else {
            return false;
        };
        if !self.evicting {
            log::info(format_args!(
                "as many connections open as the open-files limit allows: closing the longest idle to make room"
            ));
        }
        self.evicting = true;
        self.with_link(id, now, Link::abort);
        true
    }

    /// Starts relaying a new client connection.
    fn open(&mut self, client: OwnedFd, peer: SocketAddr, now: Instant) {
        let id = self.next_id;
        self.next_id += self.id_step;
        let conn = Arc::new(Conn::new(id, peer, Arc::clone(&self.waker), Arc::clone(&self.closing)));
        self.connections.insert(id, Arc::clone(&conn));
        let entry = Entry {
            link: Link::new(self.idle, now, self.connections.stamp(id), self.caps),
            client,
            server: None,
            watching: [Interest::default(); 2],
            blocked: [false; 2],
            conn,
            scheduled: None,
            connecting_since: None,
        };
        self.links.insert(id, entry);
        self.with_link(id, now, |_| {});
    }

    fn on_ready(&mut self, id: u64, side: usize, flags: epoll::EventFlags, now: Instant) {
        let Some(entry) = self.links.get_mut(&id) else { return };
        let failed = flags.intersects(epoll::EventFlags::ERR | epoll::EventFlags::HUP);
        if failed || flags.contains(epoll::EventFlags::OUT) {
            entry.blocked[side] = false;
        }
        if failed || flags.contains(epoll::EventFlags::IN) {
            read(entry, side, &mut self.scratch, now);
            if side == SERVER {
                self.strands.answered(id);
            }
        }
        self.with_link(id, now, |_| {});
    }

    /// Applies `change` to a link, then does everything it now asks: publishes its cut,
    /// writes what it can each way, half-closes towards tiny_http, closes it when done,
    /// and otherwise watches its sockets and queues its deadline.
    fn with_link(&mut self, id: u64, now: Instant, change: impl FnOnce(&mut Link)) {
        let Some(entry) = self.links.get_mut(&id) else { return };
        change(&mut entry.link);
        if let Some((status, request)) = entry.link.take_said() {
            // Without a whole request line there is no route to count it under.
            match &request {
                Some((method, target)) => {
                    telemetry::record(method, target, route_label(target), status, Duration::ZERO)
                }
                None => telemetry::record("-", "-", UNMATCHED, status, Duration::ZERO),
            }
        }
        // Before the half-close, so a body reader that meets the end of its stream knows why.
        if let Some(cut) = entry.link.cut() {
            entry.conn.set_cut(cut);
        }
        let mut retry_at = None;
        if entry.server.is_none() && !entry.link.to_server().is_empty() {
            match connect(&self.server) {
                Ok(server) => {
                    entry.server = Some(server);
                    entry.connecting_since = None;
                    self.strands.opened(id, now);
                }
                Err(error)
                    if error.kind() == io::ErrorKind::WouldBlock
                        && now < *entry.connecting_since.get_or_insert(now) + CONNECT_PATIENCE =>
                {
                    retry_at = Some(now + CONNECT_RETRY);
                }
                Err(error) => {
                    if let Some(held_back) = self.unreachable_log.admit(now) {
                        let more = match held_back {
                            0 => String::new(),
                            n => format!(" ({n} more since the last such line)"),
                        };
                        log::info(format_args!("cannot reach the HTTP workers ({error}); a connection got 503{more}"));
                    }
                    entry.link.server_unreachable(now);
                }
            }
        }
        // Before reading the count, so that an answer either is counted or wakes this loop.
        entry.conn.waiting.store(true, Ordering::SeqCst);
        entry.link.admit(entry.conn.room_in_flight());
        flush(entry, SERVER, now);
        let forwarded = entry.link.take_forwarded();
        entry.conn.in_flight.fetch_add(isize::try_from(forwarded).unwrap_or(isize::MAX), Ordering::SeqCst);
        let holding = entry.link.holds_requests();
        entry.conn.waiting.store(holding, Ordering::SeqCst);
        if holding {
            self.holding.insert(id);
        } else {
            self.holding.remove(&id);
        }
        if entry.link.shut_server_due() {
            match &entry.server {
                // tiny_http reads an end of stream: it answers what it has, then closes.
                Some(server) => {
                    let _ = net::shutdown(server, net::Shutdown::Write);
                    entry.link.server_shut();
                }
                // tiny_http never saw this connection: nothing to wait for.
                None => entry.link.server_gone(now),
            }
        }
        flush(entry, CLIENT, now);
        if entry.link.shut_client_due() {
            // The client reads our answers to their end, then whatever it still sends is dropped.
            let _ = net::shutdown(&entry.client, net::Shutdown::Write);
            entry.link.client_shut(now);
            entry.server = None;
        }
        if entry.link.closable() {
            let _ = net::shutdown(&entry.client, net::Shutdown::Both);
            entry.conn.closed.store(true, Ordering::Relaxed);
            // Closing the sockets deregisters them.
            self.links.remove(&id);
            self.connections.remove(id);
            self.strands.answered(id);
            self.holding.remove(&id);
            return;
        }
        let wanted = [entry.link.client_interest(), entry.link.server_interest()];
        for side in [CLIENT, SERVER] {
            let data = epoll::EventData::new_u64(id * 2 + side as u64);
            if let Some(socket) = socket(&entry.client, &entry.server, side) {
                watch(&self.epoll, socket, data, &mut entry.watching[side], wanted[side]);
            }
        }
        if let Some(deadline) = [entry.link.deadline(), retry_at].into_iter().flatten().min() {
            if entry.scheduled.is_none_or(|scheduled| deadline < scheduled) {
                entry.scheduled = Some(deadline);
                self.timers.push(Reverse((deadline, id)));
            }
        }
    }
}

/// One read from a ready socket, into the link.
fn read(entry: &mut Entry, side: usize, scratch: &mut [u8], now: Instant) {
    let link = &mut entry.link;
    let room = if side == CLIENT { link.client_room() } else { link.server_room() };
    if room == 0 {
        return;
    }
    let buffer = &mut scratch[..room.min(CAP)];
    let Some(socket) = socket(&entry.client, &entry.server, side) else { return };
    match rustix::io::read(socket, &mut *buffer) {
        Ok(read) if read > 0 => {
            if side == CLIENT {
                link.client_sent(&buffer[..read], now);
            } else {
                link.server_sent(&buffer[..read], now);
            }
        }
        Err(Errno::AGAIN | Errno::INTR) => {}
        // An end of stream, or a failed connection.
        _ if side == CLIENT => link.client_gone(now),
        _ => link.server_gone(now),
    }
}

/// Tells the link how much the client's socket still holds: only a slow client's, so the
/// ioctl is never on the common path.
fn client_queue(entry: &mut Entry, now: Instant) {
    if let Ok(queued) = unread_by_peer(&entry.client) {
        entry.link.client_queue(queued, now);
    }
}

/// Writes what the link has for `side` until it is all out or the socket is full.
fn flush(entry: &mut Entry, side: usize, now: Instant) {
    while !entry.blocked[side] {
        let link = &mut entry.link;
        let bytes = if side == CLIENT { link.to_client() } else { link.to_server() };
        if bytes.is_empty() {
            return;
        }
        let Some(socket) = socket(&entry.client, &entry.server, side) else { return };
        match net::send(socket, bytes, SendFlags::NOSIGNAL) {
            Ok(written) if side == CLIENT => link.wrote_client(written, now),
            Ok(written) => link.wrote_server(written, now),
            Err(Errno::AGAIN) => {
                entry.blocked[side] = true;
                if side == CLIENT {
                    client_queue(entry, now);
                }
            }
            Err(Errno::INTR) => {}
            Err(_) if side == CLIENT => link.client_failed(),
            Err(_) => link.server_gone(now),
        }
    }
}

/// Answers a connection there is no room for with a 503 (as much of it as its socket takes at
/// once; it is new, so all of it) and closes it. What the client already sent is read first:
/// closed unread, it would reset the connection, and the client might never see the answer.
fn refuse(client: &OwnedFd, scratch: &mut [u8]) {
    let _ = net::send(client, &raw_reply(&Reply::error(&ApiError::Overloaded)), SendFlags::NOSIGNAL);
    let _ = net::shutdown(client, net::Shutdown::Write);
    let _ = rustix::io::read(client, scratch);
}

/// Whether a link idle long enough is quiet too: no bytes in its sockets that it has not seen
/// (a request just sent, an answer tiny_http just wrote, one the client has yet to read). One
/// whose client has just read the end of an answer (the kernel held it) is idle from now.
fn quiet(entry: &mut Entry, now: Instant) -> bool {
    let unread = |socket: &OwnedFd| rustix::io::ioctl_fionread(socket).map_or(true, |n| n > 0);
    let unsent = unread_by_peer(&entry.client).map_or(true, |n| n > 0);
    if entry.link.draining() && !unsent {
        entry.link.drained(now);
        return false;
    }
    !unsent && !unread(&entry.client) && !entry.server.as_ref().is_some_and(unread)
}

/// Makes epoll watch `socket` for `wanted`; a socket wanted for nothing is not watched at all
/// (a hang-up is reported whatever the interest, and would wake the loop in vain).
fn watch(epoll: &OwnedFd, socket: &OwnedFd, data: epoll::EventData, watching: &mut Interest, wanted: Interest) {
    if *watching == wanted {
        return;
    }
    let mut flags = epoll::EventFlags::empty();
    if wanted.read {
        flags |= epoll::EventFlags::IN;
    }
    if wanted.write {
        flags |= epoll::EventFlags::OUT;
    }
    let result = match (*watching == Interest::default(), flags.is_empty()) {
        (true, _) => epoll::add(epoll, socket, data, flags),
        (false, true) => epoll::delete(epoll, socket),
        (false, false) => epoll::modify(epoll, socket, data, flags),
    };
    if result.is_ok() {
        *watching = wanted;
    }
}

/// A non-blocking connection to tiny_http's socket. A Unix socket connects at once, or fails
/// at once when its backlog is full.
fn connect(server: &Path) -> io::Result<OwnedFd> {
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    let socket = net::socket_with(AddressFamily::UNIX, SocketType::STREAM, flags, None)?;
    net::connect(&socket, &SocketAddrUnix::new(server)?)?;
    Ok(socket)
}

/// Nonzero while the peer has not taken all that was written to the socket (`TIOCOUTQ`: for a
/// TCP socket, the bytes not yet acknowledged; for a Unix socket, the memory its unread
/// buffers take, not their bytes).
#[allow(unsafe_code)]
fn unread_by_peer(socket: &OwnedFd) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut unread: libc::c_int = 0;
    // SAFETY: `TIOCOUTQ` writes one `c_int` through the pointer, which points to `unread`; the
    // descriptor is borrowed from `socket` for the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut unread) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(unread).unwrap_or(0))
}

/// epoll's timeout for `wait`, rounded up to the millisecond, so the loop wakes after a
/// deadline, not just before it.
fn wait_for(wait: Duration) -> Timespec {
    let millis = wait.as_nanos().div_ceil(1_000_000);
    let wait = Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX / 2).min(1 << 31));
    Timespec::try_from(wait).unwrap_or(Timespec { tv_sec: 1 << 31, tv_nsec: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn unread_by_peer_counts_what_the_other_end_has_not_read() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let ours = OwnedFd::from(ours);
        assert_eq!(unread_by_peer(&ours).unwrap(), 0);
        rustix::io::write(&ours, b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert!(unread_by_peer(&ours).unwrap() > 0);
        let mut buffer = [0; 64];
        assert_eq!(theirs.read(&mut buffer).unwrap(), 18);
        assert_eq!(unread_by_peer(&ours).unwrap(), 0);
        theirs.write_all(b"x").unwrap();
        assert_eq!(unread_by_peer(&ours).unwrap(), 0, "what we have not read is not counted");
    }
}
