//! The command line: flags, defaults and durations. Pure; runs once on the main thread.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::app::Pacing;
use crate::http::limits::BODY_CEILING;
use crate::log;
use crate::upstream::{Header, Method, Target};

/// Every default, once: the flags start from these, and so do `Limits::default()` (`http/limits.rs`)
/// and `Storage::default()` (`app.rs`). [`USAGE`] states them too; a test keeps it in step.
pub(crate) mod defaults {
    use std::time::Duration;

    /// Without `--addr` and without `PORT`.
    pub(crate) const ADDR: &str = "127.0.0.1:8000";
    pub(crate) const INTERVAL: Duration = Duration::from_secs(5);
    pub(crate) const BATCH_SIZE: usize = 3;
    pub(crate) const FETCH_DELAY: Duration = Duration::from_millis(100);
    pub(crate) const MAX_BODY: usize = 1 << 20;
    pub(crate) const RETAIN: Duration = Duration::from_secs(7 * 86_400);
    pub(crate) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
    pub(crate) const MAX_IDS: usize = 100_000;
    pub(crate) const MAX_QUEUED_IDS: usize = 10_000_000;
    pub(crate) const MAX_URL: usize = 8 << 10;
    pub(crate) const MAX_HEADER_BYTES: usize = 16 << 10;
    pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
    pub(crate) const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);
    /// `--retry-min-backoff` defaults to the interval (or `--retry-max-backoff`, if shorter).
    pub(crate) const RETRY_MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);
    pub(crate) const MAX_ATTEMPTS: u8 = 5;
    /// How long `ingestd health` waits for an answer.
    pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

    /// Handler threads mostly wait (on a slow client, or on the journal's fsync in durable
    /// mode), and a waiting thread costs little, so there are many more than CPUs.
    pub(crate) fn threads() -> usize {
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        (cpus * 8).max(32)
    }
}

pub const USAGE: &str = "\
ingestd: feeds ingestion requests to a rate-limited external API, one batch per interval.

Usage: ingestd [OPTIONS]
       ingestd health [--addr HOST:PORT] [--timeout DURATION]

Options:
  --addr HOST:PORT         where to listen [default: 127.0.0.1:8000, or 0.0.0.0:$PORT if PORT is set]
  --interval DURATION      least time between two batch releases [default: 5s]
  --batch-size N           ids per batch [default: 3]
  --fetch-delay DURATION   simulated external API time per id [default: 100ms]
  --threads N              HTTP handler threads, at most 4096 [default: 8 per CPU, at least 32]
  --max-body BYTES         largest accepted request body, at most 16 MiB [default: 1048576]
  --data-dir DIR           keep the queue in a journal in DIR, so nothing acknowledged is lost
                           [default: none: in memory only]
  --retain DURATION        how long completed ingestions stay visible [default: 7d]
  --shutdown-timeout DURATION
                           how long a stop waits for the batch in flight [default: 30s]
  --max-ids N              most ids in one request, at most --max-queued-ids [default: 100000]
  --max-queued-ids N       most ids accepted but not yet delivered or failed; more get 503
                           [default: 10000000]
  --max-url BYTES          longest request URL [default: 8192]
  --max-headers BYTES      most request header bytes [default: 16384]
  --idle-timeout DURATION  longest silence between requests, and the time a client has to send
                           a head or a whole body, or to take each 16 KiB of an answer
                           [default: 30s]
  --token TOKEN            require 'Authorization: Bearer TOKEN' on all routes but /health and
                           the static pages (/, /docs, /openapi.json), which hold no data
                           [default: $INGESTD_TOKEN if set, else no token]
  --log-format FORMAT      human, or json (JSON lines plus an access record per request) [default: human]
  --upstream URL           deliver each id with an HTTP call to URL (http or https), where {id}
                           (in the path or query) is replaced by the id
                           [default: none: a simulated API, see --fetch-delay]
  --upstream-method METHOD GET, or POST with the body {\"id\": <id>} as JSON [default: GET]
  --upstream-header 'NAME: VALUE'
                           send this header with every call; repeatable. Also read from
                           $INGESTD_UPSTREAM_HEADERS, one per line, to keep secrets out of ps
  --upstream-timeout DURATION
                           longest one call may take, as a whole [default: 10s]
  --upstream-ca FILE       trust the PEM certificates in FILE too (a private CA)
                           [default: the bundled Mozilla roots only]
  --retry-min-backoff DURATION
                           wait before a failed batch's first retry
                           [default: the interval, or --retry-max-backoff if shorter]
  --retry-max-backoff DURATION
                           the wait doubles with each retry, up to this [default: 5m]
  --max-attempts N         releases of a batch (1 to 255) before its undelivered ids fail [default: 5]
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
    /// From `--token`, else `INGESTD_TOKEN`.
    pub token: Option<String>,
    pub log_format: log::Format,
    /// `--upstream` and its flags; `None`: the simulated API.
    pub upstream: Option<Target>,
    pub retry: Retry,
}

