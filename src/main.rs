//! The `ingestd` binary: parse flags, start the core and the HTTP server, wait for a signal,
//! stop in order.

use std::io::Write;
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;

use ingestd::config::{self, Command, Config};
use ingestd::http::{HttpOptions, HttpServer};
use ingestd::{log, App, SimulatedApi, SystemClock};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() -> ExitCode {
    let config = match config::parse(std::env::args_os().skip(1), std::env::var_os("PORT")) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            println!("{}", config::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("ingestd: {error}\nTry 'ingestd --help' for the options.");
            return ExitCode::from(2);
        }
    };
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ingestd: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: &Config) -> Result<(), String> {
    log::set_format(config.log_format);
    let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(|e| format!("cannot handle signals: {e}"))?;
    let listener = TcpListener::bind(&config.addr).map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
    let api = SimulatedApi { delay: config.fetch_delay };
    let app = Arc::new(App::start(config.pacing, Arc::new(SystemClock), api));
    let options = HttpOptions { threads: config.threads, max_body: config.max_body };
    let server = HttpServer::start(listener, Arc::clone(&app), options)
        .map_err(|e| format!("cannot start the HTTP server: {e}"))?;

    log::info(format_args!(
        "in-memory mode: queued work is lost on exit; interval {:?}, batch size {}, fetch delay {:?}, {} HTTP threads",
        config.pacing.interval, config.pacing.batch_size, config.fetch_delay, config.threads
    ));
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{}", server.addr())
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))?;
    drop(stdout);

    let signal = signals.forever().next().unwrap_or(SIGTERM);
    log::info(format_args!("signal {signal}: stopping; finishing the batch in flight"));
    server.stop();
    match Arc::try_unwrap(app) {
        Ok(app) => app.shutdown(),
        Err(_) => return Err("the core was still in use at shutdown".into()),
    }
    log::info(format_args!("stopped"));
    Ok(())
}
