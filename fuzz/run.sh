#!/usr/bin/env bash
# Fuzzes the request decoder and validator (fuzz_targets/request.rs) with libFuzzer.
# Usage: fuzz/run.sh [SECONDS]   (default 600). Not part of `make test`.
# cargo-fuzz needs nightly-only flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p fuzz/corpus/request
cp -n fuzz/seeds/request/* fuzz/corpus/request/
RUSTC_BOOTSTRAP=1 cargo fuzz run request fuzz/corpus/request -- -max_total_time="$seconds" -rss_limit_mb=4096
