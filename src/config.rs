//! The command line: flags, defaults and durations. Pure; runs once on the main thread.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::app::Pacing;
use crate::log;

pub const USAGE: &str = "\
ingestd: feeds ingestion requests to a rate-limited external API, one batch per interval.

Usage: ingestd [OPTIONS]
       ingestd health [--addr HOST:PORT] [--timeout DURATION]

Options:
  --addr HOST:PORT         where to listen [default: 127.0.0.1:8000, or 0.0.0.0:$PORT if PORT is set]
  --interval DURATION      least time between two batch releases [default: 5s]
  --batch-size N           ids per batch [default: 3]
  --fetch-delay DURATION   simulated external API time per id [default: 100ms]
  --threads N              HTTP handler threads [default: 8 per CPU, at least 32]
  --max-body BYTES         largest accepted request body [default: 1048576]
  --data-dir DIR           keep the queue in a journal in DIR, so nothing acknowledged is lost
                           [default: none: in memory only]
  --retain DURATION        how long completed ingestions stay visible [default: 7d]
  --shutdown-timeout DURATION
                           how long a stop waits for the batch in flight [default: 30s]
  --max-ids N              most ids in one request [default: 100000]
  --max-queued-ids N       most ids waiting in the queue; more get 503 [default: 10000000]
  --max-url BYTES          longest request URL [default: 8192]
  --max-headers BYTES      most request header bytes [default: 16384]
  --idle-timeout DURATION  longest silence in a request or between requests [default: 30s]
  --token TOKEN            require 'Authorization: Bearer TOKEN' on all routes but /health
                           [default: $INGESTD_TOKEN if set, else no token]
  --log-format FORMAT      human, or json (JSON lines plus an access record per request) [default: human]
  -h, --help               print this help
  -V, --version            print the name, version and git commit

`ingestd health` asks a running ingestd for GET /health and exits 0 if it answers 200, else 1
(for a container's health check). --addr: where it listens [default: 127.0.0.1:8000, or
127.0.0.1:$PORT if PORT is set]; --timeout: how long to wait [default: 5s].

DURATION is a number and a unit: 200ms, 5s, 1.5s, 10m, 2h, 7d.
Prints `listening on http://HOST:PORT` when ready; logs releases and completions to stderr.
SIGINT or SIGTERM stops it: new requests get 503, the batch in flight finishes, then it exits 0.";

/// Everything the service needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub addr: String,
    pub pacing: Pacing,
    pub fetch_delay: Duration,
    pub threads: usize,
    pub max_body: usize,
    pub data_dir: Option<PathBuf>,
    pub retain: Duration,
    pub shutdown_timeout: Duration,
    pub max_ids: usize,
    pub max_queued_ids: usize,
    pub max_url: usize,
    pub max_header_bytes: usize,
    pub idle_timeout: Duration,
    /// From `--token`; `main` falls back to `INGESTD_TOKEN`.
    pub token: Option<String>,
    pub log_format: log::Format,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Box<Config>),
    Help,
    Version,
    /// `ingestd health`: probe a running instance.
    Health(Probe),
}

/// Where `ingestd health` asks, and how long it waits for each step (connect, send, answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub addr: String,
    pub timeout: Duration,
}

/// What `--version` prints: the name, the version and, when the build knew it, the git commit.
pub fn version() -> String {
    let name = env!("CARGO_PKG_NAME");
    let version = env!("CARGO_PKG_VERSION");
    match option_env!("INGESTD_GIT_COMMIT") {
        Some(commit) => format!("{name} {version} (commit {commit})"),
        None => format!("{name} {version}"),
    }
}

/// A command line we cannot run with. The message names the flag and what it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

impl From<lexopt::Error> for UsageError {
    fn from(e: lexopt::Error) -> Self {
        UsageError(e.to_string())
    }
}

/// Handler threads mostly wait (on a slow client, or on the journal's fsync in durable mode),
/// and a waiting thread costs little, so there are many more than CPUs.
fn default_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, usize::from);
    (cpus * 8).max(32)
}

