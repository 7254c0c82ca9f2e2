//! Keeps tiny_http accepting on its internal socket: the `http-accept` supervisor thread, and the
//! `http-G-N` pump threads of each tiny_http `Server` G, which take its requests in turn (one
//! lock per generation, so the checks made as a request is taken see a connection's requests in
//! the order tiny_http read them) and then answer them with the handler `server.rs` gives
//! ([`Dispatch`]). Never parses or answers a request itself.
//!
//! Why: tiny_http 0.12.0 ends its accept loop on any accept error (as when the process runs out
//! of file descriptors), and its accept thread dies without a word when it cannot start a
//! thread. So the supervisor holds the listener and, whenever a `Server`'s accept loop ends,
//! starts a new `Server` on a duplicate of
//! it (a "generation"). A few of the old generation's pumps go on answering requests from the
//! connections it already has, and retire once it has been quiet for long enough that the idle
//! timeout has closed them. A silent death is caught by a probe: every [`PROBE_EVERY`] the
//! supervisor asks `GET /health` on tiny_http's socket, and after [`PROBE_FAILURES`] unanswered probes
//! in a row it starts a new generation. If no new `Server` can be started in
//! [`START_ATTEMPTS`] tries, it flushes the log, writes a fatal record and exits with status 70,
//! rather than keep a port that answers nobody.
//!
//! A pump that writes an answer to a client that does not read blocks until the idle timeout
//! cuts the client (tiny_http's writes block). So the supervisor also starts more pumps when
//! too few are free of such clients (`Generation::add_pumps_if_stuck`); those past the base
//! count leave when idle.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tiny_http::{Request, Server};

use super::api::HEALTH;
use crate::log;

/// Health probes answered (`/metrics`): the supervisor is alive, and tiny_http answers.
static PROBES_ANSWERED: AtomicU64 = AtomicU64::new(0);

pub(crate) fn probes_answered() -> u64 {
    PROBES_ANSWERED.load(Ordering::Relaxed)
}

/// How often the supervisor checks that requests are still answered.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long a probe waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Unanswered probes in a row that mean the accept loop is gone.
const PROBE_FAILURES: u32 = 3;
/// How often a pump wakes to see whether to stop or retire.
const PUMP_POLL: Duration = Duration::from_millis(250);
/// Pumps a generation keeps once its accept loop is gone.
const RETIRED_PUMPS: usize = 4;
/// Failed attempts in a row to start a `Server` before giving up on the process.
const START_ATTEMPTS: u32 = 10;
/// How often the supervisor looks for pumps stuck answering.
const STUCK_EVERY: Duration = Duration::from_millis(50);
/// A pump answering for longer is taken for stuck (on a client that does not read its answers).
const STUCK_AFTER: Duration = Duration::from_millis(50);
/// Pumps kept free of stuck ones, and the most a generation may have.
const SPARE_PUMPS: usize = 4;
const MOST_PUMPS: usize = 1024;
/// An accept loop that ends sooner than this after its start (out of file descriptors, most
/// likely) gets its successor only after a pause, doubling from 10 ms to 1 s: restarted at
/// once, each with its pumps, threads pile up until the process aborts.
const SHORT_LIVED: Duration = Duration::from_secs(1);

/// What a pump does with each request, in the order tiny_http read them: checks it, then either
/// hands it on (`None`) or returns the work of answering it, which the pump runs once the next
/// pump may take a request.
pub(super) type Dispatch = Arc<dyn Fn(Request) -> Option<Serve> + Send + Sync>;
/// Answering one request.
pub(super) type Serve = Box<dyn FnOnce() + Send>;

enum Event {
    /// A generation's accept loop ended with this error.
    AcceptEnded {
        generation: u64,
        error: io::Error,
    },
    Stop,
}

struct Generation {
    number: u64,
    /// What its pumps share.
    shared: Arc<Pumps>,
    /// Each pump, and its slot in `shared.answering_since`.
    pumps: Vec<(JoinHandle<()>, usize)>,
    free_slots: Vec<usize>,
    /// The number the next pump gets.
    next_pump: usize,
}

/// What one generation's pumps share.
struct Pumps {
    number: u64,
    server: Server,
    /// Cleared when its accept loop is known or presumed dead: the pumps may then retire.
    accepting: AtomicBool,
    /// Taken around taking a request and dispatching it, so that a generation's requests leave
    /// its pumps in the order tiny_http read them: the checks made at dispatch (a connection
    /// that sent ambiguous framing is refused from then on) see a connection's requests in
    /// order. `std`'s lock: waiting pumps sleep at once, where parking_lot's would call
    /// `sched_yield`.
    turn: Mutex<()>,
    /// By slot: since when (microseconds after `epoch`, plus one) the pump in it has been
    /// answering, or 0. Writing to a client that does not read holds a pump until the idle
    /// timeout cuts the client.
    answering_since: Vec<AtomicU64>,
    epoch: Instant,
    /// Whether the last poll found no request. Polls take turns, so pumps past the base count
    /// then leave without a poll of their own: waiting one each, in turn, a crowd of them would
    /// take minutes to go.
    quiet: AtomicBool,
}

