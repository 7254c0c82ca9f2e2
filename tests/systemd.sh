#!/usr/bin/env bash
# Checks contrib/ingestd.service as far as a machine without a running systemd allows:
# `systemd-analyze verify` accepts it (with ExecStart pointing at the built binary), and its
# ExecStart command, run the way the unit runs it (a non-root user whose only capabilities are
# the unit's AmbientCapabilities, no new privileges), starts with real-time pacing and writes its journal;
# the same without the capability falls back to ordinary scheduling. Needs root and setpriv;
# skips what the machine lacks, saying so. About 2 seconds.
# Usage: bash tests/systemd.sh [BINARY]   (default target/dist/ingestd)
set -euo pipefail

bin=$(realpath "${1:-target/dist/ingestd}")
unit=contrib/ingestd.service
work=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "systemd test: $*" >&2
    [ -f "$work/err" ] && cat "$work/err" >&2
    exit 1
}

exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
[ -n "$exec_start" ] || fail "no ExecStart in $unit"

# A fresh machine (CI) has no systemd-analyze; Debian's systemd package brings it.
if ! command -v systemd-analyze >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
if command -v systemd-analyze >/dev/null; then
    sed "s|^ExecStart=/usr/local/bin/ingestd|ExecStart=$bin|" "$unit" >"$work/ingestd.service"
    verify=$(systemd-analyze verify "$work/ingestd.service" 2>&1) || fail "systemd-analyze verify: $verify"
    [ -z "$verify" ] || fail "systemd-analyze verify: $verify"
else
    echo "systemd test: no systemd-analyze here; unit syntax not checked" >&2
fi

if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null; then
    echo "systemd test: needs root and setpriv to run as the unit's user; skipped" >&2
    exit 0
fi

# The unit's flags, with a free port and a state directory owned by the made-up user.
uid=61234
chmod 0755 "$work"
mkdir -m 0700 "$work/state"
chown "$uid:$uid" "$work/state"
read -r -a args <<<"${exec_start#/usr/local/bin/ingestd }"
for i in "${!args[@]}"; do
    case ${args[$i]} in
        127.0.0.1:8000) args[i]=127.0.0.1:0 ;;
        /var/lib/ingestd) args[i]=$work/state ;;
    esac
done

# The unit's RestrictAddressFamilies=, applied with a seccomp filter where libseccomp loads (the
# relay reaches tiny_http over a Unix socket: a list without AF_UNIX kept the service from starting).
families=$(sed -n 's/^RestrictAddressFamilies=//p' "$unit")
restrict=()
# The system's Python: the unit's user cannot reach one under root's home (pyenv).
py=/usr/bin/python3
if [ -n "$families" ]; then
    if [ -x "$py" ] && "$py" tests/address_families.py "$families" /bin/true 2>/dev/null; then
        # Where the unit's user may read them: a checkout may sit in a directory only root enters.
        cp tests/address_families.py "$work/address_families.py"
        cp "$bin" "$work/ingestd"
        bin=$work/ingestd
        restrict=("$py" "$work/address_families.py" "$families")
    else
        echo "systemd test: cannot emulate RestrictAddressFamilies= here (no libseccomp); not checked" >&2
    fi
fi

# Runs the unit's command as $uid with the given capability set; prints its scheduling lines.
run_as_unit_user() {
    local caps=$1
    : >"$work/out"
    setpriv --reuid="$uid" --regid="$uid" --clear-groups --no-new-privs \
        --inh-caps="-all$caps" --ambient-caps="-all$caps" --bounding-set="-all$caps" \
        "${restrict[@]}" "$bin" "${args[@]}" >"$work/out" 2>"$work/err" &
    pid=$!
    for _ in $(seq 100); do
        grep -q '^listening on' "$work/out" && break
        kill -0 "$pid" 2>/dev/null || fail "ingestd exited at start as uid $uid (caps '$caps')"
        sleep 0.1
    done
    grep -q '^listening on' "$work/out" || fail "no listening line within 10 s"
    # Both threads say how they are scheduled as they start, right after the listening line.
    for _ in $(seq 50); do
        [ "$(grep -c 'thread: .*scheduling' "$work/err")" = 2 ] && break
        sleep 0.1
    done
    kill -TERM "$pid"
    wait "$pid" || fail "exit status $? after SIGTERM"
    pid=
    grep -o '\(pacer\|worker\) thread: [a-z-]* scheduling' "$work/err" | sort
}

# The unit's ambient capabilities, in setpriv's spelling: CAP_SYS_NICE -> ,+sys_nice.
unit_caps=$(sed -n 's/^AmbientCapabilities=//p' "$unit" | tr 'A-Z' 'a-z' | sed 's/cap_/,+/g; s/ //g')
with_cap=$(run_as_unit_user "$unit_caps")
[ "$with_cap" = "pacer thread: real-time scheduling
worker thread: real-time scheduling" ] || fail "with CAP_SYS_NICE: $with_cap"
[ -s "$work/state/journal.v2" ] || fail "no journal in the state directory"
[ "$(stat -c %u "$work/state/journal.v2")" = "$uid" ] || fail "journal not owned by the service user"

without_cap=$(run_as_unit_user "")
[ "$without_cap" = "pacer thread: ordinary scheduling
worker thread: ordinary scheduling" ] || fail "without CAP_SYS_NICE: $without_cap"

echo "systemd test: $unit verifies; as uid $uid with the unit's ambient capabilities${restrict:+ and address families}: real-time pacing and a journal; without: ordinary scheduling"
