//! Runs h2load (HTTP/1.1) with its per-request log, for latency figures that can be checked
//! request by request: on this 2-core VM, wrk's latency percentiles were seen to go wrong in a
//! run where a few connections waited ~240 ms for their first answer (see bench/README.md).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::wrk::Load;

/// POSTs `body` (JSON) to `url` on `connections` connections for `duration`, and reads the
/// latency of every request from h2load's log (written to `log`).
pub fn post(url: &str, body: &Path, connections: usize, duration: Duration, log: &Path) -> Load {
    let _ = std::fs::remove_file(log);
    let status = Command::new("h2load")
        .args(["--h1", "-t2", "-c", &connections.to_string(), "-D", &duration.as_secs().max(1).to_string()])
        .arg("-d")
        .arg(body)
        .args(["-H", "Content-Type: application/json"])
        .arg(format!("--log-file={}", log.display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run h2load");
    assert!(status.success(), "h2load failed: {status}");
    parse(&std::fs::read_to_string(log).expect("h2load's log"), duration)
}

/// h2load's log: one line per request, tab-separated: start (µs since the epoch), status,
/// microseconds until the end of the answer.
fn parse(log: &str, duration: Duration) -> Load {
    let mut latencies = Vec::new();
    let mut errors = 0;
    for line in log.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let (Some(status), Some(micros)) = (fields.get(1), fields.get(2)) else { continue };
        let Ok(micros) = micros.trim().parse::<u64>() else { continue };
        if !status.starts_with('2') {
            errors += 1;
        }
        latencies.push(micros);
    }
    assert!(!latencies.is_empty(), "h2load logged no request");
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize] as f64 / 1e3;
    Load {
        rps: latencies.len() as f64 / duration.as_secs_f64(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: at(1.0),
        errors,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn reads_a_log() {
        let log: String = (1..=100)
            .map(|n| format!("1700000000000000\t{}\t{}\n", if n == 7 { 500 } else { 200 }, n * 1000))
            .collect();
        let load = super::parse(&log, Duration::from_secs(10));
        assert_eq!((load.rps, load.p50_ms, load.p99_ms, load.max_ms, load.errors), (10.0, 50.0, 99.0, 100.0, 1));
    }
}