impl Pumps {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX - 1) + 1
    }
}

/// Owns the supervisor thread; [`Supervisor::stop`] joins it and every pump.
pub(super) struct Supervisor {
    events: Sender<Event>,
    thread: JoinHandle<()>,
}

/// What a generation needs to run.
#[derive(Clone)]
struct Setup {
    dispatch: Dispatch,
    /// Pump threads per generation: the handler threads for requests without a streamed body.
    pumps: usize,
    events: Sender<Event>,
    stopping: Arc<AtomicBool>,
    /// A dead generation's pump retires after this long without a request.
    retire_after: Duration,
}

impl Supervisor {
    /// Starts the first generation on `listener` (errors come back here), then supervises,
    /// probing at `probe`: the listener's path, and the header line the probe's request carries.
    pub(super) fn start(
        listener: UnixListener,
        probe: (&Path, String),
        idle_timeout: Duration,
        pumps: usize,
        dispatch: Dispatch,
    ) -> io::Result<Supervisor> {
        let probe_at = (probe.0.to_owned(), probe.1);
        let (tx, events) = crossbeam_channel::unbounded();
        let setup = Setup {
            dispatch,
            pumps: pumps.max(1),
            events: tx.clone(),
            stopping: Arc::new(AtomicBool::new(false)),
            retire_after: (idle_timeout * 4).max(Duration::from_secs(2)),
        };
        let first = start_generation(&listener, 0, &setup)?;
        let thread = thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || supervise(&listener, probe_at, &setup, &events, first))?;
        Ok(Supervisor { events: tx, thread })
    }

    /// Stops every generation after the requests it has already received, and joins them.
    pub(super) fn stop(self) {
        let _ = self.events.send(Event::Stop);
        let _ = self.thread.join();
    }
}

fn supervise(
    listener: &UnixListener,
    probe_at: (PathBuf, String),
    setup: &Setup,
    events: &Receiver<Event>,
    first: Generation,
) {
    let mut current = first;
    let mut retired: Vec<Generation> = Vec::new();
    let mut unanswered = 0;
    let mut prober = Prober { at: probe_at, last: Instant::now(), probe: None };
    let mut pause = Duration::ZERO;
    loop {
        retired.retain(|g| !g.pumps.iter().all(|(pump, _)| pump.is_finished()));
        current.add_pumps_if_stuck(setup);
        let restart = match events.recv_timeout(STUCK_EVERY) {
            Ok(Event::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(Event::AcceptEnded { generation, error }) => {
                // Old generations report too; only the current one's end matters.
                let expected = matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut);
                if generation == current.number && !expected {
                    log::info(format_args!("the accept loop stopped ({error}); starting a new one"));
                }
                generation == current.number
            }
            Err(RecvTimeoutError::Timeout) => {
                unanswered = match prober.tick() {
                    Some(true) => 0,
                    Some(false) => unanswered + 1,
                    None => unanswered,
                };
                let dead = unanswered >= PROBE_FAILURES;
                if dead {
                    log::info(format_args!("{unanswered} health probes unanswered; starting a new accept loop"));
                    unanswered = 0;
                }
                dead
            }
        };
        if restart {
            pause = match current.shared.epoch.elapsed() < SHORT_LIVED {
                true => (pause * 2).clamp(Duration::from_millis(10), Duration::from_secs(1)),
                false => Duration::ZERO,
            };
            thread::sleep(pause);
            let next = restart_generation(listener, current.number + 1, setup);
            current.shared.accepting.store(false, Ordering::Relaxed);
            retired.push(std::mem::replace(&mut current, next));
        }
    }
    setup.stopping.store(true, Ordering::Relaxed);
    for generation in retired.iter().chain([&current]) {
        generation.shared.server.unblock();
    }
    for generation in retired.into_iter().chain([current]) {
        for (pump, _) in generation.pumps {
            let _ = pump.join();
        }
    }
}

