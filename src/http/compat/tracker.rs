//! Where each request starts in a client's byte stream, as tiny_http 0.12.0 frames it, and
//! what of it tiny_http gets. Pure: bytes in, the bytes to forward and a verdict out; run by
//! the `http-relay` thread on every read from a client, through its [`super::link::Link`].
//!
//! How tiny_http frames a connection (`client.rs` and `request.rs` of 0.12.0): a line ends at
//! CRLF only; the request line is trimmed and split on single spaces, its third word is the
//! version; header lines follow up to an empty one. Then any `Transfer-Encoding` means a chunked
//! body; otherwise the first `Content-Length` that `usize::from_str` accepts gives the body's
//! length, and anything else means no body. A body with a length is read whole, or drained when
//! the request is dropped, so the next request line starts right after it.
//!
//! Each head is held back until it ends, then forwarded with the connection's stamp (the
//! relay's identity header, [`Tracker::new`]) right after the request line: the first header
//! tiny_http sees is always ours. A chunked body is followed as `chunked_transfer`'s decoder
//! reads it to its end; but it ends wherever its reader stops (a handler may stop early), so
//! from one on tiny_http may see lines start elsewhere: any `HTTP/2.0` or `HTTP/3.0` in the
//! stream is refused from its start (`Tracker::wary`), and a request tiny_http finds where we
//! saw none has no stamp (`http/` acts on no such request). Where a chunked body breaks the
//! decoder's rules, grows past `--max-body`, or has a size line longer than [`CHUNK_LINE_CAP`]
//! (the decoder would keep it all in memory), forwarding stops before the byte at fault: the
//! decoder meets the end of its stream, and the handler reading the body learns why
//! ([`Verdict::EndBody`]). A head well beyond `--max-url` or `--max-headers` ([`Caps`]: tiny_http
//! would hold all of it), or announcing a body too long to drain ([`BODY_CEILING`]), is refused
//! before tiny_http sees it; so is a head line ending in LF alone (tiny_http would wait for its
//! CRLF). So is every head tiny_http would answer with an empty `400` or `417`, or drop without
//! a word (a request line or header line it cannot parse, a byte outside ASCII but in the value
//! of a header nothing reads, whose line is dropped instead, an `Expect`
//! other than `100-continue`, `Connection` on two lines, of which tiny_http reads the first
//! alone), so that the client gets our JSON instead. Three things tiny_http gets wrong by the
//! RFCs are taken out of the stream: empty lines before a request line, `Expect: 100-continue`
//! in an HTTP/1.0 request, and `Connection` in an HTTP/1.0 request (tiny_http would keep such a
//! connection open without saying so; without it, the connection ends with its answer). Mistakes may only ever refuse too much.

use crate::http::framing::is_token;
use crate::http::limits::BODY_CEILING;

/// The request lines that tiny_http answers with a 505 that never comes (it deadlocks).
const REFUSED_VERSIONS: [&[u8]; 2] = [b"HTTP/2.0", b"HTTP/3.0"];
/// The versions we let tiny_http answer (it also takes `HTTP/0.9`, and answers it with an
/// `HTTP/0.9` status line no such client expects).
const TAKEN_VERSIONS: [&str; 2] = ["HTTP/1.0", "HTTP/1.1"];
/// A request line may be this much longer than its target may be: the method, two spaces and
/// the version.
const LINE_SLACK: usize = 64;
/// Header lines may take this many times `--max-headers` as sent: `limits.rs` counts names and
/// trimmed values, and the whitespace around a value is the client's to add; held beyond it,
/// they are refused here.
const HEADER_ROOM: usize = 2;
/// The longest chunk-size line, extensions included, forwarded.
pub(crate) const CHUNK_LINE_CAP: usize = 1024;
/// tiny_http reads a body of up to this many bytes itself before handing over the request.
pub(crate) const BUFFERED_BODY: usize = 1024;

/// The sizes a request may have (`--max-url`, `--max-headers`, `--max-body`), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caps {
    /// The request target.
    pub(crate) url: usize,
    /// The header lines, each with its CRLF.
    pub(crate) headers: usize,
    /// The body, as announced by `Content-Length` or as a chunked body's data.
    pub(crate) body: usize,
}

/// What to do once the bytes fed are forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Go on.
    Forward,
    /// Forward nothing more: the rest holds a request tiny_http must not see.
    Refuse(Refusal),
    /// Forward nothing more: the chunked body tiny_http is reading went wrong.
    EndBody(BodyFault),
}

/// What went wrong in a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFault {
    /// Its data grew past [`Caps::body`].
    TooLarge,
    /// Not as the decoder reads it, or a size line longer than [`CHUNK_LINE_CAP`].
    Malformed,
}

/// Why the rest of a stream is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A request line with a version other than `HTTP/1.0` and `HTTP/1.1` (tiny_http deadlocks
    /// on `HTTP/2.0` and `HTTP/3.0`).
    Version,
    /// A head tiny_http cannot parse.
    Malformed(Malformed),
    /// An `Expect` header other than `100-continue`.
    Expectation,
    /// A request line too long for [`Caps::url`]; the limit.
    LineTooLong(usize),
    /// Header lines longer than [`Caps::headers`]; the limit.
    HeadTooLarge(usize),
    /// A `Content-Length` too long to drain ([`BODY_CEILING`]; up to it, the route answers
    /// first: 401, 404 and 405 before 413); the `--max-body` limit.
    BodyTooLarge(usize),
    /// A line of the head that ends with LF alone: tiny_http would wait for a CRLF that may
    /// never come, and a request framed two ways is how requests are smuggled.
    BareLineFeed,
}

/// What in a head tiny_http cannot parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// Not a method, a target and a version, one space apart.
    RequestLine,
    /// Not a name without whitespace, a colon and a value.
    HeaderLine,
    /// A byte outside ASCII in the request line or a header.
    NotAscii,
    /// `Connection` on more than one line: tiny_http reads the first alone, a proxy joins them, so
    /// a `close` on a later line was not honoured and requests after it were served.
    Connection,
}

/// Where the client's stream stands, for deciding what a silence means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    /// Between requests: nothing of the next one yet.
    Between,
    /// Inside a request line or its headers (held back: tiny_http has none of it).
    InHead,
    /// Inside a body with a length; `buffered` when tiny_http reads it itself before handing
    /// over the request (so it answers nothing when the body stalls).
    InBody { buffered: bool },
    /// Inside a chunked body.
    Unknown,
}

