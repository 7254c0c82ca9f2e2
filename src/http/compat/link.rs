//! One relayed connection as data: what it has buffered each way, whether it still forwards the
//! client's bytes, what we answer ourselves at the end, and when it times out. Pure: the
//! `http-relay` loop (`relay.rs`) tells a [`Link`] what happened (bytes read, an end of stream,
//! a failed write, the time) and does what it asks (which sockets to read, what to write, when
//! to half-close and close). No I/O, no clock, no locks.
//!
//! The life of a link: it forwards the client's bytes to tiny_http (checking them with
//! [`Tracker`] first) and tiny_http's answers back, until forwarding ends ([`End`]). It then
//! half-closes towards tiny_http, which answers what it has and closes; those answers go out,
//! then our own last answer if one is due (`505`, `408`, `503 overloaded` if tiny_http could not
//! be reached, `400 bad_framing` for a short body the client cut, or a refused head's `400`,
//! `413`, `414`, `417` or `431`), and the link is done; unless the client has ended its side, it lingers first
//! ([`Link::client_shut`]), so that closing does not reset the connection under the client's
//! reading. Each direction buffers at most [`CAP`] bytes: a side whose buffer towards the other is full is not read.
//! The idle timeout counts progress, not bytes: within each, the client completes a head or a
//! request (its body whole), or takes [`MIN_PROGRESS`] bytes of an answer, or it is cut. Bytes
//! of an answer count once they leave the socket's send queue (the relay asks the kernel,
//! which may queue megabytes a client never reads). Our own answers carry a `Date`.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use super::relay::Cut;
use super::tracker::{BodyFault, Caps, Malformed, Position, Refusal, Tracker, Verdict};
use crate::http::api::Reply;
use crate::http::error::ApiError;

/// The most bytes buffered in each direction.
pub(crate) const CAP: usize = 64 << 10;
/// A drained buffer keeps an allocation of up to this size for the next bytes.
const KEEP: usize = 16 << 10;
/// The least a client must take of an answer within each idle timeout, unless it takes all that
/// waits for it: a trickle of bytes is not progress, or an answer taken a byte every few seconds
/// would hold its connection, and the handler writing it, for good.
pub(crate) const MIN_PROGRESS: usize = 16 << 10;
/// The longest a link lingers once its answers are out (the idle timeout, if shorter).
const LINGER: Duration = Duration::from_secs(2);

/// Why a link stopped forwarding the client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The client closed its side, or its connection failed.
    ClientGone,
    /// tiny_http closed the connection first, or its connection failed.
    ServerClosed,
    /// tiny_http could not be reached (out of file descriptors, or its accept loop restarting).
    Unreachable,
    /// The client made no progress for the idle timeout.
    Idle,
    /// A request tiny_http must not see.
    Refused(Refusal),
    /// A chunked body that tiny_http is reading went wrong (the reader learns why by the cut).
    BodyRefused,
    Stopping,
    /// A request was answered before its body came (after `Expect: 100-continue`): whatever
    /// the client sends next may be that body, so nothing more is forwarded.
    Closing,
}

/// Which ways a socket is to be watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Interest {
    pub(crate) read: bool,
    pub(crate) write: bool,
}

/// Bytes read from one side, not yet written to the other.
#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    at: usize,
}

impl Pending {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[self.at..]
    }

    fn len(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    fn consume(&mut self, written: usize) {
        self.at = (self.at + written).min(self.bytes.len());
        if self.at == self.bytes.len() {
            self.clear();
        }
    }

    fn clear(&mut self) {
        self.at = 0;
        if self.bytes.capacity() > KEEP {
            // A thousand idle keep-alive connections should not each hold a large buffer.
            self.bytes = Vec::new();
        } else {
            self.bytes.clear();
        }
    }
}

#[derive(Debug)]
pub(crate) struct Link {
    tracker: Tracker,
    idle: Duration,
    /// From the client, for tiny_http.
    up: Pending,
    /// Where in `up` each head not yet sent to tiny_http starts.
    starts: VecDeque<usize>,
    /// How many more heads tiny_http may get now (the relay's limit on requests in flight).
    admit: usize,
    /// Heads sent since the relay last took the count.
    forwarded: usize,
    /// From tiny_http (and ours at the end), for the client.
    down: Pending,
    /// Why forwarding ended; `None` while the client's bytes are forwarded.
    end: Option<End>,
    /// Our own last answer, sent once tiny_http's are out.
    last_word: Option<ApiError>,
    /// The status of our last answer once it is on its way, until the relay counts it, with the
    /// method and target of the request it answers, if its request line came whole.
    said: Option<(u16, Option<(String, String)>)>,
    /// The request being read when forwarding ended (see [`Tracker::request`]).
    ended_in: Option<(String, String)>,
    /// Nothing more comes from tiny_http or goes to it (it closed, or its connection failed).
    server_done: bool,
    /// The half-close towards tiny_http was made.
    server_shut: bool,
    /// The last word (if any) is in `down`: once it is out, the link is done.
    closing: bool,
    /// Cut at once, with nothing more sent (the client does not take its answers, a stall).
    aborted: bool,
    cut: Option<Cut>,
    /// The client's last progress: a head or request completed, or when reading it resumed.
    client_seen: Instant,
    /// The last progress with tiny_http: bytes read from it or written to it.
    server_seen: Instant,
    /// The client's last progress taking answers: [`MIN_PROGRESS`] bytes, or when `down` stopped
    /// being empty (its clock runs only while `down` holds bytes).
    client_taken: Instant,
    /// Bytes written to the client since `client_taken`.
    taken_since: usize,
    /// Bytes written to the client socket, ever, and when some last were (or, once they were
    /// all out, when the relay saw that the client had read them all: [`Link::drained`]).
    written: u64,
    written_at: Instant,
    /// All written out, and the client may not have read them all yet.
    draining: bool,
    /// The client socket's send queue as last seen, and `written` then: see [`Link::client_queue`].
    queue_mark: Option<(u64, usize)>,
    /// The client ended its side (or it failed).
    client_eof: bool,
    /// Lingering until then: see [`Link::client_shut`].
    linger_until: Option<Instant>,
}

