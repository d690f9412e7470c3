#!/usr/bin/env bash
# tests/setup/tus.sh — what the tus/zip tests need beyond tools/dev: node + npm (Debian),
# tus-js-client (npm, pinned by tests/node/package-lock.json), unzip (checks zip output),
# and zlib1g-dev, which kernel/zip.c builds against (crc32) until tools/dev's BUILD_PKGS lists it.
# Idempotent and quick when everything is there.
set -euo pipefail
cd "$(dirname "$0")/../node"
missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v unzip >/dev/null 2>&1 || missing+=(unzip)
dpkg-query -W -f='${Status}' zlib1g-dev 2>/dev/null | grep -q "install ok installed" || missing+=(zlib1g-dev)
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
if [ ! -f node_modules/tus-js-client/package.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-fund --no-audit --loglevel=error >&2
fi
