//! Where each request starts in a client's byte stream, as tiny_http 0.12.0 frames it, and
//! whether a request line would reach its version check. Pure: bytes in, a verdict out; run by
//! a connection's `relay-in` thread on every read, before the bytes are forwarded.
//!
//! How tiny_http frames a connection (`client.rs` and `request.rs` of 0.12.0): a line ends at
//! CRLF only; the request line is trimmed and split on single spaces, its third word is the
//! version; header lines follow up to an empty one. Then any `Transfer-Encoding` means a chunked
//! body; otherwise the first `Content-Length` that `usize::from_str` accepts gives the body's
//! length, and anything else means no body. A body with a length is read whole, or drained when
//! the request is dropped, so the next request line starts right after it. A chunked body ends
//! wherever its reader stops (a handler may stop early), so after one the tracker no longer
//! knows where lines start, and from then on refuses the connection at any `HTTP/2.0` or
//! `HTTP/3.0` in the stream ([`State::Uncertain`]). Mistakes may only ever refuse too much.

/// The request lines that tiny_http answers with a 505 that never comes (it deadlocks).
const REFUSED_VERSIONS: [&[u8]; 2] = [b"HTTP/2.0", b"HTTP/3.0"];
/// A longer line is not kept: the connection is tracked as [`State::Uncertain`] from there on.
const LINE_CAP: usize = 64 << 10;
/// tiny_http reads a body of up to this many bytes itself before handing over the request.
const BUFFERED_BODY: usize = 1024;

/// What to do with the bytes just fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Forward them all.
    Forward,
    /// Forward only the first `forward` bytes (they end no line tiny_http would act on), then
    /// nothing more: a request line with a version tiny_http cannot answer is in the rest.
    Refuse { forward: usize },
}

/// Where the client's stream stands, for deciding what a silence means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    /// Between requests: nothing of the next one yet.
    Between,
    /// Inside a request line or its headers.
    InHead,
    /// Inside a body with a length; `buffered` when tiny_http reads it itself before handing
    /// over the request (so it answers nothing when the body stalls).
    InBody { buffered: bool },
    /// After a chunked body: nobody knows.
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
    Uncertain,
}

/// The framing facts of the head being read.
#[derive(Debug, Default)]
struct Head {
    chunked: bool,
    /// The first `Content-Length`, and whether it parsed.
    content_length: Option<Option<usize>>,
    /// The first `Expect`: whether it is `100-continue`.
    expects_continue: Option<bool>,
}

#[derive(Debug)]
pub(crate) struct Tracker {
    state: State,
    line: Vec<u8>,
    head: Head,
    /// The last bytes seen while uncertain, so a version split across reads is still found.
    tail: Vec<u8>,
}

impl Default for Tracker {
    fn default() -> Tracker {
        Tracker { state: State::Line { request_line: true }, line: Vec::new(), head: Head::default(), tail: Vec::new() }
    }
}

impl Tracker {
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Verdict {
        let mut at = 0;
        while at < bytes.len() {
            match self.state {
                State::Body { remaining, buffered } => {
                    let take = remaining.min(bytes.len() - at);
                    at += take;
                    self.state = match remaining - take {
                        0 => State::Line { request_line: true },
                        remaining => State::Body { remaining, buffered },
                    };
                }
                State::Uncertain => return self.scan(bytes, at),
                State::Line { request_line } => {
                    let byte = bytes[at];
                    let ends = byte == b'\n' && self.line.last() == Some(&b'\r');
                    self.line.push(byte);
                    if ends {
                        self.line.truncate(self.line.len() - 2);
                        if request_line && refused_request_line(&self.line) {
                            return Verdict::Refuse { forward: at };
                        }
                        self.end_line(request_line);
                    } else if self.line.len() > LINE_CAP {
                        // Unknowable from here; the line so far is scanned too.
                        let line = std::mem::take(&mut self.line);
                        self.state = State::Uncertain;
                        if self.scan(&line, 0) != Verdict::Forward {
                            return Verdict::Refuse { forward: at };
                        }
                    }
                    at += 1;
                }
            }
        }
        Verdict::Forward
    }

    pub(crate) fn position(&self) -> Position {
        match self.state {
            State::Line { request_line: true } if self.line.is_empty() => Position::Between,
            State::Line { .. } => Position::InHead,
            State::Body { buffered, .. } => Position::InBody { buffered },
            State::Uncertain => Position::Unknown,
        }
    }

    fn end_line(&mut self, request_line: bool) {
        let line = std::mem::take(&mut self.line);
        if request_line {
            self.state = State::Line { request_line: false };
        } else if line.is_empty() {
            self.state = self.end_head();
        } else {
            self.header(&line);
        }
        self.line = line;
        self.line.clear();
    }

