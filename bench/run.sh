#!/usr/bin/env bash
# `make bench`: builds release binaries and runs every issue 7 figure (examples/bench/), printing
# one table and writing target/bench.json. BENCH_SECONDS (per wrk run, default 10),
# BENCH_ROUNDS (alternations per comparison, default 2), BENCH_HARDENING=0 to skip bursts,
# BENCH_ONLY=pacing (or throughput, memory, durable, hardening) for one part. Pacing runs the
# server as started (real-time where this shell may grant it) and under setpriv without
# CAP_SYS_NICE, alternating; run as root to get both.
set -euo pipefail
cd "$(dirname "$0")/.."
bench/ensure-tools.sh
# 1,024 client sockets plus as many on the server side (the hardening bursts), and wrk's 256.
ulimit -n 16384 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --locked --quiet --bin ingestd \
  --example bench --example ceiling --example fsync_latency --example hardening_bench
exec target/release/examples/bench target
