#!/usr/bin/env bash
# Builds the FROM scratch image from target/dist/ingestd (run `make dist` first) and checks it:
# it runs as user 65532, answers /health through a published port, its HEALTHCHECK passes,
# one ingestion completes, `stop` exits 0, and a second container on the same /data volume still
# knows the ingestion (the non-root user could write its journal there). About 15 seconds.
# Not part of `make test`: it needs a container engine that can run containers.
# Usage: bash tests/container.sh
#   ENGINE=docker|podman (default: docker if its daemon answers, else podman)
#   ENGINE_FLAGS: global flags, e.g. '--runtime runc' for podman where crun cannot run
#   RUN_FLAGS: extra `run` flags, e.g. '--ulimit nofile=20000:20000 --ulimit nproc=32768:32768'
set -euo pipefail

if [ -z "${ENGINE:-}" ]; then
    if docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=podman; fi
fi
read -r -a engine <<<"$ENGINE ${ENGINE_FLAGS:-}"
read -r -a run_flags <<<"${RUN_FLAGS:-}"
image=ingestd:container-test
name=ingestd-container-test-$$
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
volume=$name-data
cleanup() {
    "${engine[@]}" rm -f "$name" "$name-2" "$name-3" >/dev/null 2>&1 || true
    "${engine[@]}" volume rm -f "$volume" >/dev/null 2>&1 || true
}
trap cleanup EXIT
current=$name
fail() {
    echo "container test: $*" >&2
    "${engine[@]}" logs "$current" >&2 || true
    exit 1
}

[ -x target/dist/ingestd ] || { echo "container test: run make dist first" >&2; exit 1; }
build_flags=()
# Podman drops HEALTHCHECK from OCI-format images.
[ "$ENGINE" = podman ] && build_flags=(--format docker)
"${engine[@]}" build "${build_flags[@]}" -q -t "$image" . >/dev/null
base=http://127.0.0.1:$port
start() {
    current=$1
    shift
    "${engine[@]}" run -d --name "$current" "${run_flags[@]}" -v "$volume:/data" -p "127.0.0.1:$port:8000" "$image" "$@" >/dev/null
    for _ in $(seq 50); do
        curl -sSf -m 1 "$base/health" >/dev/null 2>&1 && break
        sleep 0.2
    done
    [ "$(curl -sS "$base/health")" = '{"status":"ok"}' ] || fail "/health did not answer ok"
}
start "$name"
[ "$("${engine[@]}" inspect "$name" --format '{{.Config.User}}')" = 65532:65532 ] || fail "not running as 65532"
"${engine[@]}" exec "$name" /ingestd health || fail "ingestd health failed inside the container"
if [ "$ENGINE" = podman ]; then
    "${engine[@]}" healthcheck run "$name" || fail "the image's HEALTHCHECK failed"
fi

id=$(curl -sS -d '{"ids": [1, 2, 3, 4], "priority": "HIGH"}' "$base/ingest" \
    | sed -n 's/^{"ingestion_id":"\([0-9a-f-]*\)"}$/\1/p')
[ -n "$id" ] || fail "POST /ingest gave no ingestion_id"
# The second batch goes one interval (5 s) after the first.
status=
for _ in $(seq 100); do
    status=$(curl -sS "$base/status/$id")
    case $status in *'"status":"completed","batches"'*) break ;; esac
    sleep 0.1
done
case $status in *'"status":"completed","batches"'*) ;; *) fail "ingestion did not complete: $status" ;; esac

"${engine[@]}" stop -t 45 "$name" >/dev/null
[ "$("${engine[@]}" inspect "$name" --format '{{.State.ExitCode}}')" = 0 ] || fail "exit code not 0 after stop"
start "$name-2"
case $(curl -sS "$base/status/$id") in
    *'"status":"completed","batches"'*) ;;
    *) fail "a new container on the same volume does not know ingestion $id" ;;
esac
"${engine[@]}" stop -t 45 "$name-2" >/dev/null
# Flags given instead of the image's CMD (no --data-dir): the image has no /tmp, so the private
# socket goes where TMPDIR says.
start "$name-3" --interval 1s
"${engine[@]}" stop -t 45 "$name-3" >/dev/null
echo "container test: $ENGINE image $image ($("${engine[@]}" image inspect "$image" --format '{{.Size}}') bytes): user 65532, health, HEALTHCHECK, ingest, journal kept in volume $volume across containers, stop exit 0, flags instead of CMD"