/// Parses the arguments (without the program name). `port` is the `PORT` environment variable.
pub fn parse(args: impl IntoIterator<Item = OsString>, port: Option<OsString>) -> Result<Command, UsageError> {
    use lexopt::prelude::*;

    let mut args = args.into_iter().peekable();
    if args.peek().is_some_and(|first| first == "health") {
        args.next();
        return health(args, port);
    }
    let mut addr = None;
    let mut config = Config {
        addr: String::new(),
        pacing: Pacing { interval: Duration::from_secs(5), batch_size: 3 },
        fetch_delay: Duration::from_millis(100),
        threads: default_threads(),
        max_body: 1 << 20,
        data_dir: None,
        retain: Duration::from_secs(7 * 86_400),
        shutdown_timeout: Duration::from_secs(30),
        max_ids: 100_000,
        max_queued_ids: 10_000_000,
        max_url: 8 << 10,
        max_header_bytes: 16 << 10,
        idle_timeout: Duration::from_secs(30),
        token: None,
        log_format: log::Format::Human,
    };
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("addr") => addr = Some(text(parser.value()?, "--addr")?),
            Long("interval") => {
                config.pacing.interval = duration(&text(parser.value()?, "--interval")?, "--interval")?;
                if config.pacing.interval.is_zero() {
                    return Err(UsageError("--interval must be more than 0".into()));
                }
            }
            Long("batch-size") => config.pacing.batch_size = count(parser.value()?, "--batch-size")?,
            Long("fetch-delay") => {
                config.fetch_delay = duration(&text(parser.value()?, "--fetch-delay")?, "--fetch-delay")?
            }
            Long("threads") => config.threads = count(parser.value()?, "--threads")?,
            Long("max-body") => config.max_body = count(parser.value()?, "--max-body")?,
            Long("data-dir") => config.data_dir = Some(PathBuf::from(parser.value()?)),
            Long("retain") => config.retain = duration(&text(parser.value()?, "--retain")?, "--retain")?,
            Long("shutdown-timeout") => {
                config.shutdown_timeout =
                    duration(&text(parser.value()?, "--shutdown-timeout")?, "--shutdown-timeout")?;
            }
            Long("max-ids") => config.max_ids = count(parser.value()?, "--max-ids")?,
            Long("max-queued-ids") => config.max_queued_ids = count(parser.value()?, "--max-queued-ids")?,
            Long("max-url") => config.max_url = count(parser.value()?, "--max-url")?,
            Long("max-headers") => config.max_header_bytes = count(parser.value()?, "--max-headers")?,
            Long("idle-timeout") => {
                config.idle_timeout = duration(&text(parser.value()?, "--idle-timeout")?, "--idle-timeout")?;
                if config.idle_timeout < Duration::from_millis(10) {
                    return Err(UsageError("--idle-timeout must be at least 10ms".into()));
                }
            }
            Long("token") => {
                let token = text(parser.value()?, "--token")?;
                if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(UsageError("--token takes printable ASCII without spaces".into()));
                }
                config.token = Some(token);
            }
            Long("log-format") => config.log_format = log_format(text(parser.value()?, "--log-format")?)?,
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            _ => return Err(arg.unexpected().into()),
        }
    }
    config.addr = listen_addr(addr, port)?;
    Ok(Command::Run(Box::new(config)))
}

/// Where to listen: `--addr`, else all interfaces on `PORT` (how platforms that set it expect
/// it), else loopback only.
fn listen_addr(addr: Option<String>, port: Option<OsString>) -> Result<String, UsageError> {
    Ok(match (addr, port) {
        (Some(addr), _) => addr,
        (None, Some(port)) => {
            let port = port.into_string().ok().and_then(|p| p.parse::<u16>().ok()).ok_or_else(|| {
                UsageError("the PORT environment variable must be a port number from 0 to 65535".into())
            })?;
            format!("0.0.0.0:{port}")
        }
        (None, None) => "127.0.0.1:8000".to_owned(),
    })
}

