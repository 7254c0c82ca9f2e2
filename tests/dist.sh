#!/usr/bin/env bash
# Checks the shipped binary (`make dist`) on its own: copied alone into an empty directory and
# run there as the root directory (chroot as root, else an unprivileged user namespace), so no
# dynamic loader, shared library, /proc or /etc exists. Asks /health, makes one ingestion with a
# journal and waits for it to complete, probes with `ingestd health`, resolves a host name from
# an /etc/hosts in that root, and stops it with SIGTERM. About 2 seconds.
# Usage: bash tests/dist.sh [BINARY]   (default target/dist/ingestd)
set -euo pipefail

bin=${1:-target/dist/ingestd}
[ -x "$bin" ] || { echo "dist test: no binary at $bin; run make dist" >&2; exit 1; }
root=$(mktemp -d)
out=$(mktemp)
err=$(mktemp)
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
    rm -rf "$root" "$out" "$err"
}
trap cleanup EXIT
fail() {
    echo "dist test: $*" >&2
    echo "--- ingestd stderr:" >&2
    cat "$err" >&2
    exit 1
}
# Prints the base URL from the `listening on` line in file $1 once process $2 writes it (not
# after a fixed time); fails, naming $3, if the process ends first or 10 s pass.
listening() {
    local base
    for _ in $(seq 100); do
        base=$(sed -n 's/^listening on //p' "$1")
        [ -n "$base" ] && { echo "$base"; return; }
        kill -0 "$2" 2>/dev/null || fail "$3 exited before listening"
        sleep 0.1
    done
    fail "$3: no listening line within 10 s"
}

# Static means: no program interpreter and no shared library needed.
if command -v readelf >/dev/null; then
    ! readelf -l "$bin" | grep -q INTERP || fail "$bin asks for a dynamic loader"
    ! readelf -d "$bin" | grep -q NEEDED || fail "$bin needs shared libraries"
fi

cp "$bin" "$root/ingestd"
mkdir "$root/data"
if [ "$(id -u)" = 0 ]; then
    enter=(chroot "$root")
else
    enter=(unshare --map-root-user --root="$root")
fi

"${enter[@]}" /ingestd --addr 127.0.0.1:0 --interval 100ms --fetch-delay 1ms --data-dir /data >"$out" 2>"$err" &
pid=$!

base=$(listening "$out" "$pid" "ingestd")
addr=${base#http://}

[ "$(curl -sS "$base/health")" = '{"status":"ok"}' ] || fail "/health did not answer ok"

id=$(curl -sS -d '{"ids": [1, 2, 3, 4, 5], "priority": "MEDIUM"}' "$base/ingest" \
    | sed -n 's/^{"ingestion_id":"\([0-9a-f-]*\)"}$/\1/p')
[ -n "$id" ] || fail "POST /ingest gave no ingestion_id"
status=
for _ in $(seq 100); do
    status=$(curl -sS "$base/status/$id")
    case $status in *'"status":"completed","batches"'*) break ;; esac
    sleep 0.1
done
case $status in
    *'"status":"completed","batches"'*) ;;
    *) fail "ingestion $id did not complete within 10 s: $status" ;;
esac
[ -s "$root/data/journal.v2" ] || fail "no journal written in the root's /data"

# The probe a FROM scratch image uses, from inside the root.
"${enter[@]}" /ingestd health --addr "$addr" || fail "ingestd health exited $? inside the root"

# A static glibc resolves host names without NSS modules ("files" is built in since glibc 2.34):
# none without /etc/hosts, localhost with one.
port=${addr##*:}
if "${enter[@]}" /ingestd health --addr "localhost:$port" 2>/dev/null; then
    fail "localhost resolved in an empty root"
fi
mkdir "$root/etc"
echo "127.0.0.1 localhost upstream.test" >"$root/etc/hosts"
"${enter[@]}" /ingestd health --addr "localhost:$port" || fail "localhost did not resolve from the root's /etc/hosts"

# One delivery to an upstream named by host name, resolved from that /etc/hosts.
python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        print(self.path, flush=True)
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"{}")
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
' >"$root/upstream.log" &
upstream=$!
uppid=
trap 'kill $upstream $uppid 2>/dev/null; cleanup' EXIT
for _ in $(seq 50); do [ -s "$root/upstream.log" ] && break; sleep 0.1; done
uport=$(head -n 1 "$root/upstream.log")
[ -n "$uport" ] || fail "the test upstream did not start"
# No /tmp in this root: the data directory holds tiny_http's private socket too.
mkdir "$root/data2"
"${enter[@]}" /ingestd --addr 127.0.0.1:0 --interval 100ms --data-dir /data2 --upstream "http://upstream.test:$uport/items/{id}" \
    >"$out.up" 2>"$err" &
uppid=$!
upbase=$(listening "$out.up" "$uppid" "ingestd with --upstream")
curl -sS -d '{"ids": [7], "priority": "HIGH"}' "$upbase/ingest" >/dev/null
for _ in $(seq 100); do grep -qx /items/7 "$root/upstream.log" && break; sleep 0.1; done
grep -qx /items/7 "$root/upstream.log" || fail "id 7 never reached the upstream named upstream.test"
kill -TERM "$uppid"; wait "$uppid" || true
rm -f "$out.up"

# As the image runs it when `docker run` flags replace its CMD (so no --data-dir): the
# Dockerfile's TMPDIR is where the private socket goes, the image having no /tmp.
tmpdir=$(sed -n 's/^ENV TMPDIR=//p' "$(dirname "$0")/../Dockerfile")
env -i ${tmpdir:+TMPDIR=$tmpdir} "$(command -v "${enter[0]}")" "${enter[@]:1}" /ingestd --addr 127.0.0.1:0 --interval 1s \
    >"$out.flags" 2>"$err" &
flagspid=$!
listening "$out.flags" "$flagspid" "the image's binary with flags instead of CMD (TMPDIR '$tmpdir')" >/dev/null
kill -TERM "$flagspid"; wait "$flagspid" || true
rm -f "$out.flags"

kill -TERM "$pid"
code=0
wait "$pid" || code=$?
pid=
[ "$code" = 0 ] || fail "exit status $code after SIGTERM"
tail -n 1 "$err" | grep -q 'stopped$' || fail "no 'stopped' line at the end of the log"

echo "dist test: $bin ($(stat -c %s "$bin") bytes) runs alone in an empty root: health, ingest, status, journal, probe, /etc/hosts, an upstream by host name, flags instead of the image's CMD, SIGTERM"