impl Link {
    /// A link whose requests reach tiny_http with `stamp` after their request line, and are
    /// refused beyond `caps`.
    pub(crate) fn new(idle: Duration, now: Instant, stamp: Vec<u8>, caps: Caps) -> Link {
        Link {
            tracker: Tracker::new(stamp, caps),
            idle,
            up: Pending::default(),
            starts: VecDeque::new(),
            admit: usize::MAX,
            forwarded: 0,
            down: Pending::default(),
            end: None,
            last_word: None,
            said: None,
            ended_in: None,
            server_done: false,
            server_shut: false,
            closing: false,
            aborted: false,
            cut: None,
            client_seen: now,
            server_seen: now,
            client_taken: now,
            taken_since: 0,
            written: 0,
            written_at: now,
            draining: false,
            queue_mark: None,
            client_eof: false,
            linger_until: None,
        }
    }

    /// How many bytes to read from the client now (0: do not read it).
    pub(crate) fn client_room(&self) -> usize {
        if self.lingers() {
            return CAP;
        }
        if self.end.is_some() || self.aborted {
            return 0;
        }
        CAP.saturating_sub(self.up.len())
    }

    /// How many bytes to read from tiny_http now (0: do not read it).
    pub(crate) fn server_room(&self) -> usize {
        if self.server_done || self.aborted {
            return 0;
        }
        CAP.saturating_sub(self.down.len())
    }

    pub(crate) fn client_interest(&self) -> Interest {
        Interest { read: self.client_room() > 0, write: !self.to_client().is_empty() }
    }

    pub(crate) fn server_interest(&self) -> Interest {
        Interest { read: self.server_room() > 0, write: !self.to_server().is_empty() }
    }

    /// Bytes read from the client: forwarded as the tracker says, up to a request tiny_http
    /// must not see.
    pub(crate) fn client_sent(&mut self, bytes: &[u8], now: Instant) {
        if self.lingers() {
            return;
        }
        if self.up.is_empty() {
            self.server_seen = now;
        }
        let (heads, ended) = (self.starts.len(), self.tracker.ended());
        let verdict = self.tracker.feed(bytes, &mut self.up.bytes);
        self.starts.extend(self.tracker.take_head_starts());
        // A head or a whole body within the timeout, however long: bytes alone are no progress.
        if self.starts.len() > heads || self.tracker.ended() > ended {
            self.client_seen = now;
        }
        match verdict {
            Verdict::Forward => {}
            Verdict::Refuse(refusal) => self.end(End::Refused(refusal), now),
            Verdict::EndBody(fault) => {
                self.cut.get_or_insert(match fault {
                    BodyFault::TooLarge => Cut::BodyTooLarge,
                    BodyFault::Malformed => Cut::BadChunk,
                });
                self.end(End::BodyRefused, now);
            }
        }
    }

    /// tiny_http may get `heads` more requests now; the rest wait in `up`.
    pub(crate) fn admit(&mut self, heads: usize) {
        self.admit = heads;
    }

    /// How many requests began to reach tiny_http since the last call.
    pub(crate) fn take_forwarded(&mut self) -> usize {
        std::mem::take(&mut self.forwarded)
    }

    /// Whether requests wait for earlier ones to be answered before tiny_http gets them.
    pub(crate) fn holds_requests(&self) -> bool {
        !self.server_done && !self.aborted && self.starts.len() > self.admit
    }

    /// The client closed its side, or reading it failed.
    pub(crate) fn client_gone(&mut self, now: Instant) {
        self.client_eof = true;
        self.end(End::ClientGone, now);
    }

    pub(crate) fn server_sent(&mut self, bytes: &[u8], now: Instant) {
        self.server_seen = now;
        if self.down.is_empty() {
            self.client_taken = now;
            self.taken_since = 0;
        }
        self.down.push(bytes);
    }

    /// tiny_http closed, or reading from or writing to it failed.
    pub(crate) fn server_gone(&mut self, now: Instant) {
        self.server_lost(End::ServerClosed, now);
    }

    /// tiny_http could not be reached for this connection: the client gets a 503.
    pub(crate) fn server_unreachable(&mut self, now: Instant) {
        self.server_lost(End::Unreachable, now);
    }

    fn server_lost(&mut self, end: End, now: Instant) {
        self.server_done = true;
        // Nobody is left to read them.
        self.up.clear();
        self.starts.clear();
        self.end(end, now);
        self.settle();
    }

    pub(crate) fn to_server(&self) -> &[u8] {
        if self.server_done || self.aborted {
            return &[];
        }
        let end = self.starts.get(self.admit).map_or(self.up.bytes.len(), |&start| start);
        &self.up.bytes[self.up.at..end.max(self.up.at)]
    }

