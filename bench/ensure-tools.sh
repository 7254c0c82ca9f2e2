#!/usr/bin/env bash
# Installs the load generators from Debian if they are missing: wrk, and h2load (nghttp2-client),
# whose per-request log gives the latency figures that have goals.
set -euo pipefail
command -v wrk >/dev/null && command -v h2load >/dev/null && command -v bc >/dev/null && exit 0
SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq wrk bc nghttp2-client >/dev/null
