#!/usr/bin/env bash
# End-to-end checks that need tools outside Rust: the dashboard and docs in headless Chromium
# (playwright-core), /metrics through the reference Prometheus parser, the OpenAPI document
# through openapi-spec-validator and schemathesis. Installs whatever is missing, so it runs on a
# fresh machine as root (CI) as well as on a developer's.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/e2e
VENV=$ROOT/target/e2e-venv
mkdir -p "$OUT"

# --- tools --------------------------------------------------------------------------------
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
if ! "$VENV/bin/python" -c 'import schemathesis, openapi_spec_validator, prometheus_client' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/e2e_requirements.txt
fi
cargo build --locked --quiet
BIN=$ROOT/target/debug/ingestd

# --- servers ------------------------------------------------------------------------------
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

# start NAME ARGS...: starts ingestd on a free port, logs under target/e2e/NAME.*, sets URL.
start() {
  local name=$1; shift
  "$BIN" --addr 127.0.0.1:0 "$@" >"$OUT/$name.stdout" 2>"$OUT/$name.stderr" &
  PIDS+=($!)
  for _ in $(seq 1 200); do
    URL=$(sed -n 's/^listening on //p' "$OUT/$name.stdout")
    [ -n "$URL" ] && return 0
    sleep 0.05
  done
  echo "ingestd ($name) did not start; stderr:" >&2; cat "$OUT/$name.stderr" >&2; return 1
}

# --- the dashboard, docs and metrics on a short interval -----------------------------------
start ui --interval 200ms --fetch-delay 20ms --log-format json
UI=$URL
# The same pages on a server with a token: they must ask for it and send it.
TOKEN=e2e-$RANDOM$RANDOM
INGESTD_TOKEN=$TOKEN start token --interval 200ms --fetch-delay 20ms
INGESTD_URL=$UI INGESTD_TOKEN_URL=$URL INGESTD_TOKEN=$TOKEN SCREENSHOT_DIR=$ROOT/target \
  node --test --test-concurrency=1 tests/browser/
"$VENV/bin/python" tests/check_metrics.py "$UI" "$OUT/ui.stderr"

# --- the OpenAPI document -----------------------------------------------------------------
curl -fsS "$UI/openapi.json" >"$OUT/openapi.json"
"$VENV/bin/openapi-spec-validator" "$OUT/openapi.json"
# A fast pacer, so the ingestions schemathesis makes drain while it runs.
start api --interval 1ms --fetch-delay 0s
# positive_data_acceptance is left out on purpose: JSON Schema counts 2.0 as an integer, and
# the API refuses ids written with a fraction or exponent (documented in IngestRequest.ids).
# Every generated header is sent, non-ASCII bytes included (400 malformed_request).
"$VENV/bin/schemathesis" run "$URL/openapi.json" --checks all --exclude-checks positive_data_acceptance \
  --max-examples 100 --seed 6 --no-color 2>&1 | tee "$OUT/schemathesis.log" | tail -n 25
# --- --upstream over https: delivery with --upstream-ca, a refusal without it ----------------
bash tests/upstream_tls.sh "$BIN" "$OUT"
echo "e2e: screenshots in target/dashboard.png, target/dashboard-phone.png, target/docs.png"
