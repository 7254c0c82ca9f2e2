#!/usr/bin/env bash
# `make bench`: builds release binaries and runs every issue 7 figure (examples/bench/), printing
# one table and writing target/bench.json. BENCH_SECONDS (per wrk run, default 10),
# BENCH_ROUNDS (alternations per comparison, default 2), BENCH_HARDENING=0 to skip bursts.
set -euo pipefail
cd "$(dirname "$0")/.."
bench/ensure-wrk.sh
# 1,024 client sockets plus as many on the server side (the hardening bursts), and wrk's 256.
ulimit -n 16384 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --locked --quiet --bin ingestd \
  --example bench --example ceiling --example fsync_latency --example hardening_bench
exec target/release/examples/bench target
