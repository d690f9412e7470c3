#!/usr/bin/env bash
# tests/setup/s3.sh — the S3 peer of the s3 module's tests (tests/integration/test_extstore.py):
# s3rver from npm, pinned by tests/s3rver/package-lock.json, installed into tests/s3rver/node_modules
# (node and npm from Debian, as tests/setup/tus.sh does). Idempotent and quick when installed.
set -euo pipefail
cd "$(dirname "$0")/../s3rver"
missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
if [ ! -f node_modules/s3rver/package.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-fund --no-audit --loglevel=error >&2
fi
