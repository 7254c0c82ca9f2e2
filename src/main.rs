//! The `ingestd` binary: parse flags, start the core and the HTTP server, wait for a signal,
//! stop in order. Also `ingestd health`, a probe of a running instance.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingestd::config::{self, Command, Config, Probe};
use ingestd::http::api::HEALTH;
use ingestd::http::{HttpOptions, HttpServer, Limits};
use ingestd::upstream::HttpUpstream;
use ingestd::{allocator, log, realtime, App, SimulatedApi, Storage, SystemClock};
use signal_hook::consts::{SIGINT, SIGTERM, SIGXFSZ};
use signal_hook::iterator::Signals;

fn main() -> ExitCode {
    let config = match config::parse_with(std::env::args_os().skip(1), config::Env::from_process()) {
        Ok(Command::Run(config)) => *config,
        Ok(Command::Help) => return print(config::USAGE),
        Ok(Command::Version) => return print(&config::version()),
        Ok(Command::Health(probe)) => return health(&probe),
        Err(error) => {
            eprintln!("ingestd: {error}\nTry 'ingestd --help' for the options.");
            return ExitCode::from(2);
        }
    };
    // A panic on this thread (one re-raised from `http-start`) still leaves the records
    // queued before it written.
    let ran = std::panic::catch_unwind(|| run(&config));
    match ran {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(error)) => {
            log::fatal(format_args!("{error}"));
            ExitCode::FAILURE
        }
        Err(panic) => {
            log::flush();
            std::panic::resume_unwind(panic)
        }
    }
}

/// Prints `text` and a newline; a closed stdout (`ingestd --help | head -1`) is an error to
/// report, not a panic.
fn print(text: &str) -> ExitCode {
    match writeln!(std::io::stdout(), "{text}") {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ingestd: cannot write to stdout: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: &Config) -> Result<(), String> {
    allocator::return_large_blocks();
    log::set_format(config.log_format);
    raise_open_files_limit();
    let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(|e| format!("cannot handle signals: {e}"))?;
    // Past a file-size limit a journal write must fail (and answer 503), not kill the process.
    signal_hook::flag::register(SIGXFSZ, Arc::new(AtomicBool::new(false)))
        .map_err(|e| format!("cannot handle signals: {e}"))?;
    let listener = TcpListener::bind(&config.addr).map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
    let storage = Storage { data_dir: config.data_dir.clone(), retain: config.retain, ..Storage::default() };
    let app = Arc::new(match &config.upstream {
        Some(target) => {
            let upstream = HttpUpstream::new(target.clone()).map_err(|e| e.to_string())?;
            let names: Vec<&str> = target.headers.iter().map(|h| h.name.as_str()).collect();
            log::info(format_args!(
                "upstream: {} {}, timeout {:?}, headers {names:?}",
                target.method.as_str(),
                target.shown(),
                target.timeout
            ));
            App::open_with(config.pacing, config.retry, Arc::new(SystemClock), upstream, storage)
                .map_err(|e| e.to_string())?
        }
        None => {
            let api = SimulatedApi { delay: config.fetch_delay };
            App::open_with(config.pacing, config.retry, Arc::new(SystemClock), api, storage)
                .map_err(|e| e.to_string())?
        }
    });
    app.set_max_queued_ids(config.max_queued_ids as u64);
    let limits = Limits {
        max_body: config.max_body,
        max_ids: config.max_ids,
        max_url: config.max_url,
        max_header_bytes: config.max_header_bytes,
    };
    let options = HttpOptions {
        threads: config.threads,
        limits,
        idle_timeout: config.idle_timeout,
        token: config.token.clone(),
        socket_dirs: config.data_dir.iter().cloned().collect(),
    };
    // Every HTTP thread, ours and tiny_http's, descends from this lowered one.
    let server = realtime::start_lowered("http-start", || HttpServer::start(listener, Arc::clone(&app), options))
        .and_then(|started| started)
        .map_err(|e| format!("cannot start the HTTP server: {e}"))?;

    if config.data_dir.is_none() {
        log::info(format_args!("in-memory mode: queued work is lost on exit; pass --data-dir to keep it"));
    }
    // The fetch delay is the simulated API's; an upstream has its own line above.
    let simulated = match config.upstream {
        Some(_) => String::new(),
        None => format!(", fetch delay {:?}", config.fetch_delay),
    };
    log::info(format_args!(
        "interval {:?}, batch size {}{simulated}, {} HTTP threads, {}",
        config.pacing.interval,
        config.pacing.batch_size,
        config.threads,
        if config.token.is_some() { "token required but on /health and the pages" } else { "no token" }
    ));
    if config.max_ids > config.max_queued_ids {
        log::warn(format_args!(
            "--max-ids {} is more than --max-queued-ids {}: a request takes at most {} ids",
            config.max_ids, config.max_queued_ids, config.max_queued_ids
        ));
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{}", server.addr())
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))?;
    drop(stdout);

    let signal = signals.forever().next().unwrap_or(SIGTERM);
    log::info(format_args!("signal {signal}: stopping; new requests get 503, finishing the batch in flight"));
    // The HTTP side keeps answering (with 503) while the core winds down.
    app.shutdown(config.shutdown_timeout);
    server.stop();
    log::info(format_args!("stopped"));
    log::flush();
    Ok(())
}