/// Starts a new generation, retrying with a growing pause; exits the process when it cannot.
fn restart_generation(listener: &UnixListener, number: u64, setup: &Setup) -> Generation {
    let mut pause = Duration::from_millis(10);
    for attempt in 1..=START_ATTEMPTS {
        match start_generation(listener, number, setup) {
            Ok(generation) => return generation,
            Err(error) => {
                log::info(format_args!("cannot start a new accept loop (attempt {attempt}): {error}"));
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
    // Acknowledged work is on disk already (durable mode), or was only ever in memory: what is
    // left to save is the log, which `fatal` flushes.
    log::fatal(format_args!("no accept loop could be started; exiting so that it can be restarted"));
    std::process::exit(70);
}

fn start_generation(listener: &UnixListener, number: u64, setup: &Setup) -> io::Result<Generation> {
    let listener = listener.try_clone()?;
    // tiny_http starts its accept thread with `thread::spawn`, which panics when it cannot.
    let server = panic::catch_unwind(AssertUnwindSafe(|| Server::from_listener(listener, None)))
        .map_err(|_| io::Error::other("no thread could be started for the accept loop"))?
        .map_err(io::Error::other)?;
    let shared = Arc::new(Pumps {
        number,
        server,
        accepting: AtomicBool::new(true),
        turn: Mutex::new(()),
        answering_since: (0..MOST_PUMPS).map(|_| AtomicU64::new(0)).collect(),
        epoch: Instant::now(),
        quiet: AtomicBool::new(false),
    });
    let free_slots = (0..MOST_PUMPS).rev().collect();
    let mut generation = Generation { number, shared, pumps: Vec::new(), free_slots, next_pump: 0 };
    for _ in 0..setup.pumps {
        if let Err(error) = generation.add_pump(setup) {
            // Pumps already started on this half-made generation retire when it goes quiet.
            generation.shared.accepting.store(false, Ordering::Relaxed);
            generation.shared.server.unblock();
            return Err(error);
        }
    }
    Ok(generation)
}

impl Generation {
    fn add_pump(&mut self, setup: &Setup) -> io::Result<()> {
        let Some(slot) = self.free_slots.pop() else { return Err(io::Error::other("no room for another pump")) };
        let (n, shared, setup) = (self.next_pump, Arc::clone(&self.shared), setup.clone());
        let name = format!("http-{}-{n}", self.number);
        match thread::Builder::new().name(name).spawn(move || pump(n, slot, &shared, &setup)) {
            Ok(pump) => {
                self.pumps.push((pump, slot));
                self.next_pump += 1;
                Ok(())
            }
            Err(error) => {
                self.free_slots.push(slot);
                Err(error)
            }
        }
    }

    /// While some pumps are stuck, keeps [`SPARE_PUMPS`] (or half as many as are stuck) free of
    /// them, so clients that do not read their answers hold a pump each (until the idle timeout
    /// cuts them), never everyone's. Pumps past the base count leave once a poll finds no request.
    fn add_pumps_if_stuck(&mut self, setup: &Setup) {
        let (gone, live): (Vec<_>, Vec<_>) = self.pumps.drain(..).partition(|(pump, _)| pump.is_finished());
        self.pumps = live;
        for (pump, slot) in gone {
            let _ = pump.join();
            self.free_slots.push(slot);
        }
        if !self.shared.accepting.load(Ordering::Relaxed) {
            return;
        }
        let (now, after) = (self.shared.now(), STUCK_AFTER.as_micros() as u64);
        let stuck = self
            .pumps
            .iter()
            .map(|(_, slot)| self.shared.answering_since[*slot].load(Ordering::Relaxed))
            .filter(|&since| since != 0 && now.saturating_sub(since) >= after)
            .count();
        if stuck == 0 {
            return;
        }
        // Half as many again as are stuck: many clients that do not read take pumps fast.
        for _ in self.pumps.len()..stuck + SPARE_PUMPS.max(stuck / 2) {
            if self.add_pump(setup).is_err() {
                return;
            }
        }
    }
}

/// Takes one generation's requests in turn and answers them, until stopped, or until its accept
/// loop is gone and its connections have been quiet for `retire_after`. Pump `n` past the base
/// count leaves once a poll (its own, or the one before its turn) finds no request.
fn pump(n: usize, slot: usize, shared: &Pumps, setup: &Setup) {
    let mut quiet = Duration::ZERO;
    loop {
        let accepting = shared.accepting.load(Ordering::Relaxed);
        // A retired generation only has the connections it already had; a few pumps will do.
        if n >= RETIRED_PUMPS && !accepting {
            return;
        }
        let my_turn = shared.turn.lock().unwrap_or_else(PoisonError::into_inner);
        // Stopping, a pump takes only what is already queued: waiting would make every pump
        // in turn wait a whole poll.
        let spare = n >= setup.pumps && shared.quiet.load(Ordering::Relaxed);
        let next = if setup.stopping.load(Ordering::Relaxed) || spare {
            shared.server.try_recv()
        } else {
            shared.server.recv_timeout(PUMP_POLL)
        };
        shared.quiet.store(matches!(next, Ok(None)), Ordering::Relaxed);
        match next {
            Ok(Some(request)) => {
                quiet = Duration::ZERO;
                let serve = (setup.dispatch)(request);
                drop(my_turn);
                if let Some(serve) = serve {
                    shared.answering_since[slot].store(shared.now(), Ordering::Relaxed);
                    serve();
                    shared.answering_since[slot].store(0, Ordering::Relaxed);
                }
            }
            Ok(None) => {
                if setup.stopping.load(Ordering::Relaxed) || n >= setup.pumps {
                    return;
                }
                if !accepting {
                    quiet += PUMP_POLL;
                    if quiet >= setup.retire_after {
                        return;
                    }
                }
                // The turn lock is not fair: let a pump waiting for it (one that would leave)
                // have it, rather than take it straight back.
                drop(my_turn);
                thread::yield_now();
            }
            Err(error) => {
                shared.accepting.store(false, Ordering::Relaxed);
                let _ = setup.events.send(Event::AcceptEnded { generation: shared.number, error });
            }
        }
    }
}

/// Starts a probe every [`PROBE_EVERY`], and waits for its answer while the supervisor goes
/// on: one waiting on busy pumps must not keep it from adding pumps.
struct Prober {
    /// tiny_http's socket, and the header line the probe's request carries.
    at: (PathBuf, String),
    last: Instant,
    probe: Option<Probe>,
}

impl Prober {
    /// How the probe under way ended, once it has.
    fn tick(&mut self) -> Option<bool> {
        if let Some(probe) = &mut self.probe {
            let answered = probe.answered();
            if answered.is_some() {
                self.probe = None;
            }
            if answered == Some(true) {
                PROBES_ANSWERED.fetch_add(1, Ordering::Relaxed);
            }
            return answered;
        }
        if self.last.elapsed() < PROBE_EVERY {
            return None;
        }
        self.last = Instant::now();
        match Probe::start(&self.at.0, &self.at.1) {
            Ok(probe) => {
                self.probe = Some(probe);
                None
            }
            Err(_) => Some(false),
        }
    }
}

/// `GET /health` on tiny_http's socket, answered or not yet.
struct Probe {
    stream: UnixStream,
    answer: Vec<u8>,
    since: Instant,
}

impl Probe {
    fn start(path: &Path, stamp: &str) -> io::Result<Probe> {
        let mut stream = UnixStream::connect(path)?;
        stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
        let request = format!("GET {HEALTH} HTTP/1.1\r\n{stamp}Host: probe\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes())?;
        stream.set_nonblocking(true)?;
        Ok(Probe { stream, answer: Vec::new(), since: Instant::now() })
    }

    /// Whether an HTTP answer came (`Some(true)`), none will (`Some(false)`: an error, or
    /// [`PROBE_TIMEOUT`] passed), or it may still come (`None`).
    fn answered(&mut self) -> Option<bool> {
        const STATUS: &[u8] = b"HTTP/1.1 ";
        let mut buffer = [0; 64];
        loop {
            match self.stream.read(&mut buffer) {
                Ok(0) => return Some(self.answer.starts_with(STATUS)),
                Ok(read) => {
                    self.answer.extend_from_slice(&buffer[..read]);
                    if self.answer.len() >= STATUS.len() {
                        return Some(self.answer.starts_with(STATUS));
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return (self.since.elapsed() >= PROBE_TIMEOUT).then_some(false);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Some(false),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::compat::Endpoint;

    /// A probe to a fresh socket, and the socket's side of it.
    fn start_probe() -> (Probe, UnixStream, Endpoint) {
        let (endpoint, listener) = Endpoint::bind(&[]).unwrap();
        let probe = Probe::start(endpoint.path(), "X-Stamp: s\r\n").unwrap();
        let (server, _) = listener.accept().unwrap();
        (probe, server, endpoint)
    }

    #[test]
    fn a_probe_is_pending_while_tiny_http_is_silent_then_answered() {
        let (mut probe, mut server, _endpoint) = start_probe();
        assert_eq!(probe.answered(), None);
        server.write_all(b"HTTP/1.1 200 OK\r\n").unwrap();
        assert_eq!(probe.answered(), Some(true));
    }

    #[test]
    fn a_probe_fails_after_its_timeout_or_on_an_answer_that_is_not_http() {
        let (mut probe, _server, _endpoint) = start_probe();
        probe.since -= PROBE_TIMEOUT;
        assert_eq!(probe.answered(), Some(false));

        let (mut probe, mut server, _endpoint) = start_probe();
        server.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").unwrap();
        assert_eq!(probe.answered(), Some(false));
        let (mut probe, server, _endpoint) = start_probe();
        drop(server);
        assert_eq!(probe.answered(), Some(false));
    }
}
