#!/usr/bin/env bash
# Debian's Chromium for the browser test (tests/test_explorer_browser.py), when it is missing.
# Idempotent and never fatal: it installs only as root with apt-get, and if it cannot, it says
# so and the test skips with its reason. Set GRACE_INSTALL_CHROMIUM=0 to leave the system alone.
set -uo pipefail
say() { echo "[chromium] $*"; }
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "${GRACE_INSTALL_CHROMIUM:-1}" = 0 ]; then
  say "/usr/bin/chromium missing, GRACE_INSTALL_CHROMIUM=0: the browser test will skip"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  say "/usr/bin/chromium missing and no apt-get here: the browser test will skip"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  say "/usr/bin/chromium missing and not root (run: sudo apt-get install chromium): the browser test will skip"
  exit 0
fi
say "installing Debian's chromium for the browser test (apt-get)"
log=$(mktemp)
export DEBIAN_FRONTEND=noninteractive
if timeout 900 apt-get update -qq >"$log" 2>&1 \
   && timeout 900 apt-get install -y -qq chromium >>"$log" 2>&1 && [ -x /usr/bin/chromium ]; then
  say "installed: $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
else
  say "could not install chromium (apt-get failed; last lines below): the browser test will skip"
  tail -n 5 "$log" | sed 's/^/[chromium]   /'
fi
rm -f "$log"
exit 0
