#!/usr/bin/env bash
# bench/ftp/setup.sh — install the peer the FTP benchmark runs against: vsftpd (Debian), plus
# curl. Idempotent; quick when installed. The package's own service is never used: the benchmark
# starts vsftpd standalone with a temporary config (bench/ftp/bench.py), and the install keeps
# the system instance from starting (policy-rc.d answers "not now").
set -euo pipefail
missing=()
command -v vsftpd >/dev/null 2>&1 || [ -x /usr/sbin/vsftpd ] || missing+=(vsftpd)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
