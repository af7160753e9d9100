#!/usr/bin/env bash
# Debian's Chromium for the status-page browser test (tests/integration/test_status_page.py),
# driven headless by Playwright. Unlike the single-binary tools, Chromium needs its libraries,
# so it is installed with apt (as root, as in CI); prints the binary's path last.
set -euo pipefail
log() { echo "testenv: $*" >&2; }
bin="$(command -v chromium || true)"
if [[ -z "$bin" ]]; then
  if [[ "$(id -u)" != 0 ]]; then
    log "chromium is not installed and installing it needs root: apt-get install chromium"
    exit 1
  fi
  log "installing Debian's chromium"
  (apt-get install -y -qq chromium >&2 || (apt-get update -qq >&2 && apt-get install -y -qq chromium >&2))
  bin="$(command -v chromium)"
fi
log "chromium at $bin ($("$bin" --version 2>/dev/null || echo '?'))"
echo "$bin"