/// The flags of `ingestd health`.
fn health(args: impl IntoIterator<Item = OsString>, port: Option<OsString>) -> Result<Command, UsageError> {
    use lexopt::prelude::*;

    let mut probe = Probe { addr: String::new(), timeout: Duration::from_secs(5) };
    let mut addr = None;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("addr") => addr = Some(text(parser.value()?, "--addr")?),
            Long("timeout") => {
                probe.timeout = duration(&text(parser.value()?, "--timeout")?, "--timeout")?;
                if probe.timeout.is_zero() {
                    return Err(UsageError("--timeout must be more than 0".into()));
                }
            }
            Short('h') | Long("help") => return Ok(Command::Help),
            _ => return Err(arg.unexpected().into()),
        }
    }
    // Where `ingestd` with the same environment listens; all interfaces are reached on loopback.
    let listen = listen_addr(addr, port)?;
    probe.addr = match listen.strip_prefix("0.0.0.0:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => listen,
    };
    Ok(Command::Health(probe))
}

fn text(value: OsString, flag: &str) -> Result<String, UsageError> {
    value.into_string().map_err(|v| UsageError(format!("{flag} takes text, not {v:?}")))
}

fn log_format(value: String) -> Result<log::Format, UsageError> {
    match value.as_str() {
        "human" => Ok(log::Format::Human),
        "json" => Ok(log::Format::Json),
        _ => Err(UsageError(format!("--log-format takes human or json, not '{value}'"))),
    }
}

fn count(value: OsString, flag: &str) -> Result<usize, UsageError> {
    let value = text(value, flag)?;
    value
        .parse::<usize>()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| UsageError(format!("{flag} takes a whole number of at least 1, not '{value}'")))
}