#[derive(Debug)]
enum State {
    /// Reading a line: the request line when `request_line`, else a header line.
    Line {
        request_line: bool,
    },
    Body {
        remaining: usize,
        buffered: bool,
    },
    Chunked(Chunk),
    /// After the last request tiny_http reads on this connection (`Connection: close` or
    /// `upgrade`, or HTTP/1.0 without keep-alive): what follows is never read, so it is dropped
    /// here, unchecked (a client may end its request with a spare CRLF).
    Ended,
}

/// Where `chunked_transfer`'s decoder stands in a chunked body.
#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// The size, up to CR; after a `;`, an extension up to CR; `len` bytes of the line so far.
    Size {
        extension: bool,
        len: usize,
    },
    SizeLf {
        size: usize,
    },
    Data {
        remaining: usize,
    },
    DataCr,
    DataLf,
    LastCr,
    LastLf,
}

/// The framing facts of the head being read.
#[derive(Debug, Default)]
struct Facts {
    chunked: bool,
    /// The first `Content-Length`, and whether it parsed.
    content_length: Option<Option<usize>>,
    /// The first `Expect`: whether it is `100-continue`.
    expects_continue: Option<bool>,
    /// The first `Connection`, lowercased: "upgrade" in it means tiny_http hands the connection
    /// itself over as the body and buffers nothing; it and "close" end the connection after it.
    connection: Option<String>,
    /// The request line says `HTTP/1.0`: the connection ends after it unless it asks to be kept.
    http_1_0: bool,
}

impl Facts {
    fn upgrade(&self) -> bool {
        self.connection.as_ref().is_some_and(|c| c.contains("upgrade"))
    }

