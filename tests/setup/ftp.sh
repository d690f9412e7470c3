#!/bin/sh
# tests/setup/ftp.sh — the FTP tests' clients: lftp and rclone (test_ftp_clients.py syncs
# with rclone's FTP remote); curl and Python's ftplib are already present. Idempotent and
# quick when both are installed.
set -e
command -v lftp >/dev/null 2>&1 && command -v rclone >/dev/null 2>&1 && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq lftp rclone >/dev/null
