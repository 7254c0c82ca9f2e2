#!/usr/bin/env bash
# Durable vs in-memory POST /ingest throughput at 32 connections, measured in one run
# (alternating, so machine noise hits both), beside this disk's fsync latency.
# Usage: bench/durable.sh [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
rounds=${2:-2}
bench/ensure-wrk.sh
cargo build --release --quiet --bin ingestd --example fsync_latency
bin=target/release/ingestd
data=$(mktemp -d "${TMPDIR:-/tmp}/ingestd-bench-XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$data"' EXIT

start() { # start NAME ARGS... -> prints the base URL
  local out="$data/$1.out"; shift
  "$bin" --addr 127.0.0.1:0 --interval 1h "$@" >"$out" 2>/dev/null &
  for _ in $(seq 100); do grep -q listening "$out" 2>/dev/null && break; sleep 0.05; done
  sed 's/listening on //' "$out"
}
rps() { wrk -t2 -c32 -d"${seconds}s" -s bench/post.lua "$1" | awk '/Requests\/sec/ {print $2}'; }

memory=$(start memory)
durable=$(start durable --data-dir "$data/journal")
mem_total=0; dur_total=0
for round in $(seq "$rounds"); do
  m=$(rps "$memory"); d=$(rps "$durable")
  echo "round $round: in-memory $m req/s, durable $d req/s" >&2
  mem_total=$(echo "$mem_total + $m" | bc -l); dur_total=$(echo "$dur_total + $d" | bc -l)
done
fsync=$(target/release/examples/fsync_latency "$data" 500)
ratio=$(echo "$dur_total / $mem_total" | bc -l)
printf '{"post_rps_in_memory": %.0f, "post_rps_durable": %.0f, "durable_over_memory": %.3f, "connections": 32, "seconds": %s, "rounds": %s, "fsync": %s}\n' \
  "$(echo "$mem_total / $rounds" | bc -l)" "$(echo "$dur_total / $rounds" | bc -l)" "$ratio" "$seconds" "$rounds" "$fsync"