    pub(crate) fn wrote_server(&mut self, written: usize, now: Instant) {
        if written == 0 {
            return;
        }
        if self.up.len() >= CAP {
            // The client was not read while tiny_http was not taking its bytes: not its silence.
            self.client_seen = now;
        }
        self.server_seen = now;
        let sent_to = self.up.at + written;
        while self.starts.front().is_some_and(|&start| start < sent_to) {
            self.starts.pop_front();
            self.forwarded += 1;
            self.admit = self.admit.saturating_sub(1);
        }
        self.up.consume(written);
    }

    /// Whether the half-close towards tiny_http is due now.
    pub(crate) fn shut_server_due(&self) -> bool {
        self.end.is_some() && !self.server_shut && !self.server_done && !self.aborted && self.up.is_empty()
    }

    pub(crate) fn server_shut(&mut self) {
        self.server_shut = true;
    }

    pub(crate) fn to_client(&self) -> &[u8] {
        if self.aborted {
            return &[];
        }
        self.down.as_slice()
    }

    pub(crate) fn wrote_client(&mut self, written: usize, now: Instant) {
        if written > 0 {
            self.written += written as u64;
            self.written_at = now;
            self.down.consume(written);
            self.draining = self.down.is_empty();
            self.taken_since += written;
            if self.taken_since >= MIN_PROGRESS {
                self.client_taken = now;
                self.taken_since = 0;
            }
        }
    }

    /// The client socket's send queue holds `queued` bytes (looked at when it is full, and when
    /// the client's clock runs out). The kernel may queue megabytes, so a client can go on
    /// taking an answer for a long time with no room for a write of ours: what left the queue
    /// since the last look counts as taken, as writes do.
    pub(crate) fn client_queue(&mut self, queued: usize, now: Instant) {
        let Some((written, was_queued)) = self.queue_mark else {
            self.queue_mark = Some((self.written, queued));
            return;
        };
        let left = (was_queued as u64 + (self.written - written)).saturating_sub(queued as u64);
        if left >= MIN_PROGRESS as u64 || (left > 0 && queued == 0) {
            self.client_taken = now;
            self.taken_since = 0;
            self.queue_mark = Some((self.written, queued));
        }
    }

    /// Writing to the client failed: nothing more is worth doing.
    pub(crate) fn client_failed(&mut self) {
        self.aborted = true;
    }

    /// The server is stopping: forward nothing more; a body being read ends as shutting down.
    pub(crate) fn stop(&mut self, now: Instant) {
        self.cut.get_or_insert(Cut::ShuttingDown);
        self.end(End::Stopping, now);
    }

    /// Forwards nothing more: the connection closes once tiny_http's answers are out.
    pub(crate) fn close_after_answers(&mut self, now: Instant) {
        self.end(End::Closing, now);
    }

    /// Cuts the link at once.
    pub(crate) fn abort(&mut self) {
        self.aborted = true;
    }

    /// Why the link stopped forwarding, as the request being read on it should learn it.
    pub(crate) fn cut(&self) -> Option<Cut> {
        self.cut
    }

    /// Since when the link has been idle between requests, or in a head it has not finished,
    /// with nothing for tiny_http and nothing owed to the client (a keep-alive connection, one
    /// that never sent a byte, one dripping a head): since the last request began or ended,
    /// the last bytes to or from tiny_http, or the last bytes of an answer went out, whichever
    /// came last (bytes of a head are no progress, as for the idle timeout); `None` if it is
    /// not idle.
    pub(crate) fn idle_since(&self) -> Option<Instant> {
        let idle = self.end.is_none()
            && !self.aborted
            && matches!(self.tracker.position(), Position::Between | Position::InHead)
            && self.up.is_empty()
            && self.down.is_empty();
        idle.then(|| self.client_seen.max(self.server_seen).max(self.written_at))
    }

    /// Whether an answer went out whole and the client may not have read all of it yet.
    pub(crate) fn draining(&self) -> bool {
        self.draining
    }

    /// The relay saw that the client has read everything written to it: the link has been
    /// idle since no earlier than now (the kernel may have held megabytes of its answer).
    pub(crate) fn drained(&mut self, now: Instant) {
        self.draining = false;
        self.written_at = now;
    }

    /// Whether the link has nothing more to do but, perhaps, linger.
    pub(crate) fn is_done(&self) -> bool {
        self.aborted || (self.closing && self.down.is_empty())
    }

    /// Whether the link is done and its sockets are to be closed now.
    pub(crate) fn closable(&self) -> bool {
        self.is_done() && !self.lingers() && !self.shut_client_due()
    }

    /// Whether the answers are all out and the client may still be sending: closing now would
    /// reset the connection, and a reset makes the client's system drop what it has not read
    /// yet, our last answer included.
    pub(crate) fn shut_client_due(&self) -> bool {
        self.is_done() && !self.aborted && !self.client_eof && self.linger_until.is_none()
    }

    /// The relay has shut the client's side for writing: what the client still sends is read
    /// and dropped until it ends its side, for a moment at most (lingering).
    pub(crate) fn client_shut(&mut self, now: Instant) {
        self.linger_until = Some(now + self.idle.min(LINGER));
    }

    /// Whether the client's bytes are being read and dropped.
    pub(crate) fn lingers(&self) -> bool {
        self.linger_until.is_some() && !self.aborted && !self.client_eof
    }

