//! Runs wrk and reads its report: requests per second, p50/p99 latency, errors.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One wrk run's figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The slowest request.
    pub max_ms: f64,
    /// Socket errors (connect, read, write, timeout) plus answers other than 2xx/3xx.
    pub errors: u64,
}

/// What to send: a GET of a path, or a wrk Lua script (with its arguments) against the base.
pub enum Request<'a> {
    Get(&'a str),
    Script(&'a str, &'a [&'a str]),
}

fn command(base: &str, request: &Request<'_>, connections: usize, duration: Duration) -> Command {
    let mut wrk = Command::new("wrk");
    let seconds = format!("{}s", duration.as_secs().max(1));
    wrk.args(["-t2", "--latency", "-d", &seconds, "-c", &connections.to_string()]);
    match request {
        Request::Get(path) => wrk.arg(format!("{base}{path}")),
        Request::Script(script, args) => wrk.args(["-s", script, base, "--"]).args(*args),
    };
    wrk.stdout(Stdio::piped()).stderr(Stdio::null());
    wrk
}

/// Runs wrk to the end and parses its report.
pub fn run(base: &str, request: &Request<'_>, connections: usize, duration: Duration) -> Load {
    let output = command(base, request, connections, duration).output().expect("run wrk");
    parse(&String::from_utf8_lossy(&output.stdout))
}

/// Starts wrk in the background, for load that runs while something else is measured.
pub fn spawn(base: &str, request: &Request<'_>, connections: usize, duration: Duration) -> Child {
    command(base, request, connections, duration).spawn().expect("start wrk")
}

fn parse(report: &str) -> Load {
    let mut load = Load::default();
    for line in report.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rps] => load.rps = rps.parse().unwrap_or(0.0),
            ["50%", t] => load.p50_ms = millis(t),
            ["99%", t] => load.p99_ms = millis(t),
            ["Latency", _avg, _stdev, max, ..] => load.max_ms = millis(max),
            ["Non-2xx", "or", "3xx", "responses:", n] => load.errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                load.errors += rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>()
            }
            _ => {}
        }
    }
    assert!(load.rps > 0.0, "wrk reported no throughput:\n{report}");
    load
}

/// wrk's durations ("635.91us", "1.02ms", "2.00s") in milliseconds.
fn millis(text: &str) -> f64 {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
    let value: f64 = text[..split].parse().unwrap_or(f64::NAN);
    match &text[split..] {
        "us" => value / 1e3,
        "ms" => value,
        "s" => value * 1e3,
        "m" => value * 60e3,
        _ => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_a_report() {
        let load = super::parse(
            "    Latency   1.00ms  2.00ms  31.50ms   90.00%\n  Latency Distribution\n     50%  635.91us\n     99%    2.34ms\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 5\nRequests/sec:  16161.94\n",
        );
        assert_eq!((load.rps, load.p50_ms, load.p99_ms, load.errors), (16161.94, 0.63591, 2.34, 8));
        assert_eq!(load.max_ms, 31.5);
    }
}
