#!/usr/bin/env bash
# Mixed POST/GET load against a fresh release build while the pacer runs (20 ms interval):
# no failed request, no lost acknowledgement, no two releases closer than the interval; prints
# lateness and the server's memory over time as JSON.
# Usage: bench/soak.sh [SECONDS] [CONNECTIONS] [GETS_PER_POST]
#   make bench runs `bench/soak.sh 60 256 1`; make soak runs `bench/soak.sh 600 64 9`.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
connections=${2:-256}
gets_per_post=${3:-1}
ulimit -n 16384 2>/dev/null || true
cargo build --release --locked --quiet --bin ingestd --example mixed_load
work=$(mktemp -d "${TMPDIR:-/tmp}/ingestd-soak-XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
target/release/ingestd --addr 127.0.0.1:0 --interval 20ms --fetch-delay 5ms --log-format json \
  --max-queued-ids 100000000 >"$work/out" 2>"$work/log" &
server=$!
for _ in $(seq 100); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.05; done
base=$(sed 's/listening on //' "$work/out")
target/release/examples/mixed_load "$base" "$connections" "$seconds" "$gets_per_post" "$server" "$work/log" 20
