#!/usr/bin/env bash
# Issue 5 and 11 figures against a release build: 1,000 connections sending `GET /health HTTP/2.0`
# (each gets 505 or is closed within the idle timeout; threads and fds back within 10 of the
# baseline 2 s later; a new client's /health under 100 ms meanwhile), bursts of 64/256/1024 new
# keep-alive connections (3 fresh servers each; 0 stranded expected) and a new client's /status
# latency while 1,000 connections stall (under 100 ms expected). `bench/hardening.sh versions`
# runs the first alone (~6 s). Not part of `make test`: timings depend on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
# 1,024 client sockets plus as many on the server side, and a thread per connection on both.
ulimit -n 16384 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --locked --quiet --bin ingestd --example hardening_bench
exec target/release/examples/hardening_bench target/release/ingestd "$@"
