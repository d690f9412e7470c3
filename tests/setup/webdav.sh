#!/bin/sh
# tests/setup/webdav.sh — the WebDAV tests' clients: litmus (the conformance suite), cadaver
# (a scripted session) and rclone (its webdav remote; tests/setup/ftp.sh installs it too);
# apache2 is the peer bench/webdav runs side by side (mod_dav). Idempotent and quick when all
# are installed.
set -e
command -v litmus >/dev/null 2>&1 && command -v cadaver >/dev/null 2>&1 && command -v rclone >/dev/null 2>&1 &&
  command -v apache2 >/dev/null 2>&1 && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq litmus cadaver rclone apache2 >/dev/null
