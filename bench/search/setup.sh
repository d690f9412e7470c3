#!/usr/bin/env bash
# bench/search/setup.sh — what bench/search/run.py needs beyond the build: ripgrep (the peer) and
# man-db's sources (/usr/share/man) and package documentation (/usr/share/doc), which Debian ships.
set -euo pipefail
if ! command -v rg >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends ripgrep >&2
fi