    /// Notes what tiny_http's `new_request` looks at in one header line.
    fn header(&mut self, line: &[u8]) {
        let Some((name, value)) = std::str::from_utf8(line).ok().and_then(|l| l.trim().split_once(':')) else {
            return;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("Transfer-Encoding") {
            self.head.chunked = true;
        } else if name.eq_ignore_ascii_case("Content-Length") && self.head.content_length.is_none() {
            self.head.content_length = Some(value.parse().ok());
        } else if name.eq_ignore_ascii_case("Expect") && self.head.expects_continue.is_none() {
            self.head.expects_continue = Some(value.eq_ignore_ascii_case("100-continue"));
        }
    }

    fn end_head(&mut self) -> State {
        let head = std::mem::take(&mut self.head);
        if head.chunked {
            return State::Uncertain;
        }
        match head.content_length {
            Some(Some(length)) if length > 0 => State::Body {
                remaining: length,
                buffered: length <= BUFFERED_BODY && head.expects_continue != Some(true),
            },
            _ => State::Line { request_line: true },
        }
    }

    /// Looks for a refused version anywhere in `bytes[from..]`.
    fn scan(&mut self, bytes: &[u8], from: usize) -> Verdict {
        let keep = REFUSED_VERSIONS[0].len() - 1;
        for (at, &byte) in bytes.iter().enumerate().skip(from) {
            self.tail.push(byte);
            if REFUSED_VERSIONS.iter().any(|version| self.tail.ends_with(version)) {
                return Verdict::Refuse { forward: at };
            }
            if self.tail.len() > 2 * keep {
                self.tail.drain(..self.tail.len() - keep);
            }
        }
        Verdict::Forward
    }
}

/// Whether tiny_http would parse this request line (without its CRLF) with a version above 1.1.
fn refused_request_line(line: &[u8]) -> bool {
    let Ok(line) = std::str::from_utf8(line) else { return false };
    // tiny_http drops a line that is not ASCII before looking at it.
    line.is_ascii()
        && line.trim().split(' ').nth(2).is_some_and(|version| REFUSED_VERSIONS.contains(&version.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` in pieces of `step` bytes; returns the bytes forwarded and whether refused.
    fn run(stream: &[u8], step: usize) -> (usize, bool, Position) {
        let mut tracker = Tracker::default();
        let mut forwarded = 0;
        for piece in stream.chunks(step) {
            match tracker.feed(piece) {
                Verdict::Forward => forwarded += piece.len(),
                Verdict::Refuse { forward } => return (forwarded + forward, true, tracker.position()),
            }
        }
        (forwarded, false, tracker.position())
    }

    /// Every way of cutting `stream` into reads gives the same verdict; a refusal never forwards
    /// the line end (or the whole version) that would let tiny_http act on it.
    #[track_caller]
    fn check(stream: &str, refused: bool, position: Position) {
        for step in 1..=stream.len().max(1) {
            let (forwarded, was_refused, at) = run(stream.as_bytes(), step);
            assert_eq!(was_refused, refused, "{stream:?} in pieces of {step}");
            if refused {
                let sent = &stream[..forwarded];
                assert!(!sent.contains("HTTP/2.0\r\n") && !sent.contains("HTTP/3.0\r\n"), "{sent:?}");
            } else {
                assert_eq!(forwarded, stream.len());
                assert_eq!(at, position, "{stream:?} in pieces of {step}");
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
    }

    #[test]
    fn what_tiny_http_answers_itself_passes() {
        check(GET, false, Position::Between);
        check("GET / HTTP/1.0\r\n\r\n", false, Position::Between);
        check("GET / HTTP/0.9\r\n\r\n", false, Position::Between);
        check("GET / HTTP/1.2\r\n\r\n", false, Position::Between);
        check("GET /  HTTP/2.0\r\n\r\n", false, Position::Between); // two spaces: no version word
        check("GET / HTTP/2\r\n\r\n", false, Position::Between);
        check("GET / http/2.0\r\n\r\n", false, Position::Between);
        check("GET / HTTP/2.0\n\n", false, Position::InHead); // no CRLF: not a line yet
        check("GET / HTTP/1.1\r\nX-A: HTTP/2.0\r\n\r\n", false, Position::Between);
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
        check("POST / HTTP/1.1\r\nContent-Le", false, Position::InHead);
    }

    #[test]
    fn after_a_chunked_body_any_refused_version_is_refused() {
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        check(&format!("{chunked}5\r\nhello\r\n0\r\n\r\n{GET}"), false, Position::Unknown);
        check(&format!("{chunked}10\r\nxxGET / HTTP/2.0\r\n"), true, Position::Unknown);
        check(&format!("{chunked}0\r\n\r\n{GET}GET /HTTP/3.0"), true, Position::Unknown);
    }

    #[test]
    fn a_line_too_long_to_keep_is_scanned() {
        let long = format!("GET /{} HTTP/2.0\r\n", "a".repeat(LINE_CAP));
        assert!(run(long.as_bytes(), 4096).1);
        let long = format!("GET /{} HTTP/1.1\r\n\r\n{GET}", "a".repeat(LINE_CAP));
        assert_eq!(run(long.as_bytes(), 4096), (long.len(), false, Position::Unknown));
    }
}