/// When a batch with undelivered ids is released again, and when it gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// The wait before the first retry.
    pub min_backoff: Duration,
    /// The wait doubles with each retry, up to this.
    pub max_backoff: Duration,
    /// Releases of a batch (the first one included) before its undelivered ids fail for good.
    pub max_attempts: u8,
}

impl Retry {
    /// The policy without retry flags, for this interval.
    pub(crate) fn default_for(interval: Duration) -> Retry {
        let max_backoff = defaults::RETRY_MAX_BACKOFF;
        Retry { min_backoff: interval.min(max_backoff), max_backoff, max_attempts: defaults::MAX_ATTEMPTS }
    }

    /// The wait after a batch's `attempts`-th release failed (from 1): `min_backoff` doubled
    /// `attempts - 1` times, at most `max_backoff`.
    pub(crate) fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(31);
        self.min_backoff.saturating_mul(1 << doublings).min(self.max_backoff)
    }
}

/// The environment variables the command line reads.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `PORT`: listen on `0.0.0.0:PORT` unless `--addr` is given.
    pub port: Option<OsString>,
    /// `INGESTD_UPSTREAM_HEADERS`: `--upstream-header` lines, before the flags' (a flag's header
    /// replaces one of the same name from here).
    pub upstream_headers: Option<OsString>,
    /// `INGESTD_TOKEN`: the token, unless `--token` gives one; empty is none.
    pub token: Option<OsString>,
}

impl Env {
    /// Reads the process's environment.
    pub fn from_process() -> Env {
        Env {
            port: std::env::var_os("PORT"),
            upstream_headers: std::env::var_os(UPSTREAM_HEADERS_VAR),
            token: std::env::var_os(TOKEN_VAR),
        }
    }
}

const UPSTREAM_HEADERS_VAR: &str = "INGESTD_UPSTREAM_HEADERS";
const TOKEN_VAR: &str = "INGESTD_TOKEN";

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
pub struct UsageError(pub(crate) String);

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

/// The flags of `--upstream` and retries, gathered while parsing and checked at the end.
#[derive(Default)]
struct UpstreamFlags {
    url: Option<String>,
    method: Option<Method>,
    headers: Vec<Header>,
    timeout: Option<Duration>,
    ca_file: Option<PathBuf>,
    min_backoff: Option<Duration>,
    max_backoff: Option<Duration>,
    max_attempts: Option<u8>,
    /// `--fetch-delay` was given: it is for the simulated API only.
    fetch_delay: bool,
}