/// Every client connection takes a few file descriptors (its socket, the relay's Unix socket
/// to tiny_http and tiny_http's end of it), so the soft limit (often 1,024) is raised to the hard
/// one: running out takes far more connections. Logs both.
#[cfg(target_os = "linux")]
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let show = |n: Option<u64>| n.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    // Linux refuses an unlimited soft limit; its real ceiling is `fs.nr_open`.
    let ceiling = limit
        .maximum
        .or_else(|| std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|n| n.trim().parse().ok()));
    let raised = match (limit.current, ceiling) {
        (Some(current), Some(ceiling)) if current < ceiling => {
            setrlimit(Resource::Nofile, Rlimit { current: Some(ceiling), maximum: limit.maximum }).map(|()| ceiling)
        }
        _ => Ok(limit.current.unwrap_or(0)),
    };
    match raised {
        Ok(now) => log::info(format_args!(
            "open files: soft limit {} (was {}), hard limit {}",
            now,
            show(limit.current),
            show(limit.maximum)
        )),
        Err(error) => log::info(format_args!(
            "open files: soft limit {}, hard limit {}; could not raise it ({error})",
            show(limit.current),
            show(limit.maximum)
        )),
    }
}

#[cfg(not(target_os = "linux"))]
fn raise_open_files_limit() {}

/// `ingestd health`: exit 0 if `GET /health` answers 200, else 1 with the reason on stderr. It
/// needs no shell, curl or name service, so it works as the health check of a `FROM scratch`
/// image.
fn health(probe: &Probe) -> ExitCode {
    match ask_health(probe) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("ingestd health: {}: {why}", probe.addr);
            ExitCode::FAILURE
        }
    }
}

/// `GET /health` within `--timeout` as a whole: connecting, sending and the answer's status line.
fn ask_health(probe: &Probe) -> Result<(), String> {
    let deadline = Instant::now() + probe.timeout;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let timed_out = || format!("no answer within {:?}", probe.timeout);
    let addrs: Vec<_> = probe.addr.to_socket_addrs().map_err(|e| format!("bad address: {e}"))?.collect();
    let mut failure = String::from("no address to connect to");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, left()) {
            Ok(connected) => {
                stream = Some(connected);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => failure = timed_out(),
            Err(e) => failure = format!("cannot connect: {e}"),
        }
    }
    let mut stream = stream.ok_or(failure)?;
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => timed_out(),
        _ => format!("no answer: {e}"),
    };
    stream.set_read_timeout(Some(left())).map_err(io)?;
    stream.set_write_timeout(Some(left())).map_err(io)?;
    // One write: `write!` would send the pieces as separate segments.
    let request = format!("GET {HEALTH} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", probe.addr);
    stream.write_all(request.as_bytes()).map_err(io)?;
    // Only the status line matters: `HTTP/1.1 200 OK`.
    let mut line = String::new();
    BufReader::new(stream.take(512)).read_line(&mut line).map_err(io)?;
    match line.split(' ').nth(1) {
        Some("200") => Ok(()),
        _ if line.is_empty() => Err("the connection closed without an answer".into()),
        _ => Err(format!("answered {:?}", line.trim_end())),
    }
}