    /// When the link times out if nothing happens before.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.is_done() {
            return self.linger_until.filter(|_| self.lingers());
        }
        let mut deadline: Option<Instant> = None;
        let mut clock = |since: Instant| {
            let at = since + self.idle;
            deadline = Some(deadline.map_or(at, |d| d.min(at)));
        };
        if self.client_room() > 0 {
            clock(self.client_seen);
        }
        // tiny_http does not take the client's bytes, does not answer the requests it has while
        // others wait, or does not answer once it has them all.
        if !self.to_server().is_empty() || self.holds_requests() || (self.end.is_some() && !self.server_done) {
            clock(self.server_seen);
        }
        if !self.to_client().is_empty() {
            clock(self.client_taken);
        }
        deadline
    }

    /// Acts on the deadline, if it has passed: a silent client ends forwarding (tiny_http still
    /// answers what it has); any other stall cuts the link.
    pub(crate) fn expire(&mut self, now: Instant) {
        if self.deadline().is_none_or(|deadline| deadline > now) {
            return;
        }
        if self.lingers() {
            self.client_eof = true;
            return;
        }
        if self.client_room() > 0 && self.client_seen + self.idle <= now {
            self.end(End::Idle, now);
        }
        if self.deadline().is_some_and(|deadline| deadline <= now) {
            self.abort();
        }
    }

    fn end(&mut self, end: End, now: Instant) {
        if self.end.is_some() {
            return;
        }
        self.end = Some(end);
        // tiny_http now gets the idle timeout to answer what it has.
        self.server_seen = now;
        let (cut, last_word) = last_word(end, self.tracker.position());
        self.ended_in = self.tracker.request().map(|(method, target)| (method.to_owned(), target.to_owned()));
        if let Some(cut) = cut {
            self.cut.get_or_insert(cut);
        }
        self.last_word = last_word;
        self.settle();
    }

    /// Once forwarding has ended and tiny_http is done, our last word follows its answers.
    fn settle(&mut self) {
        if self.closing || self.end.is_none() || !self.server_done {
            return;
        }
        if let Some(error) = self.last_word.take() {
            if self.down.is_empty() {
                self.client_taken = self.server_seen;
            }
            let reply = Reply::error(&error);
            let mut answer = raw_reply(&reply);
            // RFC 9110 (9.3.2): an answer to HEAD has no content, only its length.
            if self.ended_in.as_ref().is_some_and(|(method, _)| method == "HEAD") {
                answer.truncate(answer.len() - reply.body.len());
            }
            self.said = Some((reply.status, self.ended_in.take()));
            self.down.push(&answer);
        }
        self.closing = true;
    }

    /// The status of the answer the link gave itself (the relay counts it with the others), and
    /// the method and target of the request it answers, if known.
    pub(crate) fn take_said(&mut self) -> Option<(u16, Option<(String, String)>)> {
        self.said.take()
    }
}

const SHORT_BODY: &str =
    "the client ended its side before the body was as long as its Content-Length said; nothing was accepted";
const BARE_LF: &str = "a line of the request head ends with a bare LF; end every line of the head with CRLF (\\r\\n)";

/// What ending with `end` at `position` tells a request being read, and what we answer once
/// tiny_http's answers are out.
fn last_word(end: End, position: Position) -> (Option<Cut>, Option<ApiError>) {
    match (end, position) {
        (End::Refused(Refusal::Version), _) => (None, Some(ApiError::VersionNotSupported)),
        (End::Refused(Refusal::LineTooLong(limit)), _) => (None, Some(ApiError::UrlTooLong { limit })),
        (End::Refused(Refusal::HeadTooLarge(limit)), _) => (None, Some(ApiError::HeadersTooLarge { limit })),
        (End::Refused(Refusal::BodyTooLarge(limit)), _) => (None, Some(ApiError::BodyTooLarge { limit })),
        (End::Refused(Refusal::BareLineFeed), _) => (None, Some(ApiError::BadFraming(BARE_LF.to_owned()))),
        (End::Refused(Refusal::Malformed(what)), _) => {
            (None, Some(ApiError::MalformedRequest { what: malformed(what) }))
        }
        (End::Refused(Refusal::Expectation), _) => (None, Some(ApiError::ExpectationFailed)),
        (End::Unreachable, _) => (None, Some(ApiError::Overloaded)),
        // tiny_http reads a short body itself and drops the connection without a word when it
        // stalls; a longer one is read by our handler, which answers 408 on learning the cut.
        (End::Idle, Position::InBody { buffered }) => {
            (Some(Cut::IdleTimeout), buffered.then_some(ApiError::RequestTimeout))
        }
        // Part of a head, which tiny_http has not seen: the silence is answered here.
        (End::Idle, Position::InHead) => (Some(Cut::IdleTimeout), Some(ApiError::RequestTimeout)),
        (End::Idle, _) => (Some(Cut::IdleTimeout), None),
        // tiny_http reads such a body itself and drops the request without a word when it ends
        // short; a longer one is read by our handler, which answers the same.
        (End::ClientGone, Position::InBody { buffered: true }) => {
            (None, Some(ApiError::BadFraming(SHORT_BODY.to_owned())))
        }
        // tiny_http's own read timeout came first.
        (End::ServerClosed, Position::InBody { buffered: true }) => (None, Some(ApiError::RequestTimeout)),
        _ => (None, None),
    }
}

/// What is wrong with a head, for the person who sent it.
fn malformed(what: Malformed) -> &'static str {
    match what {
        Malformed::RequestLine => "the request line must be a method, a path and HTTP/1.1 (or 1.0), one space apart",
        Malformed::HeaderLine => {
            "each header line must be a name (letters, digits and !#$%&'*+-.^_`|~), a colon, then the value, on one line (no folding)"
        }
        Malformed::NotAscii => "the request line and headers must be ASCII; percent-encode other bytes",
        Malformed::Connection => "the Connection header must be sent on one line, its options separated by commas",
    }
}