/// Parses the arguments (without the program name) with the environment's variables.
pub fn parse_with(args: impl IntoIterator<Item = OsString>, env: Env) -> Result<Command, UsageError> {
    use lexopt::prelude::*;
    let port = env.port;

    let mut args = args.into_iter().peekable();
    if args.peek().is_some_and(|first| first == "health") {
        args.next();
        return health(args, port);
    }
    let mut addr = None;
    let mut config = Config {
        addr: String::new(),
        pacing: Pacing { interval: defaults::INTERVAL, batch_size: defaults::BATCH_SIZE },
        fetch_delay: defaults::FETCH_DELAY,
        threads: defaults::threads(),
        max_body: defaults::MAX_BODY,
        data_dir: None,
        retain: defaults::RETAIN,
        shutdown_timeout: defaults::SHUTDOWN_TIMEOUT,
        max_ids: defaults::MAX_IDS,
        max_queued_ids: defaults::MAX_QUEUED_IDS,
        max_url: defaults::MAX_URL,
        max_header_bytes: defaults::MAX_HEADER_BYTES,
        idle_timeout: defaults::IDLE_TIMEOUT,
        token: None,
        log_format: log::Format::Human,
        upstream: None,
        retry: Retry {
            min_backoff: defaults::INTERVAL,
            max_backoff: defaults::RETRY_MAX_BACKOFF,
            max_attempts: defaults::MAX_ATTEMPTS,
        },
    };
    let mut up = UpstreamFlags::default();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("addr") => addr = Some(text(value_of(&mut parser, "--addr")?, "--addr")?),
            Long("interval") => {
                config.pacing.interval =
                    duration(&text(value_of(&mut parser, "--interval")?, "--interval")?, "--interval")?;
                if config.pacing.interval.is_zero() {
                    return Err(UsageError("--interval must be more than 0".into()));
                }
            }
            Long("batch-size") => {
                config.pacing.batch_size = count(value_of(&mut parser, "--batch-size")?, "--batch-size")?
            }
            Long("fetch-delay") => {
                config.fetch_delay =
                    duration(&text(value_of(&mut parser, "--fetch-delay")?, "--fetch-delay")?, "--fetch-delay")?;
                up.fetch_delay = true;
            }
            Long("threads") => {
                config.threads = count(value_of(&mut parser, "--threads")?, "--threads")?;
                if config.threads > MOST_THREADS {
                    // Each is an OS thread with its stack, and as many body threads may start.
                    return Err(UsageError(format!("--threads takes at most {MOST_THREADS}")));
                }
            }
            Long("max-body") => {
                config.max_body = at_least(
                    count(value_of(&mut parser, "--max-body")?, "--max-body")?,
                    "--max-body",
                    SMALLEST_LIMITS.0,
                )?;
                if config.max_body > BODY_CEILING {
                    let mib = BODY_CEILING >> 20;
                    return Err(UsageError(format!("--max-body takes at most {BODY_CEILING} ({mib} MiB)")));
                }
            }
            Long("data-dir") => config.data_dir = Some(PathBuf::from(value_of(&mut parser, "--data-dir")?)),
            Long("retain") => {
                config.retain = duration(&text(value_of(&mut parser, "--retain")?, "--retain")?, "--retain")?
            }
            Long("shutdown-timeout") => {
                config.shutdown_timeout = duration(
                    &text(value_of(&mut parser, "--shutdown-timeout")?, "--shutdown-timeout")?,
                    "--shutdown-timeout",
                )?;
            }
            Long("max-ids") => config.max_ids = count(value_of(&mut parser, "--max-ids")?, "--max-ids")?,
            Long("max-queued-ids") => {
                config.max_queued_ids = count(value_of(&mut parser, "--max-queued-ids")?, "--max-queued-ids")?
            }
            Long("max-url") => {
                config.max_url =
                    at_least(count(value_of(&mut parser, "--max-url")?, "--max-url")?, "--max-url", SMALLEST_LIMITS.1)?;
            }
            Long("max-headers") => {
                let bytes = count(value_of(&mut parser, "--max-headers")?, "--max-headers")?;
                config.max_header_bytes = at_least(bytes, "--max-headers", SMALLEST_LIMITS.2)?;
            }
            Long("idle-timeout") => {
                config.idle_timeout =
                    duration(&text(value_of(&mut parser, "--idle-timeout")?, "--idle-timeout")?, "--idle-timeout")?;
                if config.idle_timeout < Duration::from_millis(10) {
                    return Err(UsageError("--idle-timeout must be at least 10ms".into()));
                }
            }
            Long("token") => config.token = Some(token(value_of(&mut parser, "--token")?, "--token")?),
            Long("log-format") => {
                config.log_format = log_format(text(value_of(&mut parser, "--log-format")?, "--log-format")?)?
            }
            Long("upstream") => up.url = Some(upstream_url(text(value_of(&mut parser, "--upstream")?, "--upstream")?)?),
            Long("upstream-method") => {
                up.method = Some(method(text(value_of(&mut parser, "--upstream-method")?, "--upstream-method")?)?)
            }
            Long("upstream-header") => {
                let line = text(value_of(&mut parser, "--upstream-header")?, "--upstream-header")?;
                up.headers.push(header(&line).map_err(|why| UsageError(format!("--upstream-header {why}")))?);
            }
            Long("upstream-timeout") => {
                let timeout = duration(
                    &text(value_of(&mut parser, "--upstream-timeout")?, "--upstream-timeout")?,
                    "--upstream-timeout",
                )?;
                if timeout < Duration::from_millis(1) {
                    return Err(UsageError("--upstream-timeout must be at least 1ms".into()));
                }
                up.timeout = Some(timeout);
            }
            Long("upstream-ca") => up.ca_file = Some(PathBuf::from(value_of(&mut parser, "--upstream-ca")?)),
            Long("retry-min-backoff") => {
                let backoff = duration(
                    &text(value_of(&mut parser, "--retry-min-backoff")?, "--retry-min-backoff")?,
                    "--retry-min-backoff",
                )?;
                if backoff.is_zero() {
                    return Err(UsageError("--retry-min-backoff must be more than 0".into()));
                }
                up.min_backoff = Some(backoff);
            }
            Long("retry-max-backoff") => {
                let backoff = duration(
                    &text(value_of(&mut parser, "--retry-max-backoff")?, "--retry-max-backoff")?,
                    "--retry-max-backoff",
                )?;
                if backoff.is_zero() {
                    return Err(UsageError("--retry-max-backoff must be more than 0".into()));
                }
                up.max_backoff = Some(backoff);
            }
            Long("max-attempts") => {
                let attempts = count(value_of(&mut parser, "--max-attempts")?, "--max-attempts")?;
                // A batch counts its releases in a byte (memory: see model.rs).
                let attempts = u8::try_from(attempts)
                    .map_err(|_| UsageError(format!("--max-attempts takes at most {}", u8::MAX)))?;
                up.max_attempts = Some(attempts);
            }
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            _ => return Err(arg.unexpected().into()),
        }
    }
    config.addr = listen_addr(addr, port)?;
    // The environment keeps the token out of `ps`; the flag wins when both are set.
    if config.token.is_none() {
        config.token = env.token.filter(|t| !t.is_empty()).map(|t| token(t, TOKEN_VAR)).transpose()?;
    }
    config.retry = retry(&up, config.pacing.interval)?;
    config.upstream = upstream(up, env.upstream_headers)?;
    Ok(Command::Run(Box::new(config)))
}

