#!/usr/bin/env bash
# Installs a real OCI registry (CNCF distribution) for the OCI chart tests, from Debian's
# `docker-registry` package, cached outside the repository and keyed by the package version.
# The package is downloaded (`apt-get download`) and unpacked (`dpkg-deb -x`), not installed:
# no service is started, no root is needed once the index is there. Skips all work when the
# binary is already there.
#
# Progress goes to stderr; the absolute path of the docker-registry binary is the last line on
# stdout:   PROMETHEUS=$(tests/testenv/install-docker-registry.sh | tail -n1)
set -euo pipefail

cache="${GITOPSD_TESTENV_CACHE:-$HOME/.cache/gitopsd-testenv}"
log() { echo "testenv: $*" >&2; }

version="$(apt-cache policy docker-registry 2>/dev/null | awk '/Candidate:/ {print $2}')"
if [[ -z "$version" || "$version" == "(none)" ]]; then
  if [[ "$(id -u)" == 0 ]]; then
    log "refreshing Debian's package index for docker-registry"
    apt-get update -qq >&2 || true
    version="$(apt-cache policy docker-registry 2>/dev/null | awk '/Candidate:/ {print $2}')"
  fi
fi
if [[ -z "$version" || "$version" == "(none)" ]]; then
  log "Debian's docker-registry package is not available (apt-cache policy docker-registry)"
  exit 1
fi
dir="$cache/tools/docker-registry-${version//[^A-Za-z0-9.+-]/_}"
bin="$dir/usr/bin/docker-registry"
if [[ -x "$bin" ]]; then
  log "docker-registry $version cached at $bin"
else
  mkdir -p "$dir"
  tmp="$(mktemp -d "$dir/.install.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  log "downloading Debian's docker-registry $version"
  (cd "$tmp" && apt-get download -qq "docker-registry=$version" >&2)
  dpkg-deb -x "$tmp"/docker-registry_*.deb "$tmp/root"
  mkdir -p "$dir/usr/bin"
  mv "$tmp/root/usr/bin/docker-registry" "$bin"
  log "docker-registry installed at $bin"
fi
"$bin" --version 2>&1 | head -1 >&2 || true
echo "$bin"
