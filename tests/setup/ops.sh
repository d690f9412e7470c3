#!/bin/sh
# tests/setup/ops.sh — the operations tests' tools: promtool (Debian ships it in the
# prometheus package; --no-install-recommends keeps the server's extras out) checks
# /metrics in test_metrics.py, and fail2ban-regex (package fail2ban) runs the shipped
# filters of tools/fail2ban against a real run's logs in test_logs.py. Idempotent and quick
# when both are installed.
set -e
command -v promtool >/dev/null 2>&1 && command -v fail2ban-regex >/dev/null 2>&1 && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
  prometheus fail2ban >/dev/null