/// Parses `200ms`, `5s`, `1.5s`, `10m`, `2h` or `7d`.
pub fn duration(text: &str, flag: &str) -> Result<Duration, UsageError> {
    let bad =
        |why: &str| UsageError(format!("{flag} takes a duration like 200ms, 5s, 1.5s, 10m, 2h or 7d; '{text}' {why}"));
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_nanos: u128 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        "d" => 86_400 * 1_000_000_000,
        "" => return Err(bad("has no unit")),
        _ => return Err(bad("has an unknown unit")),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("is not a number with a unit"));
    }
    let whole: u128 = whole.parse().map_err(|_| bad("is too long"))?;
    let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(|| bad("is too long"))?;
    let mut scale = unit_nanos;
    for digit in fraction.bytes().take(18) {
        scale /= 10;
        nanos += u128::from(digit - b'0') * scale;
    }
    let nanos = u64::try_from(nanos).map_err(|_| bad("is too long"))?;
    Ok(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], port: Option<&str>) -> Result<Command, UsageError> {
        parse(args.iter().map(OsString::from), port.map(OsString::from))
    }

    fn config(args: &[&str]) -> Config {
        match run(args, None).unwrap() {
            Command::Run(config) => *config,
            other => panic!("expected a config, got {other:?}"),
        }
    }

    #[track_caller]
    fn check_duration(text: &str, expected: Duration) {
        assert_eq!(duration(text, "--interval"), Ok(expected), "{text}");
    }

    #[test]
    fn durations() {
        check_duration("200ms", Duration::from_millis(200));
        check_duration("5s", Duration::from_secs(5));
        check_duration("1.5s", Duration::from_millis(1500));
        check_duration("0.001s", Duration::from_millis(1));
        check_duration("10m", Duration::from_secs(600));
        check_duration("2h", Duration::from_secs(7200));
        check_duration("7d", Duration::from_secs(7 * 86_400));
        check_duration("0s", Duration::ZERO);
        for bad in ["", "5", "s", "5x", "-1s", "1.2.3s", ".5s", "5 s", "1e3s", "99999999999999999999d"] {
            let error = duration(bad, "--interval").unwrap_err().to_string();
            assert!(error.starts_with("--interval takes a duration like"), "{bad}: {error}");
        }
    }

    #[test]
    fn defaults() {
        let c = config(&[]);
        assert_eq!(c.addr, "127.0.0.1:8000");
        assert_eq!(c.pacing, Pacing { interval: Duration::from_secs(5), batch_size: 3 });
        assert_eq!(c.fetch_delay, Duration::from_millis(100));
        assert!(c.threads >= 8);
    }

    #[test]
    fn flags() {
        let c = config(&[
            "--addr",
            "127.0.0.1:0",
            "--interval=250ms",
            "--batch-size",
            "4",
            "--fetch-delay",
            "0s",
            "--threads",
            "2",
        ]);
        assert_eq!(c.addr, "127.0.0.1:0");
        assert_eq!(c.pacing, Pacing { interval: Duration::from_millis(250), batch_size: 4 });
        assert_eq!((c.fetch_delay, c.threads), (Duration::ZERO, 2));
        let c = config(&["--data-dir", "/tmp/x", "--retain", "1h", "--shutdown-timeout", "2s"]);
        assert_eq!(c.data_dir, Some(PathBuf::from("/tmp/x")));
        assert_eq!((c.retain, c.shutdown_timeout), (Duration::from_secs(3600), Duration::from_secs(2)));
        assert_eq!(config(&[]).data_dir, None);
        assert_eq!(config(&["--log-format", "json"]).log_format, log::Format::Json);
        assert_eq!(config(&[]).log_format, log::Format::Human);
        assert_eq!(run(&["--help"], None), Ok(Command::Help));
        assert_eq!(run(&["-h"], None), Ok(Command::Help));
    }

    #[test]
    fn version_and_health() {
        assert_eq!(run(&["--version"], None), Ok(Command::Version));
        assert_eq!(run(&["--interval", "1s", "-V"], None), Ok(Command::Version));
        assert!(version().starts_with(&format!("ingestd {}", env!("CARGO_PKG_VERSION"))));
        let probe = |args: &[&str], port: Option<&str>| match run(args, port) {
            Ok(Command::Health(probe)) => probe,
            other => panic!("expected a probe, got {other:?}"),
        };
        let default = probe(&["health"], None);
        assert_eq!((default.addr.as_str(), default.timeout), ("127.0.0.1:8000", Duration::from_secs(5)));
        assert_eq!(probe(&["health"], Some("9000")).addr, "127.0.0.1:9000");
        let given = probe(&["health", "--addr", "[::1]:1", "--timeout", "1s"], Some("9000"));
        assert_eq!((given.addr.as_str(), given.timeout), ("[::1]:1", Duration::from_secs(1)));
        assert!(run(&["health", "--interval", "1s"], None).is_err());
        // `health` is a subcommand only in first place.
        assert!(run(&["--addr", "127.0.0.1:1", "health"], None).is_err());
    }

    #[test]
    fn port_from_the_environment() {
        let Command::Run(c) = run(&[], Some("9000")).unwrap() else { panic!() };
        assert_eq!(c.addr, "0.0.0.0:9000");
        let Command::Run(c) = run(&["--addr", "127.0.0.1:1"], Some("9000")).unwrap() else { panic!() };
        assert_eq!(c.addr, "127.0.0.1:1");
        assert!(run(&[], Some("http")).is_err());
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        let message = |args: &[&str]| run(args, None).unwrap_err().to_string();
        assert_eq!(message(&["--batch-size", "0"]), "--batch-size takes a whole number of at least 1, not '0'");
        assert_eq!(message(&["--interval", "0s"]), "--interval must be more than 0");
        assert_eq!(message(&["--log-format", "xml"]), "--log-format takes human or json, not 'xml'");
        assert!(message(&["--bogus"]).contains("--bogus"));
        assert!(message(&["--interval"]).contains("--interval"));
        assert!(message(&["stray"]).contains("stray"));
    }
}