    /// Whether tiny_http reads nothing after this request (`client.rs`, "updating the status
    /// of the connection").
    fn last(&self) -> bool {
        match &self.connection {
            Some(c) if c.contains("close") || c.contains("upgrade") => true,
            Some(c) => self.http_1_0 && !c.contains("keep-alive"),
            None => self.http_1_0,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Tracker {
    state: State,
    /// The head read so far, with the stamp after its request line.
    head: Vec<u8>,
    /// Where the line being read starts in `head`.
    line_start: usize,
    /// Where the header lines start in `head` (after the stamp).
    headers_start: usize,
    /// Bytes of this head's header lines dropped (not forwarded): they count against the cap.
    dropped: usize,
    caps: Caps,
    /// The chunked body's data so far.
    chunked_len: usize,
    facts: Facts,
    /// The chunk-size line being read.
    size_line: Vec<u8>,
    /// Set from the first chunked body on: tiny_http may see lines start elsewhere than we
    /// do, so a refused version is looked for anywhere in the stream.
    wary: bool,
    /// The last bytes scanned while wary, so a version split across reads is still found.
    tail: Vec<u8>,
    /// The line put after each request line (CRLF included).
    stamp: Vec<u8>,
    /// Where in `out` each head forwarded since the last [`Tracker::take_head_starts`] starts.
    head_starts: Vec<usize>,
    /// The request being read is the last tiny_http reads.
    last: bool,
    /// Requests that have ended, head and body.
    ended: u64,
    /// The request line being read, once whole (empty before): kept for what the relay
    /// answers itself; one buffer for every request, so none costs an allocation.
    request_line: String,
}

impl Tracker {
    /// A tracker for a new connection, whose requests get `stamp` (a header line with its
    /// CRLF) after their request line and are refused beyond `caps`.
    pub(crate) fn new(stamp: Vec<u8>, caps: Caps) -> Tracker {
        Tracker {
            state: State::Line { request_line: true },
            head: Vec::new(),
            line_start: 0,
            headers_start: 0,
            dropped: 0,
            caps,
            chunked_len: 0,
            facts: Facts::default(),
            size_line: Vec::new(),
            wary: false,
            tail: Vec::new(),
            stamp,
            head_starts: Vec::new(),
            last: false,
            ended: 0,
            request_line: String::new(),
        }
    }

    /// How many requests have ended, head and body, so far.
    pub(crate) fn ended(&self) -> u64 {
        self.ended
    }

    /// The method and target of the request being read, once its request line is whole.
    pub(crate) fn request(&self) -> Option<(&str, &str)> {
        let mut words = self.request_line.split(' ');
        words.next().zip(words.next()).filter(|(method, _)| !method.is_empty())
    }

    /// A request just ended: the next one starts, unless tiny_http reads no more.
    fn after_request(&mut self) -> State {
        self.ended += 1;
        self.request_line.clear();
        if self.last {
            State::Ended
        } else {
            State::Line { request_line: true }
        }
    }

    /// Takes the bytes just read from the client, and appends to `out` what tiny_http gets.
    pub(crate) fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Verdict {
        let mut at = 0;
        while at < bytes.len() && !self.wary {
            match self.step(&bytes[at..], out) {
                Ok(taken) => at += taken,
                Err(verdict) => return self.stop(verdict),
            }
            // tiny_http may not read a chunked body to its end: from its start, be wary.
            self.wary = matches!(self.state, State::Chunked(_));
        }
        let rest = &bytes[at..];
        // Only the bytes before a refused version are followed.
        let (rest, version) = match self.scan(rest) {
            Some(end) => (&rest[..end], true),
            None => (rest, false),
        };
        let mut at = 0;
        while at < rest.len() {
            match self.step(&rest[at..], out) {
                Ok(taken) => at += taken,
                Err(verdict) => return self.stop(verdict),
            }
        }
        if version {
            return self.stop(Verdict::Refuse(Refusal::Version));
        }
        Verdict::Forward
    }

    /// Where in `out` each head forwarded since the last call starts, in order.
    pub(crate) fn take_head_starts(&mut self) -> std::vec::Drain<'_, usize> {
        self.head_starts.drain(..)
    }

    fn stop(&mut self, verdict: Verdict) -> Verdict {
        self.head.clear();
        verdict
    }

    pub(crate) fn position(&self) -> Position {
        match self.state {
            State::Line { request_line: true } if self.head.is_empty() => Position::Between,
            State::Ended => Position::Between,
            State::Line { .. } => Position::InHead,
            State::Body { buffered, .. } => Position::InBody { buffered },
            State::Chunked(_) => Position::Unknown,
        }
    }

    /// Takes what the current state takes from the start of `bytes`; how many bytes it took,
    /// or why nothing more is forwarded.
    fn step(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<usize, Verdict> {
        match self.state {
            State::Body { remaining, buffered } => {
                let take = remaining.min(bytes.len());
                out.extend_from_slice(&bytes[..take]);
                self.state = match remaining - take {
                    0 => self.after_request(),
                    remaining => State::Body { remaining, buffered },
                };
                Ok(take)
            }
            State::Ended => Ok(bytes.len()),
            State::Chunked(Chunk::Data { remaining }) => {
                let take = remaining.min(bytes.len());
                out.extend_from_slice(&bytes[..take]);
                self.state = State::Chunked(match remaining - take {
                    0 => Chunk::DataCr,
                    remaining => Chunk::Data { remaining },
                });
                Ok(take)
            }
            State::Chunked(chunk) => {
                // The byte at fault is kept back: the decoder then meets the end of its stream.
                self.state = self.chunk_byte(chunk, bytes[0]).map_err(Verdict::EndBody)?;
                out.push(bytes[0]);
                Ok(1)
            }
            State::Line { request_line } => {
                let line_end = bytes.iter().position(|&byte| byte == b'\n');
                let taken = line_end.map_or(bytes.len(), |at| at + 1);
                self.head.extend_from_slice(&bytes[..taken]);
                // The bytes before the line's end count against the caps, not its LF.
                let held = self.head.len() - usize::from(line_end.is_some());
                if request_line && held > self.caps.url + LINE_SLACK {
                    return Err(Verdict::Refuse(Refusal::LineTooLong(self.caps.url)));
                } else if !request_line
                    && (held + self.dropped).saturating_sub(self.headers_start) > HEADER_ROOM * self.caps.headers + 1
                {
                    // + 1: the CR of the empty line that ends the head.
                    return Err(Verdict::Refuse(Refusal::HeadTooLarge(self.caps.headers)));
                }
                if line_end.is_some() {
                    if self.head.len() - self.line_start < 2 || self.head[self.head.len() - 2] != b'\r' {
                        return Err(Verdict::Refuse(Refusal::BareLineFeed));
                    }
                    self.end_line(request_line, out).map_err(Verdict::Refuse)?;
                }
                Ok(taken)
            }
        }
    }

    /// One byte of a chunked body's framing, as `chunked_transfer` 1.5's decoder reads it.
    fn chunk_byte(&mut self, chunk: Chunk, byte: u8) -> Result<State, BodyFault> {
        let next = match (chunk, byte) {
            (Chunk::Size { extension, .. }, b'\r') => {
                let line = std::mem::take(&mut self.size_line);
                let size = chunk_size(&line, extension).ok_or(BodyFault::Malformed)?;
                if size > self.caps.body.saturating_sub(self.chunked_len) {
                    return Err(BodyFault::TooLarge);
                }
                self.chunked_len += size;
                Chunk::SizeLf { size }
            }
            (Chunk::Size { len, .. }, _) if len >= CHUNK_LINE_CAP => return Err(BodyFault::Malformed),
            (Chunk::Size { extension: false, len }, b';') => Chunk::Size { extension: true, len: len + 1 },
            (Chunk::Size { extension, len }, byte) => {
                if !extension {
                    self.size_line.push(byte);
                }
                Chunk::Size { extension, len: len + 1 }
            }
            (Chunk::SizeLf { size: 0 }, b'\n') => Chunk::LastCr,
            (Chunk::SizeLf { size }, b'\n') => Chunk::Data { remaining: size },
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataLf, b'\n') => Chunk::Size { extension: false, len: 0 },
            (Chunk::LastCr, b'\r') => Chunk::LastLf,
            (Chunk::LastLf, b'\n') => return Ok(self.after_request()),
            // The decoder fails on this byte.
            _ => return Err(BodyFault::Malformed),
        };
        Ok(State::Chunked(next))
    }

    /// A line of the head just ended (its CRLF is the last of `head`).
    fn end_line(&mut self, request_line: bool, out: &mut Vec<u8>) -> Result<(), Refusal> {
        let line = &self.head[self.line_start..self.head.len() - 2];
        if request_line && line.is_empty() {
            // RFC 9112, 2.2: empty lines before a request line are ignored (some clients end a
            // body with a spare CRLF); tiny_http would take one for a request line and answer 400.
            // A head or a body, not bytes, is progress, so a stream of them still times out.
            self.head.clear();
            return Ok(());
        }
        if request_line {
            self.facts.http_1_0 = check_request_line(line)? == "HTTP/1.0";
            self.request_line.clear();
            self.request_line.push_str(std::str::from_utf8(line).unwrap_or_default());
            self.head.extend_from_slice(&self.stamp);
            self.headers_start = self.head.len();
            self.dropped = 0;
            self.state = State::Line { request_line: false };
        } else if line.is_empty() {
            self.end_head(out)?;
        } else if header(&mut self.facts, line)? == Line::Dropped {
            self.dropped += self.head.len() - self.line_start;
            self.head.truncate(self.line_start);
        }
        self.line_start = self.head.len();
        Ok(())
    }

    /// Forwards the whole head, and goes on as tiny_http will.
    fn end_head(&mut self, out: &mut Vec<u8>) -> Result<(), Refusal> {
        if self.facts.expects_continue == Some(false) {
            return Err(Refusal::Expectation);
        }
        // `limits.rs` counts what tiny_http gets; lines dropped on the way count here, so a head
        // of them is refused as the same head forwarded would be.
        if self.dropped > 0 && self.head.len() - self.headers_start + self.dropped > self.caps.headers {
            return Err(Refusal::HeadTooLarge(self.caps.headers));
        }
        if let Some(Some(length)) = self.facts.content_length.filter(|_| !self.facts.chunked) {
            if length > BODY_CEILING {
                return Err(Refusal::BodyTooLarge(self.caps.body.min(BODY_CEILING)));
            }
        }
        self.head_starts.push(out.len());
        out.extend_from_slice(&self.head);
        self.head.clear();
        let facts = std::mem::take(&mut self.facts);
        self.last = facts.last();
        self.chunked_len = 0;
        self.state = match facts.content_length {
            _ if facts.chunked => State::Chunked(Chunk::Size { extension: false, len: 0 }),
            Some(Some(length)) if length > 0 => State::Body {
                remaining: length,
                buffered: length <= BUFFERED_BODY && facts.expects_continue != Some(true) && !facts.upgrade(),
            },
            _ => self.after_request(),
        };
        Ok(())
    }

    /// Where the first refused version in `bytes` starts, if any (0 for one that started in
    /// an earlier read); always `None` unless wary.
    fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        if !self.wary {
            return None;
        }
        let keep = REFUSED_VERSIONS[0].len() - 1;
        for (at, &byte) in bytes.iter().enumerate() {
            self.tail.push(byte);
            if REFUSED_VERSIONS.iter().any(|version| self.tail.ends_with(version)) {
                return Some((at + 1).saturating_sub(REFUSED_VERSIONS[0].len()));
            }
            if self.tail.len() > 2 * keep {
                self.tail.drain(..self.tail.len() - keep);
            }
        }
        None
    }
}

/// Whether a header line reaches tiny_http.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Kept,
    Dropped,
}