/// Where to listen: `--addr`, else all interfaces on `PORT` (how platforms that set it expect
/// it), else loopback only.
fn listen_addr(addr: Option<String>, port: Option<OsString>) -> Result<String, UsageError> {
    Ok(match (addr, port) {
        (Some(addr), _) => host_port(addr)?,
        (None, Some(port)) => {
            let port = port.into_string().ok().and_then(|p| p.parse::<u16>().ok()).ok_or_else(|| {
                UsageError("the PORT environment variable must be a port number from 0 to 65535".into())
            })?;
            format!("0.0.0.0:{port}")
        }
        (None, None) => defaults::ADDR.to_owned(),
    })
}

/// `--addr` as `HOST:PORT` (a name, an IPv4 address, or an IPv6 one in brackets); whether the
/// host resolves is learned when it is used.
fn host_port(addr: String) -> Result<String, UsageError> {
    let valid = addr.rsplit_once(':').is_some_and(|(host, port)| {
        let bracketed = host.starts_with('[') && host.ends_with(']');
        !host.is_empty() && (bracketed || !host.contains(':')) && port.parse::<u16>().is_ok()
    });
    match valid {
        true => Ok(addr),
        false => Err(UsageError(format!("--addr takes HOST:PORT, e.g. 127.0.0.1:8000 or [::1]:8000; not {addr:?}"))),
    }
}

/// The flags of `ingestd health`.
fn health(args: impl IntoIterator<Item = OsString>, port: Option<OsString>) -> Result<Command, UsageError> {
    use lexopt::prelude::*;

    let mut probe = Probe { addr: String::new(), timeout: defaults::PROBE_TIMEOUT };
    let mut addr = None;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("addr") => addr = Some(text(value_of(&mut parser, "--addr")?, "--addr")?),
            Long("timeout") => {
                probe.timeout = duration(&text(value_of(&mut parser, "--timeout")?, "--timeout")?, "--timeout")?;
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

fn retry(up: &UpstreamFlags, interval: Duration) -> Result<Retry, UsageError> {
    if let (Some(min), Some(max)) = (up.min_backoff, up.max_backoff) {
        if min > max {
            return Err(UsageError(format!(
                "--retry-min-backoff ({min:?}) must not be longer than --retry-max-backoff ({max:?})"
            )));
        }
    }
    let default = Retry::default_for(interval);
    let max_backoff = up.max_backoff.unwrap_or(default.max_backoff);
    Ok(Retry {
        min_backoff: up.min_backoff.unwrap_or(interval.min(max_backoff)),
        max_backoff,
        max_attempts: up.max_attempts.unwrap_or(default.max_attempts),
    })
}

/// The upstream target, or `None` without `--upstream` (then its other flags are mistakes).
fn upstream(up: UpstreamFlags, env_headers: Option<OsString>) -> Result<Option<Target>, UsageError> {
    let Some(url) = up.url else {
        // The simulated API never fails, so nothing is ever retried.
        let given = [
            ("--upstream-method", up.method.is_some()),
            ("--upstream-header", !up.headers.is_empty()),
            ("--upstream-timeout", up.timeout.is_some()),
            ("--upstream-ca", up.ca_file.is_some()),
            ("--retry-min-backoff", up.min_backoff.is_some()),
            ("--retry-max-backoff", up.max_backoff.is_some()),
            ("--max-attempts", up.max_attempts.is_some()),
        ];
        return match given.iter().find(|(_, given)| *given) {
            Some((flag, _)) => Err(UsageError(format!("{flag} needs --upstream URL"))),
            None => Ok(None),
        };
    };
    if up.fetch_delay {
        return Err(UsageError("--fetch-delay sets the simulated API's time per id: not with --upstream".into()));
    }
    let mut headers = env_header_lines(env_headers)?;
    for header in up.headers {
        // A flag replaces a header of the same name from the environment (or an earlier flag).
        headers.retain(|h: &Header| !h.name.eq_ignore_ascii_case(&header.name));
        headers.push(header);
    }
    Ok(Some(Target {
        url,
        method: up.method.unwrap_or(Method::Get),
        headers,
        timeout: up.timeout.unwrap_or(defaults::UPSTREAM_TIMEOUT),
        ca_file: up.ca_file,
    }))
}

fn env_header_lines(value: Option<OsString>) -> Result<Vec<Header>, UsageError> {
    let Some(value) = value else { return Ok(Vec::new()) };
    let value = value
        .into_string()
        .map_err(|_| UsageError(format!("{UPSTREAM_HEADERS_VAR} (headers for --upstream-header) is not UTF-8")))?;
    let mut headers: Vec<Header> = Vec::new();
    for (n, line) in value.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let header = header(line)
            .map_err(|why| UsageError(format!("{UPSTREAM_HEADERS_VAR} line {} (as --upstream-header) {why}", n + 1)))?;
        headers.retain(|h| !h.name.eq_ignore_ascii_case(&header.name));
        headers.push(header);
    }
    Ok(headers)
}

/// Checks `--upstream`: http or https, a host, `{id}` after the host, no fragment.
fn upstream_url(text: String) -> Result<String, UsageError> {
    // The query and the user's part may hold secrets: they are not repeated.
    let shown = crate::upstream::redacted(&text);
    let bad =
        |why: &str| UsageError(format!("--upstream takes an http or https URL with {{id}} in it; '{shown}' {why}"));
    let Some((scheme, rest)) = text.split_once("://") else { return Err(bad("has no scheme")) };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(bad("is neither http nor https"));
    }
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority.is_empty() {
        return Err(bad("has no host"));
    }
    if authority.contains("{id}") {
        return Err(bad("has {id} in its host; it goes in the path or query"));
    }
    if !rest.contains("{id}") {
        return Err(bad("has no {id}"));
    }
    if text.contains('#') {
        return Err(bad("has a #fragment, which is never sent"));
    }
    match url::Url::parse(&text.replace("{id}", "0")) {
        Ok(parsed) if parsed.host_str().is_some_and(|h| !h.is_empty()) => Ok(text),
        Ok(_) => Err(bad("has no host")),
        Err(error) => Err(bad(&format!("is not a URL ({error})"))),
    }
}