/// A complete HTTP/1.1 answer for an error's `reply`, closing the connection.
pub(super) fn raw_reply(reply: &Reply) -> Vec<u8> {
    let reason = match reply.status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    };
    let headers: String = reply.headers().iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    // RFC 9110 (6.6.1): an origin server with a clock sends `Date`.
    let date = httpdate::fmt_http_date(SystemTime::now());
    let mut bytes = format!(
        "HTTP/1.1 {} {reason}\r\nDate: {date}\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
        reply.status,
        reply.body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(&reply.body);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(10);
    const GET: &str = "GET /health HTTP/1.1\r\nHost: t\r\n\r\n";
    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    const BAD: &str = "GET /health HTTP/2.0\r\nHost: t\r\n\r\n";
    const STAMP: &str = "X-R: 1\r\n";

    /// A link between a client and a tiny_http that take every byte at once unless blocked,
    /// driven as the relay loop drives it.
    struct Sim {
        link: Link,
        start: Instant,
        now: Instant,
        to_server: Vec<u8>,
        to_client: Vec<u8>,
        half_closed: bool,
        blocked: [bool; 2],
        /// The most the client's socket takes per step (`trickle N`).
        trickle: Option<usize>,
    }

    impl Sim {
        fn new() -> Sim {
            let start = Instant::now();
            let caps = Caps { url: 8192, headers: 16384, body: 1 << 20 };
            let link = Link::new(IDLE, start, STAMP.into(), caps);
            Sim {
                link,
                start,
                now: start,
                to_server: Vec::new(),
                to_client: Vec::new(),
                half_closed: false,
                blocked: [false; 2],
                trickle: None,
            }
        }

        /// One step: `c:BYTES` / `s:BYTES` (read from the client / tiny_http, as much as there
        /// is room for), `c-eof`, `s-eof`, `c-fails` (a write to it fails), `stop`, `at SECONDS`,
        /// `block c|s` and `unblock c|s` (the socket takes nothing / everything), `trickle N` (the
        /// client's takes N bytes per step), `admit N` (tiny_http may get N more requests).
        fn step(&mut self, step: &str) {
            let now = self.now;
            match step.split_once(':') {
                Some(("c", bytes)) => {
                    let room = self.link.client_room().min(bytes.len());
                    self.link.client_sent(&bytes.as_bytes()[..room], now);
                }
                Some(("s", bytes)) => {
                    let room = self.link.server_room().min(bytes.len());
                    self.link.server_sent(&bytes.as_bytes()[..room], now);
                }
                _ => match step.split_once(' ').unwrap_or((step, "")) {
                    ("c-eof", _) => self.link.client_gone(now),
                    ("s-eof", _) => self.link.server_gone(now),
                    ("c-fails", _) => self.link.client_failed(),
                    ("stop", _) => self.link.stop(now),
                    ("at", secs) => {
                        self.now = self.start + Duration::from_secs_f64(secs.parse().unwrap());
                        self.link.expire(self.now);
                    }
                    ("block", side) => self.blocked[usize::from(side == "s")] = true,
                    ("admit", heads) => self.link.admit(heads.parse().unwrap()),
                    ("trickle", bytes) => self.trickle = Some(bytes.parse().unwrap()),
                    ("queue", bytes) => self.link.client_queue(bytes.parse().unwrap(), now),
                    ("unblock", side) => self.blocked[usize::from(side == "s")] = false,
                    _ => panic!("unknown step {step:?}"),
                },
            }
            self.flush();
        }

        /// What the loop does after every event.
        fn flush(&mut self) {
            if !self.blocked[1] {
                let bytes = self.link.to_server().to_vec();
                self.to_server.extend_from_slice(&bytes);
                self.link.wrote_server(bytes.len(), self.now);
            }
            if self.link.shut_server_due() {
                self.half_closed = true;
                self.link.server_shut();
            }
            if !self.blocked[0] {
                let pending = self.link.to_client();
                let bytes = pending[..self.trickle.unwrap_or(pending.len()).min(pending.len())].to_vec();
                self.to_client.extend_from_slice(&bytes);
                self.link.wrote_client(bytes.len(), self.now);
            }
        }

        fn summary(&self) -> String {
            let sent = self.to_server.len();
            let answers = String::from_utf8_lossy(&self.to_client);
            let statuses: Vec<&str> = answers
                .split("HTTP/1.1 ")
                .skip(1)
                .filter_map(|a| a.get(..3))
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                .collect();
            let state = match (self.link.is_done(), self.link.deadline()) {
                (true, _) => "done".to_owned(),
                (false, Some(at)) => format!("open until {}", (at - self.start).as_secs()),
                (false, None) => "open".to_owned(),
            };
            let mut summary = format!("tiny_http got {sent} bytes; client got {statuses:?}; {state}");
            if self.half_closed {
                summary += "; half-closed";
            }
            if let Some(cut) = self.link.cut() {
                summary += &format!("; cut {cut:?}");
            }
            summary
        }
    }

    #[track_caller]
    fn check(steps: &[impl AsRef<str>], expected: &str) {
        let mut sim = Sim::new();
        for step in steps {
            sim.step(step.as_ref());
        }
        let steps: Vec<&str> = steps.iter().map(AsRef::as_ref).collect();
        assert_eq!(sim.summary(), expected, "after {steps:?}");
    }

    fn post(length: usize, body: &str) -> String {
        format!("c:POST /ingest HTTP/1.1\r\nContent-Length: {length}\r\n\r\n{body}")
    }

    #[test]
    fn requests_and_answers_pass_and_the_idle_clock_restarts_with_each() {
        let get = format!("c:{GET}");
        let ok = format!("s:{OK}");
        check(&[""; 0], "tiny_http got 0 bytes; client got []; open until 10");
        check(&[&get, &ok], "tiny_http got 41 bytes; client got [\"200\"]; open until 10");
        check(&["at 4", &get, "at 9", &ok], "tiny_http got 41 bytes; client got [\"200\"]; open until 14");
        // tiny_http closes first (`Connection: close`): its answer goes out, then the link ends.
        check(&[&get, &ok, "s-eof"], "tiny_http got 41 bytes; client got [\"200\"]; done");
        // The client half-closes: tiny_http gets the end of stream and still answers.
        let half = "tiny_http got 41 bytes; client got []; open until 10; half-closed";
        check(&[&get, "c-eof"], half);
        check(&[&get, "c-eof", &ok, "s-eof"], "tiny_http got 41 bytes; client got [\"200\"]; done; half-closed");
    }

    #[test]
    fn a_version_tiny_http_cannot_answer_gets_505_after_the_answers_before_it() {
        let bad = format!("c:{BAD}");
        check(&[&bad], "tiny_http got 0 bytes; client got []; open until 10; half-closed");
        check(&[&bad, "s-eof"], "tiny_http got 0 bytes; client got [\"505\"]; done; half-closed");
        let pipelined = format!("c:{GET}{GET}{BAD}");
        let answers = [pipelined.as_str(), &format!("s:{OK}"), &format!("s:{OK}"), "s-eof"];
        check(&answers, "tiny_http got 82 bytes; client got [\"200\", \"200\", \"505\"]; done; half-closed");
        // A request line or head too long to hold: 414 or 431, the same way.
        let half = "a".repeat(40_000);
        let line = [format!("c:GET /{half}"), format!("c:{half}"), "s-eof".into()];
        check(&line.each_ref().map(String::as_str), "tiny_http got 0 bytes; client got [\"414\"]; done; half-closed");
        let header = format!("c:X-Big: {half}\r\n");
        let head = [format!("c:{GET}GET / HTTP/1.1\r\n"), header.clone(), header, format!("s:{OK}"), "s-eof".into()];
        let expected = "tiny_http got 41 bytes; client got [\"200\", \"431\"]; done; half-closed";
        check(&head.each_ref().map(String::as_str), expected);
        // A head line ending in a bare LF: 400, the same way.
        let bare = [format!("c:{GET}GET / HTTP/1.1\n\n"), format!("s:{OK}"), "s-eof".into()];
        check(
            &bare.each_ref().map(String::as_str),
            "tiny_http got 41 bytes; client got [\"200\", \"400\"]; done; half-closed",
        );
        // A head tiny_http cannot parse, or an Expect it does not meet: 400 or 417, the same way.
        let malformed = [format!("c:{GET}GET /health\r\n\r\n"), format!("s:{OK}"), "s-eof".into()];
        let expected = "tiny_http got 41 bytes; client got [\"200\", \"400\"]; done; half-closed";
        check(&malformed.each_ref().map(String::as_str), expected);
        check(
            &["c:GET / HTTP/1.1\r\nExpect: x\r\n\r\n", "s-eof"],
            "tiny_http got 0 bytes; client got [\"417\"]; done; half-closed",
        );
        // The 505 waits for the answers even when the client is slow to take them.
        let slow = [pipelined.as_str(), "block c", &format!("s:{OK}"), "s-eof", "unblock c", "at 1"];
        check(&slow, "tiny_http got 82 bytes; client got [\"200\", \"505\"]; done; half-closed");
    }

    #[test]
    fn requests_beyond_those_admitted_wait_whole_with_their_bodies_behind_them() {
        let body = post(3, "abc")[2..].to_owned();
        let three = format!("c:{GET}{body}{GET}");
        // One admitted: the first request only; the client is still read meanwhile.
        check(&["admit 1", &three], "tiny_http got 41 bytes; client got []; open until 10");
        // Then the next, with its body; then the last.
        let (get, with_body) = (41, body.len() + STAMP.len());
        check(
            &["admit 1", &three, "admit 1"],
            &format!("tiny_http got {} bytes; client got []; open until 10", get + with_body),
        );
        check(
            &["admit 0", &three, "admit 3"],
            &format!("tiny_http got {} bytes; client got []; open until 10", 2 * get + with_body),
        );
        let mut sim = Sim::new();
        sim.step("admit 2");
        sim.step(&three);
        assert_eq!(sim.link.take_forwarded(), 2);
        assert!(sim.link.holds_requests());
        // The client is silent, so forwarding ends; tiny_http, answering nothing, is cut after
        // the idle timeout as well.
        sim.step("at 10");
        let expected =
            format!("tiny_http got {} bytes; client got []; open until 20; cut IdleTimeout", get + with_body);
        assert_eq!(sim.summary(), expected);
        sim.step("at 20");
        assert!(sim.link.is_done(), "{}", sim.summary());
    }

    #[test]
    fn silence_ends_forwarding_and_a_stalled_short_body_gets_408() {
        check(&["at 10"], "tiny_http got 0 bytes; client got []; open until 20; half-closed; cut IdleTimeout");
        check(&["at 10", "s-eof"], "tiny_http got 0 bytes; client got []; done; half-closed; cut IdleTimeout");
        // tiny_http reads a body of up to 1024 bytes itself, and drops it without a word.
        let short = post(100, "{\"ids\"");
        check(
            &[&short, "at 10", "s-eof"],
            "tiny_http got 60 bytes; client got [\"408\"]; done; half-closed; cut IdleTimeout",
        );
        // Our handler reads a longer one, and answers 408 itself on learning the cut.
        let long = post(5000, "{\"ids\"");
        let answer = "s:HTTP/1.1 408 Request Timeout\r\n\r\n";
        check(
            &[&long, "at 10", answer, "s-eof"],
            "tiny_http got 61 bytes; client got [\"408\"]; done; half-closed; cut IdleTimeout",
        );
        // tiny_http's own timeout came first, inside a short body.
        check(&[&short, "s-eof"], "tiny_http got 60 bytes; client got [\"408\"]; done");
        // Nothing of a request under way: no word.
        check(&[&format!("c:{GET}"), "s-eof"], "tiny_http got 41 bytes; client got []; done");
        // Part of a head, which tiny_http never saw: 408 after the answers before it.
        let partial = [format!("c:{GET}GET /stat"), "at 10".into(), format!("s:{OK}"), "s-eof".into()];
        let expected = "tiny_http got 41 bytes; client got [\"200\", \"408\"]; done; half-closed; cut IdleTimeout";
        check(&partial.each_ref().map(String::as_str), expected);
    }

    #[test]
    fn stopping_forwards_nothing_more_and_the_body_being_read_learns_why() {
        let long = post(5000, "{\"ids\"");
        check(&[&long, "stop"], "tiny_http got 61 bytes; client got []; open until 10; half-closed; cut ShuttingDown");
        check(
            &[&long, "stop", "c:more"],
            "tiny_http got 61 bytes; client got []; open until 10; half-closed; cut ShuttingDown",
        );
        // A connection already cut for silence keeps that reason.
        check(
            &[&long, "at 10", "stop"],
            "tiny_http got 61 bytes; client got []; open until 20; half-closed; cut IdleTimeout",
        );
    }

    #[test]
    fn a_side_whose_buffer_is_full_is_not_read_and_a_stall_cuts_the_link() {
        let big = format!("c:{}", "x".repeat(CAP + 10));
        let mut sim = Sim::new();
        sim.step("block s");
        sim.step(&post(CAP * 2, ""));
        sim.step(&big);
        assert_eq!(sim.link.client_room(), 0);
        assert_eq!(sim.link.client_interest(), Interest { read: false, write: false });
        assert_eq!(sim.link.server_interest(), Interest { read: true, write: true });
        // The client is not idle while it is not read; tiny_http, not taking bytes, is cut.
        sim.step("at 9");
        sim.step("unblock s");
        assert_eq!(sim.link.client_room(), CAP);
        assert_eq!(sim.summary(), format!("tiny_http got {CAP} bytes; client got []; open until 19"));
        sim.step("block s");
        sim.step(&big);
        sim.step("at 19");
        assert_eq!(sim.summary(), format!("tiny_http got {CAP} bytes; client got []; done"));

        // Answers the client does not take: tiny_http is not read, and the link is cut.
        let mut sim = Sim::new();
        sim.step(&format!("c:{GET}"));
        sim.step("block c");
        sim.step(&format!("s:{}", "y".repeat(CAP + 10)));
        assert_eq!(sim.link.server_room(), 0);
        assert_eq!(sim.link.client_interest(), Interest { read: true, write: true });
        sim.step("at 5");
        sim.step(&format!("c:{GET}"));
        sim.step("at 10");
        assert!(sim.link.is_done() && sim.link.to_client().is_empty(), "{}", sim.summary());
    }

    #[test]
    fn a_tiny_http_that_never_answers_after_the_end_is_cut_and_a_failed_client_at_once() {
        let get = format!("c:{GET}");
        check(&[&get, "c-eof", "at 9"], "tiny_http got 41 bytes; client got []; open until 10; half-closed");
        check(&[&get, "c-eof", "at 10"], "tiny_http got 41 bytes; client got []; done; half-closed");
        check(&[&get, "c-fails"], "tiny_http got 41 bytes; client got []; done");
        // A refused line's 505 is not sent to a client that failed.
        check(&[&format!("c:{BAD}"), "c-fails", "s-eof"], "tiny_http got 0 bytes; client got []; done; half-closed");
    }

    /// A client reading steadily from a socket that queues megabytes may see no room for a write
    /// of ours for longer than the idle timeout: what leaves the queue is progress (a reader of
    /// 64 KiB/s had its answer cut at 3.9 MB of 8.5).
    #[test]
    fn what_leaves_the_clients_socket_queue_counts_as_taken() {
        let answer = format!("s:HTTP/1.1 200 OK\r\nContent-Length: 90\r\n\r\n{}", "x".repeat(90));
        let start = [format!("c:{GET}"), "block c".into(), answer];
        let steps = |more: &[&'static str]| -> Vec<String> {
            start.iter().cloned().chain(more.iter().map(|s| s.to_string())).collect()
        };
        // The client sends nothing more: forwarding ends at 10 s as always, the answer goes on.
        let open = "tiny_http got 41 bytes; client got []; open until 19; half-closed; cut IdleTimeout";
        check(&steps(&["queue 3000000", "at 9", "queue 2980000", "at 12"]), open);
        // Less than 16 KiB gone is no progress; nothing gone, no progress either.
        let cut = "tiny_http got 41 bytes; client got []; done; cut IdleTimeout";
        check(&steps(&["queue 3000000", "at 9", "queue 2990000", "at 10"]), cut);
        let cut_later = "tiny_http got 41 bytes; client got []; done; half-closed; cut IdleTimeout";
        check(&steps(&["queue 3000000", "at 9", "queue 2980000", "at 18", "queue 2980000", "at 19"]), cut_later);
    }

    #[test]
    fn a_trickle_is_no_progress_but_a_whole_head_or_request_is() {
        // A head must be whole within the idle timeout, however its bytes come.
        let trickled_head = ["c:GET /hea", "at 5", "c:lth HT", "at 10", "s-eof"];
        check(&trickled_head, "tiny_http got 0 bytes; client got [\"408\"]; done; half-closed; cut IdleTimeout");
        // So must a body, however much of it comes: tiny_http drains a body nobody reads.
        let long = post(100_000, "");
        let chunk = format!("c:{}", "x".repeat(40_000));
        let steady_body = [long.as_str(), "at 5", chunk.as_str(), "at 9", chunk.as_str(), "at 10"];
        let cut =
            format!("tiny_http got {} bytes; client got []; open until 20; half-closed; cut IdleTimeout", 57 + 80_000);
        check(&steady_body, &cut);
        // A request that ends, or a head that comes whole, starts a new wait.
        let get = format!("c:{GET}");
        check(&[&get, "at 9", &get, "at 18"], "tiny_http got 82 bytes; client got []; open until 19");
        let post_then_get = [
            post(1, "x"),
            "at 9".into(),
            format!("c:{GET}POST /ingest HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            "at 18".into(),
        ];
        check(&post_then_get.each_ref().map(String::as_str), "tiny_http got 146 bytes; client got []; open until 19");
    }

    #[test]
    fn an_answer_taken_in_a_trickle_cuts_the_link_but_16_kib_at_a_time_does_not() {
        let big = format!("s:{}", "y".repeat(CAP));
        let taken = |trickle: &str, at: &str| {
            let mut sim = Sim::new();
            for step in [&format!("c:{GET}"), trickle, big.as_str(), "at 5", "at 9", at] {
                sim.step(step);
            }
            (sim.link.is_done(), sim.to_client.len())
        };
        // (The client's silence since its GET only stops its requests at 10; its answer goes on.)
        assert_eq!(taken("trickle 100", "at 10"), (true, 300));
        assert_eq!(taken(&format!("trickle {MIN_PROGRESS}"), "at 18"), (false, 4 * MIN_PROGRESS));
    }

    #[test]
    fn once_its_answers_are_out_a_link_lingers_until_the_client_ends_or_for_a_moment() {
        // A refused head with a body behind it: the 417 goes out, then the link lingers.
        let mut sim = Sim::new();
        for step in ["c:POST / HTTP/1.1\r\nExpect: x\r\nContent-Length: 9\r\n\r\nabc", "s-eof"] {
            sim.step(step);
        }
        assert!(sim.link.is_done() && sim.link.shut_client_due(), "{}", sim.summary());
        assert!(!sim.link.closable());
        sim.link.client_shut(sim.now);
        assert!(sim.link.lingers() && !sim.link.closable());
        assert_eq!(sim.link.client_interest(), Interest { read: true, write: false });
        // What the client still sends is dropped; its end of stream ends the lingering.
        sim.step("c:defghi");
        assert_eq!(sim.to_server.len(), 0);
        sim.step("c-eof");
        assert!(sim.link.closable() && !sim.link.lingers());
        // A client that never ends its side is let go after the idle timeout, at most 2 s.
        let mut sim = Sim::new();
        sim.step("c:GET / HTTP/1.1\r\nExpect: x\r\n\r\n");
        sim.step("s-eof");
        sim.link.client_shut(sim.now);
        assert_eq!(sim.link.deadline(), Some(sim.start + Duration::from_secs(2)));
        sim.step("at 1.9");
        assert!(sim.link.lingers());
        sim.step("at 2");
        assert!(sim.link.closable());
        // Nothing to linger for: a client that ended its side, or one cut for not reading.
        check(
            &["c:GET / HTTP/1.1\r\nExpect: x\r\n\r\n", "c-eof", "s-eof"],
            "tiny_http got 0 bytes; client got [\"417\"]; done; half-closed",
        );
        let mut sim = Sim::new();
        sim.step(&format!("c:{GET}"));
        sim.step("c-fails");
        assert!(sim.link.closable());
    }

    /// The relay's own answers carry the headers tiny_http's do, from the same list.
    #[test]
    fn a_raw_reply_carries_every_header_of_the_reply() {
        use crate::http::error::ApiError;
        let text = |error: &ApiError| String::from_utf8(raw_reply(&Reply::error(error))).unwrap();
        let refused = text(&ApiError::MethodNotAllowed { method: "PUT".into(), allow: "POST" });
        assert!(refused.starts_with("HTTP/1.1 405 Method Not Allowed\r\nDate: "), "{refused}");
        for line in ["Allow: POST", "Content-Type: application/json", "Cache-Control: no-store", "Connection: close"] {
            assert!(refused.contains(&format!("\r\n{line}\r\n")), "{line} in {refused}");
        }
        let full = text(&ApiError::Overloaded);
        assert!(full.contains("\r\nRetry-After: 1\r\n") && !full.contains("Allow:"), "{full}");
    }
}