/// The size a chunk-size line gives, if it is hex digits alone (RFC 9112, 7.1; whitespace only
/// before an extension). The decoder also takes a sign and whitespace around the digits, which a
/// proxy in front may read otherwise.
fn chunk_size(line: &[u8], extension: bool) -> Option<usize> {
    let digits = match extension {
        true => line.trim_ascii_end(),
        false => line,
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    usize::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// Notes what tiny_http's `new_request` looks at in one header line, if the line is ASCII, a
/// name (a token, RFC 9110's; tiny_http takes any without whitespace, even an empty one), a
/// colon, then anything. `Expect: 100-continue` in an HTTP/1.0 request is dropped: RFC 9110
/// (10.1.1) says to ignore it, and tiny_http would answer it with a `100 Continue` such a
/// client does not know. So is an HTTP/1.0 request's `Connection`: tiny_http keeps such a
/// connection open for `keep-alive` without saying so in its answer (it drops a `Connection`
/// header we set), and a 1.0 client then waits for the close (RFC 9112, C.2.2) until the idle
/// timeout; without it, the connection ends with the answer.
fn header(facts: &mut Facts, line: &[u8]) -> Result<Line, Refusal> {
    // Obsolete line folding (RFC 9112, 5.2): tiny_http takes it as a header line of its own, a
    // proxy in front may join it to the line before; a request framed two ways is refused.
    if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
        return Err(Refusal::Malformed(Malformed::HeaderLine));
    }
    let line = match ascii(line) {
        Ok(line) => line,
        Err(refusal) => return other_text(line).ok_or(refusal),
    };
    let (name, value) = match line.trim().split_once(':') {
        Some((name, value)) if is_token(name) => (name, value.trim()),
        _ => return Err(Refusal::Malformed(Malformed::HeaderLine)),
    };
    if name.eq_ignore_ascii_case("Transfer-Encoding") {
        facts.chunked = true;
    } else if name.eq_ignore_ascii_case("Content-Length") && facts.content_length.is_none() {
        facts.content_length = Some(value.parse().ok());
    } else if name.eq_ignore_ascii_case("Expect") && facts.expects_continue.is_none() {
        let continues = value.eq_ignore_ascii_case("100-continue");
        if continues && facts.http_1_0 {
            return Ok(Line::Dropped);
        }
        facts.expects_continue = Some(continues);
    } else if name.eq_ignore_ascii_case("Connection") && facts.http_1_0 {
        return Ok(Line::Dropped);
    } else if name.eq_ignore_ascii_case("Connection") {
        if facts.connection.is_some() {
            return Err(Refusal::Malformed(Malformed::Connection));
        }
        facts.connection = Some(value.to_ascii_lowercase());
    }
    Ok(Line::Kept)
}

/// The headers something reads: tiny_http (framing, `Connection`, `Expect`, and `TE` for the
/// answer's framing) or a check or route of ours (`limits.rs`, `auth.rs`, `cross_site.rs`,
/// `server.rs`, `framing.rs`'s `Upgrade`). Their values must be ASCII.
const READ_HEADERS: [&str; 10] = [
    "Host",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Expect",
    "TE",
    "Upgrade",
    "Authorization",
    "Idempotency-Key",
    "Sec-Fetch-Site",
];

/// A header line whose value holds bytes beyond ASCII (obs-text, RFC 9110 5.5: a Latin-1
/// `User-Agent`, say), which tiny_http cannot parse: dropped when nothing reads that header,
/// so such a client is still served. `None` (refused) for any other line beyond ASCII, and for
/// a value holding what some parser takes for a line break (the byte 0x85, NEL in Latin-1, even
/// inside a UTF-8 letter; U+2028, U+2029): a proxy in front that splits there would see another
/// head.
fn other_text(line: &[u8]) -> Option<Line> {
    // 0x85 alone is refused below: NEL in Latin-1, and in UTF-8 (`C2 85`, and inside letters
    // such as `Å`) the byte a Latin-1 reader would break at.
    const BREAKS: [&[u8]; 2] = [b"\xe2\x80\xa8", b"\xe2\x80\xa9"];
    let colon = line.iter().position(|&b| b == b':')?;
    let name = std::str::from_utf8(&line[..colon]).ok().filter(|name| is_token(name))?;
    let value = &line[colon + 1..];
    let text = |b: &u8| *b == b'\t' || (b' '..=b'~').contains(b) || (*b >= 0x80 && *b != 0x85);
    let breaks = BREAKS.iter().any(|seq| value.windows(seq.len()).any(|w| w == *seq));
    let unread = !READ_HEADERS.iter().any(|read| read.eq_ignore_ascii_case(name));
    (unread && !breaks && value.iter().all(text)).then_some(Line::Dropped)
}

/// Whether this request line (without its CRLF) is a method (a token), a target and a version
/// tiny_http knows, one space apart (RFC 9112; tiny_http also takes surrounding whitespace and
/// ignores more words). Returns the version. A third word tiny_http would take for a version
/// it cannot answer is refused as such, whatever else is wrong.
fn check_request_line(line: &[u8]) -> Result<&str, Refusal> {
    let line = ascii(line)?;
    let mut words = line.split(' ');
    match (words.next(), words.next(), words.next(), words.next()) {
        (_, _, Some(version), _) if is_version(version) && !TAKEN_VERSIONS.contains(&version) => Err(Refusal::Version),
        (Some(method), Some(target), Some(version), None)
            if is_token(method) && !target.is_empty() && TAKEN_VERSIONS.contains(&version) =>
        {
            Ok(version)
        }
        _ => Err(Refusal::Malformed(Malformed::RequestLine)),
    }
}

/// `HTTP/` and a digit, maybe a dot and another (RFC 9112's form, and HTTP/2's short name).
fn is_version(word: &str) -> bool {
    match word.strip_prefix("HTTP/").map(str::as_bytes) {
        Some([major]) => major.is_ascii_digit(),
        Some([major, b'.', minor]) => major.is_ascii_digit() && minor.is_ascii_digit(),
        _ => false,
    }
}

/// A head line as text, if tiny_http would read it at all.
fn ascii(line: &[u8]) -> Result<&str, Refusal> {
    std::str::from_utf8(line).ok().filter(|line| line.is_ascii()).ok_or(Refusal::Malformed(Malformed::NotAscii))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: &str = "X-Relay: s\r\n";
    const CAPS: Caps = Caps { url: 8192, headers: 16384, body: 1 << 20 };

    /// Feeds `stream` in pieces of `step` bytes to a tracker with `caps`; returns what tiny_http
    /// gets, the verdict that stopped forwarding (or `Forward`), and the position at the end.
    fn run_with(stream: &[u8], step: usize, caps: Caps) -> (String, Verdict, Position) {
        let mut tracker = Tracker::new(STAMP.into(), caps);
        let mut out = Vec::new();
        for piece in stream.chunks(step) {
            let verdict = tracker.feed(piece, &mut out);
            if verdict != Verdict::Forward {
                return (String::from_utf8(out).unwrap(), verdict, tracker.position());
            }
        }
        (String::from_utf8(out).unwrap(), Verdict::Forward, tracker.position())
    }

    /// As [`run_with`] with [`CAPS`], for streams whose bodies never go wrong: the refusal if any.
    fn run(stream: &[u8], step: usize) -> (String, Option<Refusal>, Position) {
        match run_with(stream, step, CAPS) {
            (out, Verdict::Forward, at) => (out, None, at),
            (out, Verdict::Refuse(refusal), at) => (out, Some(refusal), at),
            (_, verdict, _) => panic!("{verdict:?} for {stream:?}"),
        }
    }

    /// What tiny_http gets, without what the relay puts in.
    fn unstamped(out: &str) -> String {
        out.replace(STAMP, "")
    }

    /// Every way of cutting `stream` into reads gives the same verdict; a refusal never forwards
    /// the line end (or the whole version) that would let tiny_http act on it; what is
    /// forwarded is the stream, stamped, but for a head not yet complete.
    #[track_caller]
    fn check(stream: &str, refused: bool, position: Position) {
        for step in 1..=stream.len().max(1) {
            let (out, refusal, at) = run(stream.as_bytes(), step);
            assert_eq!(refusal.is_some(), refused, "{stream:?} in pieces of {step}");
            if refused {
                assert!(!out.contains("HTTP/2.0\r\n") && !out.contains("HTTP/3.0\r\n"), "{out:?}");
            } else {
                assert_eq!(at, position, "{stream:?} in pieces of {step}");
                let sent = unstamped(&out);
                assert!(stream.starts_with(&sent), "{out:?}");
                if position != Position::InHead {
                    assert_eq!(sent, stream);
                }
            }
        }
    }

    const GET: &str = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn a_version_above_1_1_is_refused_first_or_after_others() {
        check("GET /health HTTP/2.0\r\nHost: x\r\n\r\n", true, Position::Between);
        check("GET /health HTTP/3.0\r\n", true, Position::Between);
        check("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", true, Position::Between);
        check("  GET / HTTP/2.0  \r\n", true, Position::Between);
        check("GET / HTTP/2.0 trailing words\r\n", true, Position::Between);
        check(&format!("{GET}{GET}GET / HTTP/2.0\r\n"), true, Position::Between);
        let post = "POST /ingest HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcdeGET / HTTP/2.0\r\n";
        check(post, true, Position::Between);
        // The requests before it are forwarded whole, however the reads fall.
        let (out, refusal, _) = run(format!("{GET}{GET}GET / HTTP/2.0\r\n").as_bytes(), 7);
        assert_eq!((unstamped(&out), refusal), (format!("{GET}{GET}"), Some(Refusal::Version)));
    }

    #[test]
    fn what_tiny_http_cannot_answer_is_refused_and_what_it_takes_passes() {
        use Malformed::{HeaderLine, NotAscii, RequestLine};
        /// The refusal of `stream`, the same however it is cut into reads.
        #[track_caller]
        fn refusal(stream: &str) -> Option<Refusal> {
            let refusals: Vec<Option<Refusal>> =
                (1..=stream.len()).map(|step| run(stream.as_bytes(), step).1).collect();
            assert!(refusals.windows(2).all(|w| w[0] == w[1]), "{stream:?}: {refusals:?}");
            refusals[0]
        }
        let cases: [(&str, Option<Refusal>); 41] = [
            (GET, None),
            ("GET / HTTP/1.0\r\n\r\n", None),
            ("GET /health HTTP/1.1 more words\r\n\r\n", Some(Refusal::Malformed(RequestLine))),
            (" GET / HTTP/1.1\r\n\r\n", Some(Refusal::Malformed(RequestLine))),
            ("GET  HTTP/1.1\r\n\r\n", Some(Refusal::Malformed(RequestLine))),
            ("G(T / HTTP/1.1\r\n\r\n", Some(Refusal::Malformed(RequestLine))),
            ("GET / HTTP/2.0 more words\r\n\r\n", Some(Refusal::Version)),
            ("GET / HTTP/1.1\r\nX-A: HTTP/2.0\r\n\r\n", None),
            ("GET / HTTP/1.1\r\n: an empty name\r\n\r\n", Some(Refusal::Malformed(HeaderLine))),
            ("GET / HTTP/1.1\r\nX(: a name with a separator\r\n\r\n", Some(Refusal::Malformed(HeaderLine))),
            ("GET / HTTP/1.1\r\nExpect: 100-Continue\r\nExpect: other\r\n\r\n", None),
            ("GET / HTTP/0.9\r\n\r\n", Some(Refusal::Version)),
            ("GET / HTTP/1.2\r\n\r\n", Some(Refusal::Version)),
            ("GET / HTTP/2\r\n\r\n", Some(Refusal::Version)),
            ("GET / HTTP/1.1x\r\n\r\n", Some(Refusal::Malformed(RequestLine))),
            ("GET / HTTP/01.1\r\n\r\n", Some(Refusal::Malformed(RequestLine))),
            ("GET /  HTTP/1.1\r\n\r\n", Some(Refusal::Malformed(RequestLine))), // two spaces
            ("GET / http/1.1\r\n\r\n", Some(Refusal::Malformed(RequestLine))),
            ("GET /health\r\n\r\n", Some(Refusal::Malformed(RequestLine))),
            ("\r\n", None),
            ("\r\n\r\r\n", Some(Refusal::Malformed(RequestLine))),
            ("GET / HTTP/1.1\r\nno colon\r\n\r\n", Some(Refusal::Malformed(HeaderLine))),
            ("GET / HTTP/1.1\r\nX A: b\r\n\r\n", Some(Refusal::Malformed(HeaderLine))),
            ("GET / HTTP/1.1\r\nX-A: a\r\n Content-Length: 2\r\n\r\nab", Some(Refusal::Malformed(HeaderLine))),
            ("GET / HTTP/1.1\r\nX-A: a\r\n\tb\r\n\r\n", Some(Refusal::Malformed(HeaderLine))),
            ("GET /caf\u{e9} HTTP/1.1\r\n\r\n", Some(Refusal::Malformed(NotAscii))),
            ("GET / HTTP/1.1\r\nX: caf\u{e9}\r\n\r\n", None),
            ("GET / HTTP/1.1\r\nIdempotency-Key: caf\u{e9}\r\n\r\n", Some(Refusal::Malformed(NotAscii))),
            ("GET / HTTP/1.1\r\nHOST: caf\u{e9}\r\n\r\n", Some(Refusal::Malformed(NotAscii))),
            ("GET / HTTP/1.1\r\nX-\u{e9}: a\r\n\r\n", Some(Refusal::Malformed(NotAscii))),
            ("GET / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", Some(Refusal::Expectation)),
            // tiny_http reads the first Connection line alone; a proxy joins them.
            (
                "GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
                Some(Refusal::Malformed(Malformed::Connection)),
            ),
            ("POST / HTTP/1.1\r\nExpect:\r\nContent-Length: 2\r\n\r\nab", Some(Refusal::Expectation)),
            // After the last request tiny_http reads, anything goes: it is never read.
            ("POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nab\r\n", None),
            ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n\r\nGET /x\r\n\r\n", None),
            ("GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\n\u{e9}\r\n", None),
            ("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n\r\n", None),
            ("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n\r\n \r\n", Some(Refusal::Malformed(RequestLine))),
            // An HTTP/1.0 request is the last: what follows is never read.
            ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\r\n \r\n", None),
            ("GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\nGET\r\n\r\n", None),
            // Refused whole: nothing of the head reaches tiny_http.
            (&format!("{GET}GET / HTTP/1.1\r\nExpect: x\r\n\r\n"), Some(Refusal::Expectation)),
        ];
        for (stream, expected) in cases {
            assert_eq!(refusal(stream), expected, "{stream:?}");
        }
        let (out, _, _) = run(format!("{GET}GET / HTTP/1.1\r\nExpect: x\r\n\r\n").as_bytes(), 7);
        assert_eq!(unstamped(&out), GET);
        // What follows the last request is dropped, not forwarded.
        let last = "POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(
            run(format!("{last}\r\n{GET}").as_bytes(), 5).0,
            format!("POST / HTTP/1.0\r\n{STAMP}Content-Length: 2\r\n\r\nab")
        );
    }

    #[test]
    fn empty_lines_before_a_request_line_are_dropped() {
        let keep_alive = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nab";
        for step in [1, 2, 5, 64] {
            let (out, refusal, at) = run(format!("\r\n\r\n{GET}\r\n{keep_alive}\r\n{GET}").as_bytes(), step);
            assert_eq!((unstamped(&out), refusal, at), (format!("{GET}{keep_alive}{GET}"), None, Position::Between));
            let (out, refusal, at) = run(b"\r\n\r", step);
            assert_eq!((out, refusal, at), (String::new(), None, Position::InHead), "a CR begins a line");
        }
        // A CRLF is no request: it neither starts nor ends one.
        let mut tracker = Tracker::new(STAMP.into(), CAPS);
        assert_eq!(tracker.feed(b"\r\n\r\n", &mut Vec::new()), Verdict::Forward);
        assert_eq!((tracker.ended(), tracker.take_head_starts().count()), (0, 0));
    }

    #[test]
    fn an_http_1_0_request_loses_its_expect_100_continue() {
        let post = |version: &str, expect: &str| {
            format!("POST / HTTP/{version}\r\nX-A: 1\r\n{expect}Content-Length: 2\r\n\r\nab")
        };
        let continues = "Expect: 100-Continue\r\n";
        for step in [1, 3, 64] {
            let (out, refusal, _) = run(post("1.0", continues).as_bytes(), step);
            assert_eq!((unstamped(&out), refusal), (post("1.0", ""), None));
            let (out, refusal, _) = run(post("1.1", continues).as_bytes(), step);
            assert_eq!((unstamped(&out), refusal), (post("1.1", continues), None));
            // Only the first Expect counts, as in tiny_http: with the first dropped, the next does.
            let other = format!("{continues}Expect: other\r\n");
            assert_eq!(run(post("1.0", &other).as_bytes(), step).1, Some(Refusal::Expectation));
        }
        // Without the expectation, tiny_http reads a short body itself.
        let stalled = "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nab";
        assert_eq!(run(stalled.as_bytes(), 4).2, Position::InBody { buffered: true });
    }

    #[test]
    fn an_http_1_0_request_loses_its_connection_header_and_is_the_last() {
        let get = |version: &str, connection: &str| format!("GET / HTTP/{version}\r\n{connection}X-A: 1\r\n\r\n");
        let keep = "Connection: keep-alive\r\n";
        for step in [1, 3, 64] {
            let (out, refusal, _) = run(format!("{}{GET}", get("1.0", keep)).as_bytes(), step);
            assert_eq!((unstamped(&out), refusal), (get("1.0", ""), None), "what follows is never read");
            let (out, _, _) = run(get("1.1", keep).as_bytes(), step);
            assert_eq!(unstamped(&out), get("1.1", keep));
        }
    }

    #[test]
    fn bodies_with_a_length_are_skipped_as_tiny_http_reads_them() {
        let body = |cl: &str, body: &str| format!("POST / HTTP/1.1\r\nContent-Length: {cl}\r\n\r\n{body}");
        check(&body("12", "GET / HTTP"), false, Position::InBody { buffered: true });
        check(&body("16", "GET / HTTP/2.0\r\n"), false, Position::Between);
        check(&body("+16", "GET / HTTP/2.0\r\n"), false, Position::Between); // usize::from_str takes '+'
        check(&body("x", "GET / HTTP/2.0\r\n"), true, Position::Between); // unparsable: no body
        check(&body("0", "GET / HTTP/2.0\r\n"), true, Position::Between);
        check(&body("2000", "x"), false, Position::InBody { buffered: false });
        let first_wins = "POST / HTTP/1.1\r\ncontent-length: 16\r\nContent-Length: 0\r\n\r\nGET / HTTP/2.0\r\n";
        check(first_wins, false, Position::Between);
        let expect = "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nab";
        check(expect, false, Position::InBody { buffered: false });
        check("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab", false, Position::InBody { buffered: true });
        // An upgrade's body is read by our handler (which answers a stall), never by tiny_http.
        let upgrade = "POST / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nContent-Length: 5\r\n\r\nab";
        check(upgrade, false, Position::InBody { buffered: false });
        check("POST / HTTP/1.1\r\nContent-Le", false, Position::InHead);
    }

    #[test]
    fn after_a_chunked_body_any_refused_version_is_refused() {
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        check(&format!("{chunked}5\r\nhello\r\n0\r\n\r\n{GET}"), false, Position::Between);
        check(&format!("{chunked}5;x=y\r\nhello\r\n0\r\n\r\n{GET}"), false, Position::Between);
        check(&format!("{chunked}5 \t;x=y\r\nhello\r\n0\r\n\r\n{GET}"), false, Position::Between);
        check(&format!("{chunked}5\r\nhel"), false, Position::Unknown);
        check(&format!("{chunked}10\r\nxxGET / HTTP/2.0\r\n"), true, Position::Unknown);
        check(&format!("{chunked}0\r\n\r\n{GET}GET /HTTP/3.0"), true, Position::Unknown);
    }

    #[test]
    fn every_head_gets_the_stamp_first_even_after_a_chunked_body() {
        let post = "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        let (out, _, _) = run(format!("{GET}{post}").as_bytes(), 5);
        let stamped = format!(
            "GET /health HTTP/1.1\r\n{STAMP}Host: x\r\n\r\nPOST / HTTP/1.1\r\n{STAMP}Content-Length: 3\r\n\r\nabc"
        );
        assert_eq!(out, stamped);
        // A client's own copy of the stamp comes after ours, where it is not looked at.
        let forged = format!("GET / HTTP/1.1\r\n{STAMP}\r\n");
        assert_eq!(run(forged.as_bytes(), 3).0, format!("GET / HTTP/1.1\r\n{STAMP}{STAMP}\r\n"));
        // Nothing of a head reaches tiny_http before it ends.
        assert_eq!(run(b"GET / HTTP/1.1\r\nHost: x\r\n", 4), (String::new(), None, Position::InHead));
        // Keep-alive after a chunked body read to its end: the next request is stamped.
        let chunked = format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n{GET}");
        let expected = format!(
            "POST / HTTP/1.1\r\n{STAMP}Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\nGET /health HTTP/1.1\r\n{STAMP}Host: x\r\n\r\n"
        );
        assert_eq!(run(chunked.as_bytes(), 6).0, expected);
    }

    #[test]
    fn a_chunked_body_stops_before_the_byte_the_decoder_fails_on_or_past_the_caps() {
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let stamped = format!("POST / HTTP/1.1\r\n{STAMP}Transfer-Encoding: chunked\r\n\r\n");
        let malformed = Verdict::EndBody(BodyFault::Malformed);
        let caps = Caps { body: 10, ..CAPS };
        let long_size = format!("{}\r\n", "0".repeat(CHUNK_LINE_CAP + 1));
        let long_extension = format!("1;{}\r\n", "x".repeat(CHUNK_LINE_CAP));
        let cases: [(String, &str, Verdict); 12] = [
            (format!("zz\r\nhello\r\n0\r\n\r\n{GET}"), "zz", malformed),
            (format!("5\r\nhelloXX0\r\n\r\n{GET}"), "5\r\nhello", malformed),
            ("-1\r\n".into(), "-1", malformed),
            ("+5\r\nhello\r\n0\r\n\r\n".into(), "+5", malformed),
            (" 5\r\nhello\r\n0\r\n\r\n".into(), " 5", malformed),
            ("5 \r\nhello\r\n0\r\n\r\n".into(), "5 ", malformed),
            ("fffffffffffffffffffff\r\n".into(), "fffffffffffffffffffff", malformed),
            ("1\r\na\r\n0\r\nTrailer: x\r\n\r\n".into(), "1\r\na\r\n0\r\n", malformed),
            (long_size.clone(), &long_size[..CHUNK_LINE_CAP], malformed),
            (long_extension.clone(), &long_extension[..CHUNK_LINE_CAP], malformed),
            // Ten bytes of data fit; the chunk that would make eleven is not forwarded.
            (
                "5\r\nhello\r\n5\r\nworld\r\n1\r\n!\r\n".into(),
                "5\r\nhello\r\n5\r\nworld\r\n1",
                Verdict::EndBody(BodyFault::TooLarge),
            ),
            ("5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n".into(), "5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", Verdict::Forward),
        ];
        for (body, forwarded, verdict) in cases {
            for step in [1, 3, 64, 4096] {
                let (out, got, _) = run_with(format!("{chunked}{body}").as_bytes(), step, caps);
                assert_eq!((got, out), (verdict, format!("{stamped}{forwarded}")), "{body:?} in pieces of {step}");
            }
        }
        // Transfer-Encoding of any kind is chunked to tiny_http: a gzip body fails as chunked.
        let gzip = format!("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nabcd{GET}");
        let expected = format!("POST / HTTP/1.1\r\n{STAMP}Transfer-Encoding: gzip\r\n\r\nabcdGET /health HTTP/1.1");
        assert_eq!(run_with(gzip.as_bytes(), 6, CAPS), (expected, malformed, Position::Unknown));
    }

    #[test]
    fn a_head_line_ending_in_a_bare_lf_is_refused() {
        check("GET / HTTP/1.1\n\n", true, Position::Between);
        check("GET / HTTP/2.0\n\n", true, Position::Between);
        check("GET / HTTP/1.1\r\nHost: x\n\r\n", true, Position::Between);
        check("GET / HTTP/1.1\r\n\n", true, Position::Between);
        check(&format!("{GET}\n"), true, Position::Between);
        // The requests before it are forwarded whole; a CR alone is tiny_http's to judge.
        let (out, refusal, _) = run(format!("{GET}GET / HTTP/1.1\r\nX: a\nb\r\n\r\n").as_bytes(), 5);
        assert_eq!((unstamped(&out), refusal), (GET.to_owned(), Some(Refusal::BareLineFeed)));
        check("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", false, Position::Between);
        // A bare LF inside a body is the body's business.
        check("POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n\n\n", false, Position::Between);
    }

    #[test]
    fn a_head_or_a_body_length_over_the_caps_is_refused_before_tiny_http_sees_it() {
        let caps = Caps { url: 100, headers: 200, body: 300 };
        let refusal = |stream: &str| {
            let (out, verdict, _) = run_with(stream.as_bytes(), 7, caps);
            (unstamped(&out), verdict)
        };
        let line = |target: usize| format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(target - 1));
        // The line may be a little longer than the target may be; the handler checks the target.
        assert_eq!(refusal(&line(100 + LINE_SLACK - 14)), (line(100 + LINE_SLACK - 14), Verdict::Forward));
        let too_long = Verdict::Refuse(Refusal::LineTooLong(100));
        assert_eq!(refusal(&format!("{GET}{}", line(100 + LINE_SLACK))), (GET.into(), too_long));
        // Header lines with their CRLFs: twice what `limits.rs` may count (values trimmed) is
        // held, for the whitespace around values; the handler judges the rest.
        let headers = |bytes: usize| format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "b".repeat(bytes - 5));
        assert_eq!(refusal(&headers(400)), (headers(400), Verdict::Forward));
        assert_eq!(refusal(&headers(401)), (String::new(), Verdict::Refuse(Refusal::HeadTooLarge(200))));
        // A body longer than --max-body is the route's to refuse (after 401, 404, 405), unless it
        // is too long for tiny_http to drain.
        let post = |length: usize| format!("POST / HTTP/1.1\r\nContent-Length: {length}\r\n\r\n");
        assert_eq!(refusal(&post(BODY_CEILING)), (post(BODY_CEILING), Verdict::Forward));
        let over = post(BODY_CEILING + 1);
        assert_eq!(refusal(&format!("{GET}{over}")), (GET.into(), Verdict::Refuse(Refusal::BodyTooLarge(300))));
        let huge = post(100_000_000_000);
        assert_eq!(refusal(&huge), (String::new(), Verdict::Refuse(Refusal::BodyTooLarge(300))));
        let roomy = Caps { body: BODY_CEILING * 2, ..caps };
        let refused = Verdict::Refuse(Refusal::BodyTooLarge(BODY_CEILING));
        assert_eq!(run_with(over.as_bytes(), 7, roomy).1, refused, "a --max-body past it is no way round");
    }

    /// A header nobody reads, its value in Latin-1 (obs-text), is dropped and the request goes
    /// on; a control character is still refused, and so is any such value of a header we read.
    #[test]
    fn a_latin_1_value_of_a_header_nobody_reads_is_dropped() {
        let head = b"GET /health HTTP/1.1\r\nUser-Agent: caf\xe9 \xff\r\nHost: h\r\n\r\n";
        for step in 1..=head.len() {
            let (out, refusal, _) = run(head, step);
            assert_eq!((unstamped(&out), refusal), ("GET /health HTTP/1.1\r\nHost: h\r\n\r\n".to_owned(), None));
        }
        for refused in [
            &b"GET / HTTP/1.1\r\nUser-Agent: caf\xe9\x01\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nAuthorization: \xe9\r\n\r\n",
        ] {
            assert_eq!(run(refused, 4).1, Some(Refusal::Malformed(Malformed::NotAscii)), "{refused:?}");
        }
    }

    /// Dropped lines count against the head's cap, as forwarded ones do; a value with what some
    /// parser takes for a line break is refused, not dropped.
    #[test]
    fn dropped_lines_count_and_line_breaks_beyond_ascii_are_refused() {
        let caps = Caps { headers: 100, ..CAPS };
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for _ in 0..10 {
            head.extend_from_slice(
                b"X-Pad: \xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\r\n",
            );
        }
        head.extend_from_slice(b"\r\n");
        assert_eq!(run_with(&head, 7, caps).1, Verdict::Refuse(Refusal::HeadTooLarge(100)));
        // Within the relay's room but past the cap itself: refused as the head forwarded would be.
        let four = [&b"GET / HTTP/1.1\r\n"[..], &head[16..16 + 4 * 29], b"\r\n"].concat();
        assert_eq!(run_with(&four, 7, caps).1, Verdict::Refuse(Refusal::HeadTooLarge(100)));
        let three = [&b"GET / HTTP/1.1\r\n"[..], &head[16..16 + 3 * 29], b"\r\n"].concat();
        assert_eq!(run_with(&three, 7, caps).1, Verdict::Forward);
        for value in [&b"a\x85Content-Length: 32"[..], b"a\xc2\x85b", b"a\xe2\x80\xa8b", b"a\xe2\x80\xa9b"] {
            let head = [&b"GET / HTTP/1.1\r\nX-A: "[..], value, b"\r\n\r\n"].concat();
            assert_eq!(run(&head, 3).1, Some(Refusal::Malformed(Malformed::NotAscii)), "{value:?}");
        }
        assert_eq!(run(b"GET / HTTP/1.1\r\nTE: \xe9\r\n\r\n", 3).1, Some(Refusal::Malformed(Malformed::NotAscii)));
    }
}
