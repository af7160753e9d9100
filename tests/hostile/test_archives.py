"""Hostile backup archives: `gitopsd restore` (real and dry run) writes only below its targets,
refuses links, escapes and bombs before writing anything, verifies the archive's signature when
given the key, and turns any damage into one error naming the archive and the member (the
classes of Argo CD's GHSA-63qx-x74g-jcr7 / CVE-2022-24731: paths leaving their tree,
GHSA-6gcg-hp2x-q54h: links, and GHSA-jhqp-vf4w-rpwq: unbounded input)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest
import yaml

GITOPSD = str(Path(sys.executable).parent / "gitopsd")
CONFIG = yaml.safe_dump(
    {"applications": [], "settings": {"stateDir": "state", "cacheDir": "cache"}}
).encode()
Entry = tuple[str, bytes] | tarfile.TarInfo


def tar_gz(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buf.getvalue()


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    return info, data


def backup(
    members: list[Entry], *, manifest: dict[str, object] | None = None, config: bytes = CONFIG
) -> bytes:
    """A gitopsd backup as an attacker would build it: every member listed with its checksum
    in manifest.json (so checksums alone pass), the manifest first."""
    entries = [regular("config/gitopsd.yaml", config)]
    for m in members:
        entries.append(regular(*m) if isinstance(m, tuple) else (m, b""))
    files = {info.name: hashlib.sha256(data).hexdigest() for info, data in entries}
    doc = {
        "format": "gitopsd-backup",
        "version": 1,
        "createdAt": "2026-01-01T00:00:00Z",
        "createdBy": "an attacker",
        "configFile": "gitopsd.yaml",
        "credentialFiles": [],
        "secrets": {},
        "notes": [],
        "files": files,
        **(manifest or {}),
    }
    return tar_gz([regular("manifest.json", json.dumps(doc).encode()), *entries])


def restore(archive: Path, dest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GITOPSD, "restore", str(archive), "--to", str(dest), "--no-cluster", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(root.rglob("*"))
    }


def refused(r: subprocess.CompletedProcess[str], archive: Path, member: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert str(archive) in r.stderr and member in r.stderr, r.stderr


def test_a_dry_run_cannot_overwrite_a_file_through_a_config_member(tmp_path: Path) -> None:
    """`config//ABS/PATH` (an empty component that becomes absolute once `config/` is
    stripped) is refused; the dry run leaves the named file and everything else untouched."""
    victim = tmp_path / "victim.txt"
    victim.write_text("original\n")
    member = f"config/{victim}"
    path = tmp_path / "evil.tar.gz"
    path.write_bytes(backup([(member, b"overwritten\n")]))
    before = tree(tmp_path)
    r = restore(path, tmp_path / "out", "--dry-run")
    assert victim.read_text() == "original\n"
    refused(r, path, member)
    assert tree(tmp_path) == before


def test_a_restore_cannot_create_a_file_through_a_last_good_member(tmp_path: Path) -> None:
    """`last-good//ABS/PATH` is refused before anything is written: no planted file, no
    restored directory."""
    planted = tmp_path / "planted"
    member = f"last-good/{planted}"
    path = tmp_path / "evil.tar.gz"
    path.write_bytes(backup([(member, b"#!/bin/sh\n")]))
    before = tree(tmp_path)
    r = restore(path, tmp_path / "out")
    assert not planted.exists()
    refused(r, path, member)
    assert tree(tmp_path) == before


def test_an_unsigned_archive_cannot_choose_where_state_is_written(tmp_path: Path) -> None:
    """The archived config's stateDir names a directory outside the restored tree and the
    archive is not signed: restore refuses, naming it, and writes nothing there until the
    operator confirms it with --state-dir."""
    elsewhere = tmp_path / "elsewhere"
    config = yaml.safe_dump({"applications": [], "settings": {"stateDir": str(elsewhere)}})
    path = tmp_path / "evil.tar.gz"
    members: list[Entry] = [("last-good/evil.json.gz", b"x"), ("state/app.json", b"{}")]
    path.write_bytes(backup(members, config=config.encode()))
    for args in (("--dry-run",), ()):
        r = restore(path, tmp_path / "out", *args)
        assert r.returncode == 2, r.stdout
        assert f"keeps state in {elsewhere}" in r.stderr and "--state-dir" in r.stderr, r.stderr
        assert not elsewhere.exists() and not (tmp_path / "out").exists()
    r = restore(path, tmp_path / "out", "--state-dir", str(elsewhere))
    assert r.returncode == 0, r.stderr
    assert (elsewhere / "last-good" / "evil.json.gz").read_bytes() == b"x"


def _link(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("member", "shown"),
    [
        (("/tmp/gitopsd-abs-member", b"x"), "/tmp/gitopsd-abs-member"),
        (("config/../../escaped", b"x"), "config/../../escaped"),
        (("config/./apps/x.yaml", b"x"), "config/./apps/x.yaml"),
        (("config/apps//x.yaml", b"x"), "config/apps//x.yaml"),
        (("state/a/../../b.json", b"{}"), "state/a/../../b.json"),
        (("state/sub/x.json", b"{}"), "state/sub/x.json"),
        (("secrets/0", b"x"), "secrets/0"),
        (("config/nul\0.yaml", b"x"), "config/nul"),
        (_link("config/apps", tarfile.SYMTYPE, "/etc"), "config/apps"),
        (_link("config/hard.yaml", tarfile.LNKTYPE, "config/gitopsd.yaml"), "config/hard.yaml"),
        (_link("config/fifo", tarfile.FIFOTYPE, ""), "config/fifo"),
    ],
    ids=[
        "absolute",
        "dotdot",
        "dot",
        "empty",
        "state-dotdot",
        "state-nested",
        "secret-unmapped",
        "nul",
        "symlink",
        "hardlink",
        "fifo",
    ],
)
def test_a_member_that_leaves_or_bends_the_tree_is_refused_and_nothing_is_written(
    tmp_path: Path, member: Entry, shown: str
) -> None:
    """Absolute paths, `..`, `.` and empty components, members nested where one file is
    expected, secrets without a mapping, NUL bytes, links and special files: each refused
    naming the archive and the member, for the real run and the dry run alike."""
    path = tmp_path / "evil.tar.gz"
    try:
        path.write_bytes(backup([member]))
    except ValueError:
        pytest.skip("tarfile cannot write this name")
    before = tree(tmp_path)
    for args in ((), ("--dry-run",)):
        r = restore(path, tmp_path / "out", *args)
        refused(r, path, shown)
        assert tree(tmp_path) == before, args
    assert not Path("/tmp/gitopsd-abs-member").exists()


def _max_rss_kib(argv: list[str]) -> tuple[int, int, str]:
    """Run `argv`; its exit code, its own peak RSS (KiB) and its stderr."""
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as p:
        assert p.stderr is not None
        err = p.stderr.read().decode()
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, usage.ru_maxrss, err


@pytest.mark.parametrize(("declared", "max_rss_mib"), [(True, 200), (False, 400)])
def test_a_gzip_bomb_is_refused_before_it_is_unpacked(
    tmp_path: Path, declared: bool, max_rss_mib: int
) -> None:
    """1.5 GiB of zeros in a ~1.5 MB archive (48 listed members of 32 MiB, checksums right):
    refused, naming the archive, before anything is written. With the sizes in the manifest
    (as gitopsd writes it) before any member is unpacked; without (an older archive) once the
    members' declared sizes pass the limit; either way the restore's own peak RSS stays far
    below the unpacked size."""
    block = bytes(32 << 20)
    digest = hashlib.sha256(block).hexdigest()
    names = [f"last-good/{i}.json.gz" for i in range(48)]
    manifest: dict[str, object] = {
        "format": "gitopsd-backup",
        "version": 1,
        "configFile": "gitopsd.yaml",
        "files": dict.fromkeys(names, digest),
    }
    if declared:
        manifest["sizes"] = dict.fromkeys(names, len(block))
    info, data = regular("manifest.json", json.dumps(manifest).encode())
    pieces = [_gzip(info.tobuf(tarfile.PAX_FORMAT) + data + bytes(-len(data) % 512))]
    # One member's compressed bytes reused 48 times (gzip allows concatenated members), so the
    # test does not compress 1.5 GiB.
    body = _gzip(block)
    for name in names:
        info, _ = regular(name, b"")
        info.size = len(block)
        pieces += [_gzip(info.tobuf(tarfile.PAX_FORMAT)), body]
    pieces.append(_gzip(bytes(1024)))
    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(b"".join(pieces))
    assert path.stat().st_size < 2 << 20
    before = tree(tmp_path)
    code, rss, err = _max_rss_kib([GITOPSD, "restore", str(path), "--to", str(tmp_path / "o")])
    assert rss < max_rss_mib * 1024, f"peak RSS {rss // 1024} MiB"
    assert code == 2, err
    assert str(path) in err and "unpacked" in err and "Traceback" not in err, err
    assert tree(tmp_path) == before


def _gzip(data: bytes) -> bytes:
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    return gz.compress(data) + gz.flush()


def test_too_many_members_are_refused(tmp_path: Path) -> None:
    """An archive of 30,000 empty members (each listed) is refused by the member cap before
    their data are read, naming the archive."""
    members: list[Entry] = [(f"last-good/{i}.json.gz", b"") for i in range(30_000)]
    path = tmp_path / "many.tar.gz"
    path.write_bytes(backup(members))
    r = restore(path, tmp_path / "out", "--dry-run")
    assert r.returncode == 2, r.stdout
    assert str(path) in r.stderr and "members" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_a_corrupted_stream_is_one_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    """A flipped byte that makes zlib fail mid-member (`invalid distance too far back`): exit
    2, one line naming the archive and the member being read, no traceback, nothing written."""
    rnd = random.Random(1)
    text = "\n".join(f"key{i}: value {rnd.random()}" for i in range(3000)).encode()
    good = backup([("state/x.json", text)])
    for i in range(len(good) // 10, len(good) - 8):
        bad = good[:i] + bytes([good[i] ^ 0xFF]) + good[i + 1 :]
        try:
            with tarfile.open(fileobj=io.BytesIO(bad), mode="r:gz") as tar:
                for info in tar:
                    f = tar.extractfile(info)
                    if f is not None:
                        f.read()
        except zlib.error:
            break
        except Exception:
            continue
    else:
        pytest.fail("no flipped byte made zlib fail")
    path = tmp_path / "flipped.tar.gz"
    path.write_bytes(bad)
    before = tree(tmp_path)
    r = restore(path, tmp_path / "out")
    refused(r, path, "state/x.json")
    assert tree(tmp_path) == before


def test_a_signed_archive_verifies_and_a_forged_or_unsigned_one_is_refused(
    tmp_path: Path,
) -> None:
    """`backup --key-file` signs the manifest (HMAC-SHA256 with a key derived from the backup
    key); `restore --key-file` verifies it and refuses an archive whose members were changed
    (manifest rewritten to match) or whose signature was removed; without a key the restore
    says it checked no signature."""
    cfg = tmp_path / "src" / "gitopsd.yaml"
    cfg.parent.mkdir()
    cfg.write_bytes(CONFIG)
    key = tmp_path / "backup.key"
    run = [GITOPSD, "backup"]
    assert subprocess.run([*run, "--new-key", str(key)], timeout=60).returncode == 0
    good = tmp_path / "good.tar.gz"
    r = subprocess.run(
        [*run, "-c", str(cfg), "-o", str(good), "--key-file", str(key)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    r = restore(good, tmp_path / "ok", "--dry-run", "--key-file", str(key))
    assert r.returncode == 0, r.stderr
    assert "signature: verified" in r.stdout, r.stdout
    r = restore(good, tmp_path / "ok", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "signature: not checked" in r.stdout, r.stdout

    with tarfile.open(good, mode="r:gz") as tar:
        entries = [(i, tar.extractfile(i).read()) for i in tar]  # type: ignore[union-attr]
    names = [i.name for i, _ in entries]
    assert names[:2] == ["manifest.json", "manifest.sig"], names
    evil = yaml.safe_dump({"applications": ["/etc/*.yaml"], "settings": {}}).encode()
    forged: list[tuple[tarfile.TarInfo, bytes]] = []
    manifest = json.loads(entries[0][1])
    manifest["files"]["config/gitopsd.yaml"] = hashlib.sha256(evil).hexdigest()
    for info, data in entries:
        if info.name == "manifest.json":
            data = json.dumps(manifest).encode()
        if info.name == "config/gitopsd.yaml":
            data = evil
        forged.append(regular(info.name, data))
    for label, members, expected in (
        ("changed", forged, "signature does not match"),
        ("unsigned", [e for e in forged if e[0].name != "manifest.sig"], "is not signed"),
    ):
        path = tmp_path / f"{label}.tar.gz"
        path.write_bytes(tar_gz(members))
        before = tree(tmp_path)
        for args in ((), ("--dry-run",)):
            r = restore(path, tmp_path / f"out-{label}", "--key-file", str(key), *args)
            assert r.returncode == 2, (label, r.stdout)
            assert str(path) in r.stderr and expected in r.stderr, (label, r.stderr)
            assert tree(tmp_path) == before, label
