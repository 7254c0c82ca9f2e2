//! One-line, timestamped log records on stderr, as text or as JSON lines. Never called under
//! the queue lock.
//!
//! Callers format a record and hand it over; the `log-writer` thread alone writes them, in the
//! order they came. A `write` to a busy file or pipe can block its caller for as long as the log
//! reader takes (or the kernel lets ordinary threads go first: up to 276 ms measured for the
//! real-time pacer under `make bench`), and a reader that stops reading would block it for
//! good: no thread that answers requests or paces releases may wait for one. The queue is
//! bounded (`QUEUED_MOST`, half of it for access records): past it, a record is dropped and
//! counted (`dropped`, in `/metrics`), never waited for. [`flush`] and [`fatal`] wait for the
//! writer at exit, for `FLUSH_WAIT` at most.

use std::fmt::{Arguments, Write as _};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

/// How records are written: `human` (`<timestamp> <message>`) or `json` (one object per line,
/// plus an access record per HTTP request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Human,
    Json,
}

/// Set once by `main` before any thread starts; a flag rather than a handle passed to every
/// thread, because every log call in the process follows it.
static JSON: AtomicBool = AtomicBool::new(false);

pub fn set_format(format: Format) {
    JSON.store(format == Format::Json, Ordering::Relaxed);
    // Started here, from `main`, so that it inherits ordinary scheduling: started lazily by the
    // pacer's first record, it ran SCHED_FIFO beside the pacer and the worker.
    writer();
}

pub(crate) fn format() -> Format {
    if JSON.load(Ordering::Relaxed) {
        Format::Json
    } else {
        Format::Human
    }
}

/// The timestamp every record starts with (RFC 3339, UTC).
pub(crate) fn timestamp() -> String {
    crate::rfc3339::format(SystemTime::now())
}

pub fn info(message: Arguments<'_>) {
    info_with(message, &[]);
}

/// Like [`info`], plus numeric fields that only the JSON format writes (as `"name": value`),
/// for tools that need exact figures rather than the rounded ones in the message.
pub(crate) fn info_with(message: Arguments<'_>, fields: &[(&str, u64)]) {
    later(record(format(), &timestamp(), Level::Info, message, fields));
}

/// Something an operator should look at; the record says `warning: ` first, and in JSON its
/// level is `warning`.
pub fn warn(message: Arguments<'_>) {
    later(record(format(), &timestamp(), Level::Warning, message, &[]));
}

/// An access record for `log-writer`: dropped (counted) once half of [`QUEUED_MOST`] wait, so
/// that a flood of them never crowds out the core's records.
pub(crate) fn access(line: String) {
    if writer().len() >= QUEUED_MOST / 2 {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    later(line);
}

/// Hands a formatted record to `log-writer`; drops it (counted) if `QUEUED_MOST` wait already.
fn later(line: String) {
    match writer().try_send(Later::Line(line)) {
        Ok(()) => {}
        Err(crossbeam_channel::TrySendError::Full(_)) => {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        Err(crossbeam_channel::TrySendError::Disconnected(Later::Line(line))) => write_line(&line),
        Err(crossbeam_channel::TrySendError::Disconnected(Later::Flush(_))) => {}
    }
}

/// Records waiting for `log-writer` at most: a few seconds of a busy server's access records, a
/// few megabytes. Past it the log reader cannot keep up, and records are dropped.
pub(crate) const QUEUED_MOST: usize = 16_384;

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Records dropped because `log-writer` had [`QUEUED_MOST`] waiting.
pub(crate) fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Returns once every record handed over before the call is written (at exit), or
/// after `FLUSH_WAIT`: a log reader that stopped reading must not keep the process from
/// exiting.
pub fn flush() {
    flush_by(Instant::now() + FLUSH_WAIT);
}

fn flush_by(deadline: Instant) {
    let (done, written) = crossbeam_channel::bounded(1);
    if writer().send_deadline(Later::Flush(done), deadline).is_ok() {
        let _ = written.recv_deadline(deadline);
    }
}

/// The longest [`flush`] waits for the log reader.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

enum Later {
    Line(String),
    Flush(crossbeam_channel::Sender<()>),
}

/// The `log-writer` thread's queue, started on first use; records are written in the order
/// they were queued.
fn writer() -> &'static crossbeam_channel::Sender<Later> {
    static WRITER: OnceLock<crossbeam_channel::Sender<Later>> = OnceLock::new();
    WRITER.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::bounded::<Later>(QUEUED_MOST);
        let started = std::thread::Builder::new().name("log-writer".into()).spawn(move || {
            for entry in rx {
                match entry {
                    Later::Line(line) => write_line(&line),
                    Later::Flush(done) => drop(done.send(())),
                }
            }
        });
        // Without the thread the receiver is gone, and every record is written in place.
        drop(started);
        tx
    })
}