fn method(value: String) -> Result<Method, UsageError> {
    match value.to_ascii_uppercase().as_str() {
        "GET" => Ok(Method::Get),
        "POST" => Ok(Method::Post),
        _ => Err(UsageError(format!("--upstream-method takes GET or POST, not '{value}'"))),
    }
}

/// Headers ingestd frames or routes each call with; setting them would break the call.
const RESERVED_HEADERS: [&str; 10] = [
    "host",
    // ureq 2 would take the `100 Continue` it asks for as the final answer.
    "expect",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

/// Reads `Name: value`. Errors finish the sentence "--upstream-header …" and never quote the
/// value, which may be a secret.
fn header(line: &str) -> Result<Header, String> {
    let Some((name, value)) = line.split_once(':') else {
        return Err("takes 'Name: value'; this one has no ':'".into());
    };
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() {
        return Err("takes 'Name: value'; the name before ':' is empty".into());
    }
    // Only the valid start is quoted: a line missing its ':' may have a secret before the next.
    if let Some((at, bad)) = name.char_indices().find(|&(_, c)| !is_tchar(c)) {
        let bad = if bad == ' ' { "a space".to_owned() } else { format!("{:?}", bad) };
        return Err(format!(
            "takes 'Name: value'; what comes before ':' is not a header name ({bad} after '{}')",
            &name[..at]
        ));
    }
    if RESERVED_HEADERS.iter().any(|r| name.eq_ignore_ascii_case(r)) {
        return Err(format!("cannot set {name}: ingestd frames each call itself"));
    }
    let value = value.trim_matches([' ', '\t']);
    if !value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
        return Err(format!("takes printable ASCII in a value; the value of {name} has other characters"));
    }
    Ok(Header { name: name.to_owned(), value: value.to_owned() })
}

/// A bearer token, from `--token` or [`TOKEN_VAR`] (`source`): a header value must be able to
/// carry it as it is.
fn token(value: OsString, source: &str) -> Result<String, UsageError> {
    if value.is_empty() {
        return Err(UsageError(format!("{source} is empty")));
    }
    match value.into_string() {
        Ok(token) if !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()) => Ok(token),
        _ => Err(UsageError(format!("{source} takes printable ASCII without spaces"))),
    }
}

/// The most `--threads`: twice as many threads start (handlers and body readers), each with its
/// stack; tens of thousands fail to start, and the service with them.
const MOST_THREADS: usize = 4096;

/// The smallest `--max-body`, `--max-url` and `--max-headers` taken: below them, ordinary
/// requests (`{"ids":[1],"priority":"LOW"}`, `/status/<uuid>`, a client's usual headers) are
/// refused, and the service cannot be used at all.
const SMALLEST_LIMITS: (usize, usize, usize) = (64, 64, 128);

fn at_least(value: usize, flag: &str, floor: usize) -> Result<usize, UsageError> {
    if value < floor {
        return Err(UsageError(format!(
            "{flag} must be at least {floor}: a smaller limit refuses even ordinary requests"
        )));
    }
    Ok(value)
}

fn text(value: OsString, flag: &str) -> Result<String, UsageError> {
    value.into_string().map_err(|v| UsageError(format!("{flag} takes text, not {v:?}")))
}

/// The value of `flag`: attached (`--flag=value`), or the next argument unless that is an
/// option (`--interval --addr …` misses the interval; it does not take `--addr` for one).
fn value_of(parser: &mut lexopt::Parser, flag: &str) -> Result<OsString, UsageError> {
    if let Some(attached) = parser.optional_value() {
        return Ok(attached);
    }
    let value = parser.value()?;
    if value.as_encoded_bytes().starts_with(b"--") {
        let shown = value.to_string_lossy();
        return Err(UsageError(format!(
            "{flag} needs a value, and '{shown}' is the next option (write {flag}={shown} if it is the value)"
        )));
    }
    Ok(value)
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
    // Digits only: `usize::parse` also takes a leading `+`.
    Some(&value)
        .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n >= 1)
        .ok_or_else(|| UsageError(format!("{flag} takes a whole number of at least 1, not '{value}'")))
}

