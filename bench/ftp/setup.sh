#!/usr/bin/env bash
# bench/ftp/setup.sh — what the FTP benchmark needs: vsftpd (Debian), curl, lftp and openssl,
# and the local account vsftpd logs in (mbytebench, with the benchmark's password, checked by
# vsftpd through PAM, as MByte checks its admin's), so both servers do the same kind of login.
# Idempotent; quick when everything is there. The package's own service is never used: the
# benchmark starts vsftpd standalone with a temporary config (bench/ftp/bench.py), and the
# install keeps the system instance from starting (policy-rc.d answers "not now").
set -euo pipefail
missing=()
command -v vsftpd >/dev/null 2>&1 || [ -x /usr/sbin/vsftpd ] || missing+=(vsftpd)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v lftp >/dev/null 2>&1 || missing+=(lftp)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ((${#missing[@]})); then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
# The account: a shell from /etc/shells (Debian's PAM config for vsftpd checks it), a home that
# exists (vsftpd enters it before local_root), no login on the console (locked until the
# password below, which only this benchmark uses). The password is bench.py's PASSWORD, hashed
# with SHA-512 crypt at 1000 rounds (about 0.5 ms to check): Debian's default, yescrypt, took
# 0.2-0.9 s per login, and curl logs in for every transfer, while MByte checks its argon2id hash
# once and then remembers the match (login_cache_ttl). Both check a password; neither pays much.
user=mbytebench
home=/var/lib/mbytebench
if ! id "$user" >/dev/null 2>&1; then
  $SUDO useradd --system --home-dir "$home" --shell /bin/sh "$user"
fi
$SUDO mkdir -p "$home"
pw=$(cd "$(dirname "$0")/.." && python3 -c 'from bench import PASSWORD; print(PASSWORD)')
echo "$user:$pw" | $SUDO chpasswd -c SHA512 -s 1000
