#!/usr/bin/env bash
# bench/setup.sh — install the peers the benchmarks run against: nginx (Debian's
# nginx-light has the WebDAV module for PUT) and curl. Idempotent; quick when installed.
set -euo pipefail
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # policy-rc.d or not: the package must not leave a system nginx running on port 80.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