/// Why the service stops, as the last record: plain `ingestd: …` for a person, a JSON record at
/// level `error` for a log pipeline. Written before it returns, or after `FLUSH_WAIT`.
pub fn fatal(message: Arguments<'_>) {
    let text = format!("ingestd: {message}");
    let line = match format() {
        Format::Human => text,
        Format::Json => json_record(&timestamp(), "error", &text, &[]),
    };
    // It waits for room as the flush does, within the same `FLUSH_WAIT`: a full queue must not
    // lose the reason for the exit.
    let deadline = Instant::now() + FLUSH_WAIT;
    match writer().send_deadline(Later::Line(line), deadline) {
        Err(crossbeam_channel::SendTimeoutError::Disconnected(Later::Line(line))) => write_line(&line),
        Ok(()) | Err(_) => flush_by(deadline),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Info,
    Warning,
}

fn record(format: Format, timestamp: &str, level: Level, message: Arguments<'_>, fields: &[(&str, u64)]) -> String {
    // A warning's text says so first in both formats, so a person and a `grep` see it alike.
    let says = match level {
        Level::Info => "",
        Level::Warning => "warning: ",
    };
    match format {
        Format::Human => format!("{timestamp} {says}{message}"),
        Format::Json => {
            let level = match level {
                Level::Info => "info",
                Level::Warning => "warning",
            };
            json_record(timestamp, level, &format!("{says}{message}"), fields)
        }
    }
}

fn json_record(timestamp: &str, level: &str, text: &str, fields: &[(&str, u64)]) -> String {
    let mut line = format!(r#"{{"ts":"{timestamp}","level":"{level}","msg":"{}""#, escape(text));
    for (name, value) in fields {
        let _ = write!(line, r#","{}":{value}"#, escape(name));
    }
    line.push('}');
    line
}

/// Writes one already formatted record, whole, with one `write` under a lock of ours (a leaf):
/// `log-writer` is its one caller but when that thread could not start. The kernel keeps a
/// `write` whole only up to `PIPE_BUF` (4 KiB) on a pipe; records written in parts by two
/// threads come out spliced into each other.
fn write_line(line: &str) {
    static WRITING: Mutex<()> = Mutex::new(());
    let mut record = Vec::with_capacity(line.len() + 1);
    record.extend_from_slice(line.as_bytes());
    record.push(b'\n');
    let _writing = WRITING.lock();
    // A closed stderr must not take the service down; the record is lost, nothing else.
    let _ = match stderr() {
        Some(mut file) => file.write_all(&record),
        None => std::io::stderr().write_all(&record),
    };
}

/// Our own handle on file descriptor 2 (`None` if it cannot be duplicated).
fn stderr() -> Option<&'static File> {
    static STDERR: OnceLock<Option<File>> = OnceLock::new();
    STDERR.get_or_init(|| std::io::stderr().as_fd().try_clone_to_owned().ok().map(File::from)).as_ref()
}

/// Escapes text for a JSON string, so the core can write JSON lines without a JSON library.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// At most one record per period for an event that may come thousands of times a second
/// (a flood of refused connections), counting those held back.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    pub(crate) const fn new(every: Duration) -> Throttle {
        Throttle { every, last: None, held_back: 0 }
    }

    /// For an event at `now`: `Some(events held back since the last record)` if this one is to
    /// be logged, else `None` (and it is counted).
    pub(crate) fn admit(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|last| now < last + self.every) {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{escape, record, Format, Level, Throttle};

    #[test]
    fn a_throttle_logs_once_a_period_and_counts_the_rest() {
        let (start, ms) = (Instant::now(), Duration::from_millis);
        let mut throttle = Throttle::new(ms(1000));
        let admitted: Vec<Option<u64>> =
            [0, 1, 500, 999, 1000, 1000, 2500, 2600].map(|at| throttle.admit(start + ms(at))).into();
        assert_eq!(admitted, [Some(0), None, None, None, Some(3), None, Some(1), None]);
    }

    #[test]
    fn escapes_what_json_requires() {
        assert_eq!(escape(r#"batch "a" \ b"#), r#"batch \"a\" \\ b"#);
        assert_eq!(escape("a\nb\tc\u{1}"), "a\\nb\\u0009c\\u0001");
        assert_eq!(escape("late by 1.2µs"), "late by 1.2µs");
    }

    #[test]
    fn fields_go_only_into_json() {
        let fields = [("late_ns", 1500), ("due_us", 7)];
        assert_eq!(record(Format::Human, "T", Level::Info, format_args!("released a"), &fields), "T released a");
        let json = record(Format::Json, "T", Level::Info, format_args!("released \"a\""), &fields);
        assert_eq!(json, r#"{"ts":"T","level":"info","msg":"released \"a\"","late_ns":1500,"due_us":7}"#);
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["late_ns"], 1500);
    }

    #[test]
    fn a_warning_is_a_warning_in_json() {
        let json = record(Format::Json, "T", Level::Warning, format_args!("the disk is full"), &[]);
        assert_eq!(json, r#"{"ts":"T","level":"warning","msg":"warning: the disk is full"}"#);
        assert_eq!(record(Format::Human, "T", Level::Warning, format_args!("x"), &[]), "T warning: x");
        // Only the level makes a warning: a message that happens to start so is not one.
        let json = record(Format::Json, "T", Level::Info, format_args!("warning: a word"), &[]);
        assert!(json.contains(r#""level":"info""#), "{json}");
    }
}
