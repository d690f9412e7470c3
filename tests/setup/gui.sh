#!/usr/bin/env bash
# tests/setup/gui.sh — what the browser tests (tests/gui/) need: Debian's chromium and
# playwright-core from npm. Idempotent and quick when both are already there. Never downloads a
# browser build of its own (playwright's installer cannot work here): chromium comes from apt.
set -euo pipefail
cd "$(dirname "$0")/../gui"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if ((${#need[@]})); then
  echo "gui setup: installing ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
if [ ! -d node_modules/playwright-core ]; then
  # The lock file pins the exact version; PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD keeps any install hook
  # from trying to fetch a browser.
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2
fi
