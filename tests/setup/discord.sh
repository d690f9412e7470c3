#!/usr/bin/env bash
# tests/setup/discord.sh — test_discord signs Discord interactions with a real Ed25519 key
# (python3-cryptography, Debian). Idempotent and quick when it is there.
set -euo pipefail
if ! python3 -c 'from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey' 2>/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-cryptography >&2
fi
