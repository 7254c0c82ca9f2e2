#!/usr/bin/env bash
# `--upstream` over https (part of `make e2e`): a local TLS upstream (Python's http.server + ssl)
# with a certificate from a private CA made here with openssl. With `--upstream-ca CA` ingestd
# delivers; without it the call is refused and the log says why. Usage: upstream_tls.sh BIN OUT
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/debug/ingestd}
OUT=${2:-target/e2e}/tls
rm -rf "$OUT" && mkdir -p "$OUT"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

# A CA, and a server certificate for 127.0.0.1 signed by it (webpki refuses a CA certificate as
# a server's own, so a lone self-signed one will not do).
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=ingestd-e2e-ca \
  -keyout "$OUT/ca.key" -out "$OUT/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout "$OUT/server.key" -out "$OUT/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$OUT/server.ext"
openssl x509 -req -in "$OUT/server.csr" -CA "$OUT/ca.pem" -CAkey "$OUT/ca.key" -CAcreateserial -days 2 \
  -extfile "$OUT/server.ext" -out "$OUT/server.pem" 2>/dev/null

python3 tests/upstream_tls.py "$OUT/server.pem" "$OUT/server.key" "$OUT/arrivals" >"$OUT/port" &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$OUT/port" ] && break; sleep 0.05; done
UPSTREAM="https://127.0.0.1:$(cat "$OUT/port")/items/{id}"
touch "$OUT/arrivals"

# run NAME IDS ARGS...: starts ingestd, ingests IDS (a JSON list), waits for the batch to end,
# stops it; its log is in $OUT/NAME.stderr.
run() {
  local name=$1 ids=$2; shift 2
  "$BIN" --addr 127.0.0.1:0 --interval 50ms --upstream "$UPSTREAM" --upstream-timeout 5s "$@" \
    >"$OUT/$name.stdout" 2>"$OUT/$name.stderr" &
  local pid=$! url=""
  PIDS+=($pid)
  for _ in $(seq 1 200); do url=$(sed -n 's/^listening on //p' "$OUT/$name.stdout"); [ -n "$url" ] && break; sleep 0.05; done
  local id
  id=$(curl -fsS -X POST "$url/ingest" -d "{\"ids\": $ids, \"priority\": \"HIGH\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ingestion_id"])')
  for _ in $(seq 1 200); do
    curl -fsS "$url/status/$id" | grep -q '"status":"completed"' && break
    sleep 0.05
  done
  kill -TERM "$pid"; wait "$pid" || true
}

run trusted '[1, 2, 3]' --upstream-ca "$OUT/ca.pem"
run untrusted '[4]'
fail() { echo "upstream_tls: $*" >&2; exit 1; }
[ "$(cat "$OUT/arrivals")" = "$(printf '/items/1\n/items/2\n/items/3')" ] \
  || fail "with --upstream-ca, expected /items/1..3 at the upstream, got: $(cat "$OUT/arrivals")"
grep -q 'external API failed for id 4: certificate not trusted (unknown issuer); for a private CA, pass --upstream-ca' \
  "$OUT/untrusted.stderr" || fail "without --upstream-ca, no refusal in the log: $(cat "$OUT/untrusted.stderr")"
echo "upstream_tls: delivered over https with --upstream-ca; refused without it (the log says why)"
