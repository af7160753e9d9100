"""A hand-made git tree cannot plant a symlink that reads host files through the checkout."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from daemon.render import Renderer, RenderRequest
from daemon.settings import Source
from daemon.sources.git import RepoCache

# Builds a tree holding both a symlink `dN -> .` and a directory `dN/` at every level, so a
# naive extractor creates the final `leak` link higher up than its path says (Argo CD-style
# path traversal). Needs only git.
BUILD = r"""
set -e
export GIT_DIR="$1"
git init -q --bare "$GIT_DIR"
N=8
dot=$(printf '.' | git hash-object -w --stdin)
target=$(printf '../%.0s' $(seq 1 $((N+1))); printf 'SECRET_PATH')
out=$(printf '%s' "$target" | git hash-object -w --stdin)
t=$(printf "120000 blob $out\tleak\n" | git mktree)
t=$(printf "040000 tree $t\tchart\n" | git mktree)
for i in $(seq $N -1 2); do
  t=$(printf "120000 blob $dot\td$i\n040000 tree $t\td$i\n" | git mktree --missing)
done
chartyaml=$(printf 'apiVersion: v2\nname: c\nversion: 0.1.0\n' | git hash-object -w --stdin)
tpl=$(printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: leaked}\ndata:\n  host: {{ .Files.Get "leak" | quote }}\n' | git hash-object -w --stdin)
templates=$(printf "100644 blob $tpl\tcm.yaml\n" | git mktree)
chart=$(printf "100644 blob $chartyaml\tChart.yaml\n040000 tree $templates\ttemplates\n" | git mktree)
root=$(printf "040000 tree $chart\tchart\n120000 blob $dot\td1\n040000 tree $t\td1\n" | git mktree --missing)
c=$(GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@x.invalid GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@x.invalid git commit-tree $root -m x)
git update-ref refs/heads/main $c
"""


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