/// Parses `200ms`, `5s`, `1.5s`, `10m`, `2h` or `7d`.
pub(crate) fn duration(text: &str, flag: &str) -> Result<Duration, UsageError> {
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
        _ if text.starts_with('-') => return Err(bad("is negative")),
        _ => return Err(bad("has an unknown unit")),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || number.ends_with('.') {
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
        parse_with(
            args.iter().map(OsString::from),
            Env { port: port.map(OsString::from), upstream_headers: None, token: None },
        )
    }

    #[test]
    fn the_token_comes_from_the_flag_else_the_environment_and_is_checked_in_both() {
        use std::os::unix::ffi::OsStringExt;
        let with_token = |args: &[&str], token: OsString| {
            let env = Env { port: None, upstream_headers: None, token: Some(token) };
            parse_with(args.iter().map(OsString::from), env).map(|c| match c {
                Command::Run(config) => config.token,
                other => panic!("expected a config, got {other:?}"),
            })
        };
        assert_eq!(with_token(&[], "s3cret".into()).unwrap().as_deref(), Some("s3cret"));
        assert_eq!(with_token(&["--token", "flag"], "env".into()).unwrap().as_deref(), Some("flag"));
        assert_eq!(with_token(&[], "".into()).unwrap(), None, "empty is none");
        // Not UTF-8 (it ran with no token), or a space no header value can end with (every
        // request got 401): refused at start, as the flag is.
        for bad in [OsString::from_vec(b"s3cr\xffet".to_vec()), "s3cret ".into(), "a b".into()] {
            let error = with_token(&[], bad.clone()).unwrap_err().to_string();
            assert_eq!(error, "INGESTD_TOKEN takes printable ASCII without spaces", "{bad:?}");
        }
        for bad in ["a b", "caf\u{e9}"] {
            let error = run(&["--token", bad], None).unwrap_err().to_string();
            assert_eq!(error, "--token takes printable ASCII without spaces", "{bad:?}");
        }
        assert_eq!(run(&["--token", ""], None).unwrap_err().to_string(), "--token is empty");
    }

    #[test]
    fn flags_for_the_other_kind_of_api_are_refused() {
        let message = |args: &[&str]| run(args, None).unwrap_err().to_string();
        for (flag, value) in [("--retry-min-backoff", "1s"), ("--retry-max-backoff", "1m"), ("--max-attempts", "3")] {
            assert_eq!(message(&[flag, value]), format!("{flag} needs --upstream URL"));
        }
        assert_eq!(
            message(&["--upstream", "http://h/{id}", "--fetch-delay", "1s"]),
            "--fetch-delay sets the simulated API's time per id: not with --upstream"
        );
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
        for bad in ["", "5", "s", "5x", "-1s", "1.2.3s", ".5s", "1.s", "5 s", "1e3s", "99999999999999999999d"] {
            let error = duration(bad, "--interval").unwrap_err().to_string();
            assert!(error.starts_with("--interval takes a duration like"), "{bad}: {error}");
        }
    }

    #[test]
    fn addr_is_host_colon_port() {
        for good in ["127.0.0.1:0", "localhost:8000", "[::1]:8000", "0.0.0.0:65535"] {
            assert_eq!(host_port(good.into()), Ok(good.to_owned()));
        }
        for bad in ["nonsense", ":8000", "host:", "host:99999", "::1:8000", "host:port"] {
            let error = host_port(bad.into()).unwrap_err().to_string();
            assert!(error.starts_with("--addr takes HOST:PORT"), "{bad}: {error}");
        }
    }

    #[test]
    fn defaults() {
        let c = config(&[]);
        assert_eq!(c.addr, "127.0.0.1:8000");
        assert_eq!(c.pacing, Pacing { interval: Duration::from_secs(5), batch_size: 3 });
        assert_eq!(c.fetch_delay, Duration::from_millis(100));
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        assert_eq!(c.threads, (8 * cpus).max(32), "8 per CPU, at least 32, as --help says");
    }

    /// How `USAGE` writes a duration: the largest unit that divides it.
    fn written(duration: Duration) -> String {
        let ms = duration.as_millis();
        let units = [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];
        let (unit, size) = units.into_iter().find(|&(_, size)| ms.is_multiple_of(size)).unwrap();
        format!("{}{unit}", ms / size)
    }

    #[test]
    fn the_help_states_the_defaults_the_code_uses() {
        let stated = |flag: &str| {
            let at = USAGE.find(&format!("  {flag} ")).unwrap_or_else(|| panic!("{flag} is not in the help"));
            let rest = &USAGE[at..];
            let value = &rest[rest.find("[default: ").expect("a default") + "[default: ".len()..];
            value[..value.find([']', ',']).unwrap()].to_owned()
        };
        use defaults::*;
        for (flag, value) in [
            ("--addr", ADDR.to_owned()),
            ("--interval", written(INTERVAL)),
            ("--batch-size", BATCH_SIZE.to_string()),
            ("--fetch-delay", written(FETCH_DELAY)),
            ("--max-body", MAX_BODY.to_string()),
            ("--retain", written(RETAIN)),
            ("--shutdown-timeout", written(SHUTDOWN_TIMEOUT)),
            ("--max-ids", MAX_IDS.to_string()),
            ("--max-queued-ids", MAX_QUEUED_IDS.to_string()),
            ("--max-url", MAX_URL.to_string()),
            ("--max-headers", MAX_HEADER_BYTES.to_string()),
            ("--idle-timeout", written(IDLE_TIMEOUT)),
            ("--upstream-method", "GET".to_owned()),
            ("--upstream-timeout", written(UPSTREAM_TIMEOUT)),
            ("--retry-max-backoff", written(RETRY_MAX_BACKOFF)),
            ("--max-attempts", MAX_ATTEMPTS.to_string()),
        ] {
            assert_eq!(stated(flag), value, "{flag}");
        }
        assert!(USAGE.contains(&format!("at most {} MiB", BODY_CEILING >> 20)), "--max-body's ceiling");
        let probe_timeout = format!("--timeout: how long to wait [default: {}]", written(PROBE_TIMEOUT));
        assert!(USAGE.contains(&probe_timeout), "{probe_timeout}");
        assert_eq!(written(Duration::from_millis(1500)), "1500ms");
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
        assert_eq!(message(&["--batch-size", "+3"]), "--batch-size takes a whole number of at least 1, not '+3'");
        assert_eq!(message(&["--interval", "0s"]), "--interval must be more than 0");
        assert_eq!(message(&["--log-format", "xml"]), "--log-format takes human or json, not 'xml'");
        assert!(message(&["--bogus"]).contains("--bogus"));
        assert!(message(&["--interval"]).contains("--interval"));
        assert!(message(&["stray"]).contains("stray"));
        assert!(message(&["--interval", "-1s"]).ends_with("'-1s' is negative"), "{}", message(&["--interval", "-1s"]));
        assert_eq!(
            message(&["--interval", "--addr", "127.0.0.1:1"]),
            "--interval needs a value, and '--addr' is the next option (write --interval=--addr if it is the value)"
        );
        assert_eq!(
            message(&["--data-dir", "--token", "t"]),
            "--data-dir needs a value, and '--token' is the next option (write --data-dir=--token if it is the value)"
        );
        assert_eq!(config(&["--data-dir=--odd"]).data_dir, Some(PathBuf::from("--odd")));
        assert_eq!(message(&["--threads", "4097"]), "--threads takes at most 4096");
        assert_eq!(config(&["--threads", "4096"]).threads, 4096);
        for (flag, floor) in [("--max-body", 64), ("--max-url", 64), ("--max-headers", 128)] {
            let below = (floor - 1).to_string();
            assert_eq!(
                message(&[flag, &below]),
                format!("{flag} must be at least {floor}: a smaller limit refuses even ordinary requests")
            );
            assert!(run(&[flag, &floor.to_string()], None).is_ok(), "{flag} {floor}");
        }
    }

    fn with_env(args: &[&str], headers: &str) -> Result<Command, UsageError> {
        let env = Env { port: None, upstream_headers: Some(OsString::from(headers)), token: None };
        parse_with(args.iter().map(OsString::from), env)
    }

    fn header(name: &str, value: &str) -> Header {
        Header { name: name.into(), value: value.into() }
    }

    #[test]
    fn upstream_flags() {
        assert_eq!(config(&[]).upstream, None);
        let c = config(&["--upstream", "https://api.example.com/items/{id}"]);
        let target = c.upstream.unwrap();
        assert_eq!(target.url, "https://api.example.com/items/{id}");
        assert_eq!((target.method, target.timeout, target.ca_file), (Method::Get, Duration::from_secs(10), None));
        assert!(target.headers.is_empty());
        let c = config(&[
            "--upstream",
            "http://127.0.0.1:9/x?item={id}",
            "--upstream-method",
            "post",
            "--upstream-header",
            "Authorization: Bearer abc",
            "--upstream-header=X-Trace:  on ",
            "--upstream-timeout",
            "250ms",
            "--upstream-ca",
            "/etc/ca.pem",
        ]);
        let target = c.upstream.unwrap();
        assert_eq!(target.method, Method::Post);
        assert_eq!(target.headers, [header("Authorization", "Bearer abc"), header("X-Trace", "on")]);
        assert_eq!(target.timeout, Duration::from_millis(250));
        assert_eq!(target.ca_file, Some(PathBuf::from("/etc/ca.pem")));
    }

    #[test]
    fn upstream_headers_from_the_environment_come_first_and_a_flag_replaces_one() {
        let Command::Run(c) = with_env(
            &["--upstream", "http://h/{id}", "--upstream-header", "x-key: from-flag"],
            "Authorization: Bearer env\r\n\nX-Key: from-env\n",
        )
        .unwrap() else {
            panic!()
        };
        let headers = c.upstream.unwrap().headers;
        assert_eq!(headers, [header("Authorization", "Bearer env"), header("x-key", "from-flag")]);
        // Without --upstream the variable is not used (nor checked).
        let Command::Run(c) = with_env(&[], "not a header").unwrap() else { panic!() };
        assert_eq!(c.upstream, None);
        let error = with_env(&["--upstream", "http://h/{id}"], "A: b\nBearer s3cret").unwrap_err().to_string();
        assert_eq!(
            error,
            "INGESTD_UPSTREAM_HEADERS line 2 (as --upstream-header) takes 'Name: value'; this one has no ':'"
        );
    }

    #[test]
    fn retry_flags() {
        let c = config(&["--interval", "2s"]);
        assert_eq!(
            c.retry,
            Retry { min_backoff: Duration::from_secs(2), max_backoff: Duration::from_secs(300), max_attempts: 5 }
        );
        let up = ["--upstream", "http://h/{id}"];
        let c = config(
            &[&up[..], &["--retry-min-backoff", "1s", "--retry-max-backoff", "1m", "--max-attempts", "3"]].concat(),
        );
        assert_eq!(
            c.retry,
            Retry { min_backoff: Duration::from_secs(1), max_backoff: Duration::from_secs(60), max_attempts: 3 }
        );
        // The most bounds the default least as it bounds a given one: the wait never grows past it.
        let c = config(&[&up[..], &["--interval", "5s", "--retry-max-backoff", "1s"]].concat());
        assert_eq!((c.retry.min_backoff, c.retry.backoff(3)), (Duration::from_secs(1), Duration::from_secs(1)));
    }

    #[test]
    fn backoff_doubles_up_to_the_most() {
        let retry =
            Retry { min_backoff: Duration::from_secs(1), max_backoff: Duration::from_secs(10), max_attempts: 5 };
        let waits: Vec<u64> = (1..=6).map(|n| retry.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        assert_eq!(retry.backoff(0), Duration::from_secs(1));
        assert_eq!(retry.backoff(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn bad_upstream_flags_name_the_flag() {
        let message = |args: &[&str]| run(args, None).unwrap_err().to_string();
        let with_url = |more: &[&str]| message(&[&["--upstream", "http://h/{id}"], more].concat());
        for (url, says) in [
            ("http://h/items", "has no {id}"),
            ("ftp://h/{id}", "is neither http nor https"),
            ("h/{id}", "has no scheme"),
            ("http://{id}.h/x", "has {id} in its host"),
            ("http://h/x#{id}", "has a #fragment"),
            ("http:///{id}", "has no host"),
            ("http://h:99999/{id}", "is not a URL"),
        ] {
            let error = message(&["--upstream", url]);
            assert!(error.starts_with("--upstream takes an http or https URL with {id} in it;"), "{url}: {error}");
            assert!(error.contains(says), "{url}: {error}");
        }
        let secret = message(&["--upstream", "http://h/items?key=s3cret"]);
        assert!(secret.contains("'http://h/items?…' has no {id}") && !secret.contains("s3cret"), "{secret}");
        let secret = message(&["--upstream", "http://user:s3cret@h/{id}#x"]);
        assert!(secret.contains("'http://…@h/{id}#x' has a #fragment") && !secret.contains("s3cret"), "{secret}");
        assert_eq!(with_url(&["--upstream-method", "PUT"]), "--upstream-method takes GET or POST, not 'PUT'");
        for (line, says) in [
            ("Bearer s3cret", "--upstream-header takes 'Name: value'; this one has no ':'"),
            ("X Key: v", "--upstream-header takes 'Name: value'; what comes before ':' is not a header name (a space after 'X')"),
            (
                "Authorization Bearer s3cret:x",
                "--upstream-header takes 'Name: value'; what comes before ':' is not a header name (a space after 'Authorization')",
            ),
            ("X(: v", "--upstream-header takes 'Name: value'; what comes before ':' is not a header name ('(' after 'X')"),
            (": v", "--upstream-header takes 'Name: value'; the name before ':' is empty"),
            ("Content-Length: 5", "--upstream-header cannot set Content-Length: ingestd frames each call itself"),
            ("expect: 100-continue", "--upstream-header cannot set expect: ingestd frames each call itself"),
            (
                "X-Key: s3cret\u{7f}",
                "--upstream-header takes printable ASCII in a value; the value of X-Key has other characters",
            ),
        ] {
            let error = with_url(&["--upstream-header", line]);
            assert_eq!(error, says, "{line:?}");
            assert!(!error.contains("s3cret"), "a header error quotes a value: {error}");
        }
        assert_eq!(with_url(&["--upstream-timeout", "0s"]), "--upstream-timeout must be at least 1ms");
        assert!(with_url(&["--upstream-timeout", "10"]).starts_with("--upstream-timeout takes a duration"));
        assert_eq!(message(&["--upstream-header", "A: b"]), "--upstream-header needs --upstream URL");
        assert_eq!(message(&["--upstream-ca", "ca.pem"]), "--upstream-ca needs --upstream URL");
        assert_eq!(message(&["--retry-min-backoff", "0s"]), "--retry-min-backoff must be more than 0");
        assert_eq!(
            message(&["--retry-min-backoff", "2m", "--retry-max-backoff", "1m"]),
            "--retry-min-backoff (120s) must not be longer than --retry-max-backoff (60s)"
        );
        assert_eq!(message(&["--max-attempts", "0"]), "--max-attempts takes a whole number of at least 1, not '0'");
        assert_eq!(message(&["--max-attempts", "256"]), "--max-attempts takes at most 255");
    }
}
