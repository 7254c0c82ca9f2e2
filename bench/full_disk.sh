#!/usr/bin/env bash
# Issue 11's two full-disk repros against a release build, on small tmpfs mounts (needs root).
#  A. The reservation margin: a 4 MiB tmpfs with ~1.1 MiB free, 200 POSTs while a neighbour
#     appends 512 B at a time (starting over at 256 KiB). Expected: 0 failed neighbour writes.
#  B. A full disk with `--interval 1s`: fill a 2 MiB tmpfs until the log says the release
#     could not be journaled, check /health and /queue, kill -9 (the held batch is the last one
#     the pacer logged as released), free the space, restart. Expected: the held batch was never triggered before the crash, and the
#     first release after the restart comes >= 1000 ms after the last journaled one.
# Not part of `make test`: it mounts filesystems and its timings depend on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet --bin ingestd
BIN=$PWD/target/release/ingestd
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  umount -l "$WORK/a" "$WORK/b" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_bytes() { python3 -c 'import os,sys; s=os.statvfs(sys.argv[1]); print(s.f_bavail*s.f_frsize)' "$1"; }
fill() { # fill DIR FILE LEAVE: zeros into FILE until at most LEAVE bytes are free
  python3 - "$1" "$2" "$3" <<'EOF'
import os, sys
d, name, leave = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(os.path.join(d, name), "wb") as f:
    while True:
        s = os.statvfs(d)
        if s.f_bavail * s.f_frsize <= leave:
            break
        try:
            f.write(b"\0" * 4096); f.flush()
        except OSError:
            break
EOF
}
start() { # start LOG ARGS...: prints the base URL
  local log=$1; shift
  "$BIN" --addr 127.0.0.1:0 "$@" >"$log.out" 2>"$log" &
  PIDS+=($!)
  echo $! >"$log.pid"
  until grep -q "listening on" "$log.out" 2>/dev/null; do sleep 0.05; done
  sed -n 's/^listening on //p' "$log.out"
}

echo "== A: reservation margin (4 MiB tmpfs, ~1.1 MiB free, neighbour writing 512 B at a time)"
mkdir -p "$WORK/a" && mount -t tmpfs -o size=4m tmpfs "$WORK/a"
fill "$WORK/a" filler $((1100 * 1024))
BASE=$(start "$WORK/a.log" --interval 1h --batch-size 10 --data-dir "$WORK/a/data")
python3 - "$WORK/a/neighbour" "$WORK/a.stop" >"$WORK/a.neighbour" <<'EOF' &
import os, sys
path, stop = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND)
writes = failures = 0
lowest = 1 << 62
while not os.path.exists(stop):
    try:
        os.write(fd, b"n" * 512); writes += 1
    except OSError:
        failures += 1
    if os.fstat(fd).st_size >= 256 * 1024:
        os.ftruncate(fd, 0)
    s = os.statvfs(os.path.dirname(path)); lowest = min(lowest, s.f_bavail * s.f_frsize)
print(f"neighbour: {writes} writes, {failures} failed (ENOSPC); lowest free {lowest} B")
EOF
NEIGHBOUR=$!
for n in $(seq 0 199); do
  curl -sf -o /dev/null -X POST "$BASE/ingest" -d "{\"ids\": [$((n * 10 + 1)),$((n * 10 + 2)),$((n * 10 + 3))], \"priority\": \"LOW\"}"
done
touch "$WORK/a.stop"; wait "$NEIGHBOUR"
cat "$WORK/a.neighbour"
echo "journal file: $(stat -c %s "$WORK/a/data/journal.v2") B"

echo "== B: full disk, --interval 1s, kill -9 after a release, free the space, restart"
mkdir -p "$WORK/b" && mount -t tmpfs -o size=2m tmpfs "$WORK/b"
ARGS=(--interval 1s --batch-size 1 --fetch-delay 0s --data-dir "$WORK/b/data")
BASE=$(start "$WORK/b1.log" "${ARGS[@]}")
ID=$(curl -sf -X POST "$BASE/ingest" -d "{\"ids\": [$(seq -s, 1 40)], \"priority\": \"HIGH\"}" | jq -r .ingestion_id)
fill "$WORK/b" filler 0
until grep -q "could not journal the release" "$WORK/b1.log"; do sleep 0.05; done
echo "health while full: $(curl -s "$BASE/health")"
echo "queue storage while full: $(curl -s "$BASE/queue" | jq -c .storage)"
echo "batches triggered or completed while full: $(curl -s "$BASE/status/$ID" | jq '[.batches[] | select(.status != "yet_to_start")] | length')"
HELD=$(curl -s "$BASE/queue" | jq -r .in_flight.batch_id)
echo "held batch $HELD: $(curl -s "$BASE/status/$ID" | jq -c --arg b "$HELD" '.batches[] | select(.batch_id == $b) | {status, attempts}')"
# The pacer logged the held batch as released; nothing else goes while the disk is full.
kill -9 "$(cat "$WORK/b1.log.pid")"
rm -f "$WORK/b/filler"
last_triggered() { grep -a '"triggered"' "$WORK/b/data/journal.v2" | tr -d '\0' | sed 's/^[0-9a-f]* //' | jq -s 'map(.at_ms) | max'; }
BEFORE=$(last_triggered)
BASE=$(start "$WORK/b2.log" "${ARGS[@]}")
until [ "$(last_triggered)" != "$BEFORE" ]; do sleep 0.01; done
AFTER=$(grep -a '"triggered"' "$WORK/b/data/journal.v2" | tr -d '\0' | sed 's/^[0-9a-f]* //' | jq -s "map(.at_ms) | map(select(. > $BEFORE)) | min")
echo "last journaled release before the crash: $BEFORE; first after the restart: $AFTER; gap $((AFTER - BEFORE)) ms (>= 1000 expected)"
echo "attempts after the restart (no batch above 1 expected): $(curl -s "$BASE/status/$ID" | jq -c '[.batches[].attempts] | max')"
echo "held batch after the restart: $(curl -s "$BASE/status/$ID" | jq -c --arg b "$HELD" '.batches[] | select(.batch_id == $b) | {status, attempts}')"
