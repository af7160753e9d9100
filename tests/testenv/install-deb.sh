#!/usr/bin/env bash
# Installs one binary from a Debian package for the tests, cached outside the repository and
# keyed by the package version: the package is downloaded (`apt-get download`) and unpacked
# (`dpkg-deb -x`), not installed, so no service starts and no root is needed once the index is
# there. Skips all work when the binary is already there.
#
#   install-deb.sh PACKAGE PATH-IN-PACKAGE      e.g. install-deb.sh prometheus usr/bin/prometheus
#
# Progress goes to stderr; the absolute path of the binary is the last line on stdout.
set -euo pipefail

pkg="$1"
rel="$2"
cache="${GITOPSD_TESTENV_CACHE:-$HOME/.cache/gitopsd-testenv}"
log() { echo "testenv: $*" >&2; }

candidate() { apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}'; }
version="$(candidate)"
if [[ -z "$version" || "$version" == "(none)" ]] && [[ "$(id -u)" == 0 ]]; then
  log "refreshing Debian's package index for $pkg"
  apt-get update -qq >&2 || true
  version="$(candidate)"
fi
if [[ -z "$version" || "$version" == "(none)" ]]; then
  log "Debian's $pkg package is not available (apt-cache policy $pkg)"
  exit 1
fi
dir="$cache/tools/$pkg-${version//[^A-Za-z0-9.+-]/_}"
bin="$dir/$rel"
if [[ -x "$bin" ]]; then
  log "$pkg $version cached at $bin"
else
  mkdir -p "$dir"
  tmp="$(mktemp -d "$dir/.install.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  log "downloading Debian's $pkg $version"
  (cd "$tmp" && apt-get download -qq "$pkg=$version" >&2)
  dpkg-deb -x "$tmp"/"$pkg"_*.deb "$tmp/root"
  mkdir -p "$(dirname "$bin")"
  mv "$tmp/root/$rel" "$bin"
  log "$pkg installed at $bin"
fi
"$bin" --version 2>&1 | head -1 >&2 || true
echo "$bin"
