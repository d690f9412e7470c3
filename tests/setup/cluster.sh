#!/bin/sh
# tests/setup/cluster.sh — test_cluster and tools/cluster run a real etcd (etcd-server: the v3 JSON
# gateway that cluster mode talks to) and a real HAProxy (haproxy: the load balancer in front of the
# nodes, health-checking /api/v1/health), both from Debian 12. Idempotent and quick when both are
# installed.
set -e
command -v etcd >/dev/null 2>&1 && command -v haproxy >/dev/null 2>&1 && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends etcd-server haproxy >/dev/null
