#!/usr/bin/env bash
# Installs a real Prometheus server for the analysis tests, from Debian's `prometheus` package,
# cached outside the repository and keyed by the package version. The package is downloaded
# (`apt-get download`) and unpacked (`dpkg-deb -x`), not installed: no service is started, no
# root is needed once the index is there. Skips all work when the binary is already there.
#
# Progress goes to stderr; the absolute path of the prometheus binary is the last line on
# stdout:   PROMETHEUS=$(tests/testenv/install-prometheus.sh | tail -n1)
set -euo pipefail

cache="${GITOPSD_TESTENV_CACHE:-$HOME/.cache/gitopsd-testenv}"
log() { echo "testenv: $*" >&2; }

version="$(apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}')"
if [[ -z "$version" || "$version" == "(none)" ]]; then
  if [[ "$(id -u)" == 0 ]]; then
    log "refreshing Debian's package index for prometheus"
    apt-get update -qq >&2 || true
    version="$(apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}')"
  fi
fi
if [[ -z "$version" || "$version" == "(none)" ]]; then
  log "Debian's prometheus package is not available (apt-cache policy prometheus)"
  exit 1
fi
dir="$cache/tools/prometheus-${version//[^A-Za-z0-9.+-]/_}"
bin="$dir/usr/bin/prometheus"
if [[ -x "$bin" ]]; then
  log "prometheus $version cached at $bin"
else
  mkdir -p "$dir"
  tmp="$(mktemp -d "$dir/.install.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  log "downloading Debian's prometheus $version"
  (cd "$tmp" && apt-get download -qq "prometheus=$version" >&2)
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
  mkdir -p "$dir/usr/bin"
  mv "$tmp/root/usr/bin/prometheus" "$bin"
  log "prometheus installed at $bin"
fi
"$bin" --version 2>&1 | head -1 >&2
echo "$bin"
