#!/usr/bin/env bash
# tests/setup/files.sh — the file service needs ICU (NFC normalisation of names) to build.
# Idempotent and quick when already installed.
set -euo pipefail
if ! dpkg-query -W -f='${Status}' libicu-dev 2>/dev/null | grep -q "install ok installed"; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends libicu-dev >&2
fi
