"""A hand-made git tree cannot plant a symlink that reads host files through the checkout."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from daemon.render import Renderer, RenderRequest
from daemon.settings import Source
from daemon.sources.git import RepoCache

# tests/fixtures/evil_tree.sh builds the malicious tree (Argo CD-style path traversal).
BUILD = (Path(__file__).resolve().parents[1] / "fixtures" / "evil_tree.sh").read_text()


async def test_duplicate_entry_symlink_trick_cannot_leak_host_files(tmp_path: Path) -> None:
    """Nothing in the checkout resolves outside it, and helm's .Files.Get reads no host file."""
    secret = tmp_path / "host-secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    bare = tmp_path / "evil.git"
    script = BUILD.replace("SECRET_PATH", str(secret).lstrip("/"))
    subprocess.run(["bash", "-c", script, "build", str(bare)], check=True, capture_output=True)
    cache = RepoCache(tmp_path / "cache", timeout=30)
    url = f"file://{bare}"
    resolved = await cache.resolve(url, "main")
    root = await cache.checkout(url, resolved.sha)
    real_root = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            assert os.path.realpath(p).startswith(real_root + os.sep), f"{p} escapes the checkout"
    renderer = Renderer(timeout=30)
    req = RenderRequest(
        sha=resolved.sha,
        source=Source(repo_url=url, path="chart"),
        app_name="evil",
        namespace="default",
    )
    for path in (
        "chart",
        *(
            f"d1/{'/'.join(f'd{i}' for i in range(2, k + 1))}/chart".replace("//", "/")
            for k in range(1, 9)
        ),
    ):
        req = RenderRequest(
            sha=resolved.sha,
            source=Source(repo_url=url, path=path),
            app_name="evil",
            namespace="default",
        )
        try:
            out = await renderer.render(req, root)
        except Exception:
            continue
        for m in out.manifests:
            assert "TOP-SECRET-VALUE" not in str(m.body), f"host file leaked via {path}"


@pytest.mark.parametrize("link", ["/etc/passwd", "../../../../../../etc/passwd"])
async def test_plain_outside_symlinks_are_not_created(tmp_path: Path, link: str) -> None:
    """An ordinary symlink pointing outside the repository is not created in the checkout."""
    work = tmp_path / "w"
    work.mkdir()
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@x.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@x.invalid",
    }
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=work, check=True)
    (work / "ok.yaml").write_text("a: 1\n")
    (work / "evil").symlink_to(link)
    subprocess.run(["git", "add", "-A"], cwd=work, check=True)
    subprocess.run(["git", "commit", "-qm", "x"], cwd=work, check=True, env=env)
    cache = RepoCache(tmp_path / "cache", timeout=30)
    url = f"file://{work}"
    resolved = await cache.resolve(url, "main")
    root = await cache.checkout(url, resolved.sha)
    assert not os.path.lexists(root / "evil")
    assert (root / "ok.yaml").exists()
