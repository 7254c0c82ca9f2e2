#!/usr/bin/env bash
# Installs wrk from Debian if it is missing.
set -euo pipefail
command -v wrk >/dev/null && exit 0
SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq wrk bc >/dev/null
