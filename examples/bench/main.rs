//! `make bench`: every performance figure of issue 7 in one run, against release binaries, as
//! one table on stdout and as JSON in `target/bench.json`. Started by `bench/run.sh`.
//!
//! Ratios (ours over the ceiling, durable over in-memory) are measured alternating in the same
//! run, so a noisy, shared machine slows both sides alike. Timing goals live here, never in
//! `make test`. Environment: `BENCH_SECONDS` (per wrk run, default 10), `BENCH_ROUNDS`
//! (alternations per comparison, default 2), `BENCH_THREADS` (handler threads, default 32),
//! `BENCH_HARDENING=0` skips the burst and stalled-connection figures, `BENCH_ONLY=pacing` (or
//! `throughput`, `memory`, `durable`, `upstream`, `compaction`, `hardening`) runs one part, `BENCH_PACING_RELEASES`
//! (default 500) sets the releases per pacing run. Pacing is measured with real-time
//! scheduling where the run has it and without (`CAP_SYS_NICE` dropped), alternating.
//! The compaction part measures durable POSTs while the journal compacts with
//! `BENCH_COMPACTION_IDS` (default 5,000,000) ids queued.
//! `BENCH_AGAINST=PATH` adds `against`: this build's ingestd against the one at PATH,
//! alternating (`BENCH_ONLY=against` for that alone).

mod client;
mod diagnose;
mod h2load;
mod pacing;
mod proc;
mod report;
mod scenarios;
mod upstream;
mod wrk;

use std::path::PathBuf;
use std::time::Duration;

/// What every scenario needs.
pub struct Setup {
    pub ingestd: PathBuf,
    pub examples: PathBuf,
    pub seconds: Duration,
    pub rounds: usize,
    pub threads: usize,
    pub target: PathBuf,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let target = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target".into()));
    let release = target.join("release");
    let setup = Setup {
        ingestd: release.join("ingestd"),
        examples: release.join("examples"),
        seconds: Duration::from_secs(env_or("BENCH_SECONDS", 10)),
        rounds: env_or("BENCH_ROUNDS", 2usize).max(1),
        threads: env_or("BENCH_THREADS", 32usize),
        target: target.clone(),
    };
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let runs = |part: &str| only.is_empty() || only == part;
    let mut report = report::Report::new(&setup);
    if runs("throughput") {
        scenarios::throughput(&setup, &mut report);
    }
    if runs("pacing") {
        pacing::precision(&setup, &mut report);
    }
    if runs("memory") {
        scenarios::memory_and_scale(&setup, &mut report);
    }
    if runs("durable") {
        scenarios::durable(&setup, &mut report);
    }
    if runs("upstream") {
        upstream::pacing_and_overhead(&setup, &mut report);
    }
    if runs("compaction") {
        scenarios::compaction(&setup, &mut report);
    }
    if runs("hardening") && env_or("BENCH_HARDENING", 1u8) == 1 {
        scenarios::hardening(&setup, &mut report);
    }
    // Only on request: it needs a second build.
    if let Some(other) = std::env::var_os("BENCH_AGAINST") {
        if runs("against") {
            scenarios::against(&setup, &PathBuf::from(other), &mut report);
        }
    }
    report.finish(&target.join("bench.json"));
}
