"""`gitopsd restore`: put a backup back so that a daemon started on the result converges
without redoing anything.

The whole archive is read and checked first (`archive.unpack`: the manifest first, the
signature when a key is given, sizes and member count bounded, every member's path and type).
Then the config tree is written as a new directory together with the credential files the
archive holds (opened with the key): a file that lived below the config's directory comes back
at the same relative path, any other under `_external/credentials/`, and the settings file's
references to it are rewritten (comments and layout kept). Before the tree is moved into place
it must load, and every credential file it names must exist (in the tree, or on this host for
an absolute path the archive does not hold). Then the state records go where the restored
config keeps state (a different existing record is never replaced), the last good renders next
to them, and the inventories that are missing into their clusters. Every file is written below
its target directory through `files.write_under`; `dry_run` writes only into a private scratch
directory (to load the config from) and names the real paths it would write.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from daemon.dr import archive
from daemon.dr.backup import credential_files
from daemon.dr.files import components, opened_dir, write_files, write_tree, write_under
from daemon.dr.paths import rewrite_references
from daemon.errors import ConfigError, GitopsdError
from daemon.settings import Config, load

MAX_ARCHIVE = archive.MAX_TOTAL  # compressed, the archive can only be smaller than unpacked


def read(path: str, *, key: bytes | None) -> tuple[archive.Contents, dict[str, Any]]:
    """The archive at `path`, read (at most MAX_ARCHIVE bytes) and checked."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_ARCHIVE + 1)
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=path) from e
    if len(data) > MAX_ARCHIVE:
        raise ConfigError(f"larger than {MAX_ARCHIVE} bytes: refusing it", file=path)
    return archive.unpack(data, name=path, key=key)


@dataclass
class Restored:
    """What a restore did (or, dry-run, would do)."""

    lines: list[str] = field(default_factory=list)


def _members(contents: archive.Contents, prefix: str) -> dict[str, bytes]:
    return {p.removeprefix(prefix): d for p, d in contents.members.items() if p.startswith(prefix)}


def place_credentials(
    contents: archive.Contents, opened: dict[str, bytes], taken: set[str]
) -> dict[str, tuple[str, bytes]]:
    """Original path -> (path in the restored tree, content) for each credential file the
    archive holds and the key opened."""
    base = PurePosixPath(contents.config_dir)
    placed: dict[str, tuple[str, bytes]] = {}
    for member, original in sorted(contents.secrets.items()):
        if member not in opened:
            continue
        p = PurePosixPath(original)
        if not p.is_absolute():
            raise ConfigError(f"manifest.json maps {member} to {original}: not an absolute path")
        if base.is_absolute() and p.is_relative_to(base):
            rel = str(p.relative_to(base))
        else:
            rel = f"_external/credentials/{member.removeprefix('secrets/')}/{p.name}"
        components(rel, what=f"manifest.json: {member} ({original})")
        if rel in taken:
            raise ConfigError(f"{member} ({original}) would replace config/{rel} of the archive")
        taken.add(rel)
        placed[original] = (rel, opened[member])
    return placed


def _complete(
    tree: Path, dest: Path, contents: archive.Contents, *, keyed: bool, state_dir: str
) -> list[str]:
    """Check that the config at `tree` loads, keeps state where this restore may write, and
    finds every credential file it names (in the tree, or on this host); lines about the ones
    used where they are."""
    config = load(tree / contents.config_file)
    root = tree.resolve()
    state = Path(config.settings.state_dir)
    writes_state = any(m.startswith(("state/", "last-good/")) for m in contents.members)
    trusted = bool(state_dir) or contents.signature == "verified"
    if writes_state and not trusted and not state.is_relative_to(root):
        # An unsigned config could name any directory: the operator confirms it.
        raise ConfigError(
            f"{dest}: the archived config keeps state in {state}, outside the restored "
            f"tree, and the archive's signature was not verified: restore with "
            f"--state-dir {state} to write the state there"
        )
    missing: list[str] = []
    lines: list[str] = []
    for path in credential_files(config):
        p = Path(path)
        if p.is_relative_to(root):
            if not p.exists():
                missing.append(str(dest / p.relative_to(root)))
        elif p.exists():
            lines.append(f"credential file {p}: not in the archive, present on this host: used")
        else:
            missing.append(str(p))
    if missing:
        hint = (
            f"the archive holds {len(contents.secrets)} sealed credential files: restore with "
            "--key-file"
            if contents.secrets and not keyed
            else "take the backup with --include-secrets --key-file, or put them in place first"
        )
        raise ConfigError(
            f"{dest}: the restored config would refer to missing credential files "
            f"{', '.join(missing)} ({hint})"
        )
    return lines


def _tree_lines(
    dest: Path,
    contents: archive.Contents,
    config_files: list[str],
    placed: dict[str, tuple[str, bytes]],
    rewritten: int,
    key: bytes | None,
) -> list[str]:
    """What the config tree holds, by the real paths (the dry run's lines are the same)."""
    lines = [f"  {dest / rel}" for rel in config_files]
    lines += [
        f"  {dest / rel} (the credential file {original})"
        for original, (rel, _) in sorted(placed.items())
    ]
    if rewritten:
        lines.append(
            f"{rewritten} credential paths in {dest / contents.config_file} rewritten to the "
            "restored files"
        )
    if contents.secrets and key is None:
        lines.append(
            f"{len(contents.secrets)} credential files in the archive not restored (no --key-file)"
        )
    return lines


async def restore(
    contents: archive.Contents,
    dest: Path,
    *,
    dry_run: bool = False,
    state_dir: str = "",
    key: bytes | None = None,
    cluster: bool = True,
) -> Restored:
    """Put `contents` back: the config tree (with its credential files) at `dest`, then
    state, last good renders and inventories."""
    out = Restored()
    config_files = {rel: (data, 0o644) for rel, data in _members(contents, "config/").items()}
    # Secrets are opened before anything is written: a wrong key leaves nothing behind.
    opened = {
        member: archive.decrypt(key, contents.members[member], what=member)
        for member in contents.secrets
        if key is not None
    }
    placed = place_credentials(contents, opened, set(config_files))
    try:
        text = config_files[contents.config_file][0].decode()
    except UnicodeDecodeError as e:
        raise ConfigError(f"config/{contents.config_file} in the archive: not UTF-8: {e}") from e
    settings_text, rewritten = rewrite_references(
        text,
        contents.config_dir,
        {original: rel for original, (rel, _) in placed.items()},
        where=f"config/{contents.config_file}",
    )
    config_files[contents.config_file] = (settings_text.encode(), 0o644)
    files = {**config_files, **{rel: (data, 0o600) for rel, data in placed.values()}}
    scratch = Path(tempfile.mkdtemp(prefix="gitopsd-restore-")).resolve() if dry_run else None
    try:
        used: list[str] = []
        if scratch is not None:
            write_files(files, scratch)
            used = _complete(scratch, dest, contents, keyed=key is not None, state_dir=state_dir)
            out.lines.append(
                f"would create {dest} with {len(config_files)} config files and "
                f"{len(placed)} credential files:"
            )
        else:
            write_tree(
                files,
                dest,
                check=lambda t: used.extend(
                    _complete(t, dest, contents, keyed=key is not None, state_dir=state_dir)
                ),
            )
            out.lines.append(
                f"created {dest} with {len(config_files)} config files and "
                f"{len(placed)} credential files:"
            )
        out.lines += _tree_lines(dest, contents, sorted(config_files), placed, rewritten, key)
        out.lines += used
        config = load((scratch or dest) / contents.config_file)

        def real(path: str) -> Path:
            p = Path(path)
            return dest / p.relative_to(scratch) if scratch and p.is_relative_to(scratch) else p

        target = Path(state_dir) if state_dir else real(config.settings.state_dir)
        await _restore_states(config, _members(contents, "state/"), target, out, dry_run=dry_run)
        _restore_last_good(_members(contents, "last-good/"), target, out, dry_run=dry_run)
        inventories = _members(contents, "inventory/")
        if cluster:
            await _restore_inventories(config, inventories, out, dry_run=dry_run)
        else:
            out.lines.append(f"{len(inventories)} inventories not restored (--no-cluster)")
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return out


def _restore_last_good(
    kept: dict[str, bytes], target: Path, out: Restored, *, dry_run: bool
) -> None:
    root = target / "last-good"
    if dry_run:
        out.lines += [f"would write the last good render {root / n}" for n in sorted(kept)]
        return
    if not kept:
        return
    root.mkdir(parents=True, exist_ok=True)
    with opened_dir(root) as fd:
        for name, data in sorted(kept.items()):
            try:
                write_under(fd, name, data, 0o600)
            except FileExistsError:
                out.lines.append(f"the last good render {root / name} exists: kept")
                continue
            except OSError as e:
                raise ConfigError(f"cannot write {name} below {root}: {e.strerror}") from e
            out.lines.append(f"wrote the last good render {root / name}")


async def _restore_states(
    config: Config, states: dict[str, bytes], target: Path, out: Restored, *, dry_run: bool
) -> None:
    records: dict[str, dict[str, Any]] = {}
    for name, data in states.items():
        app = name.removesuffix(".json")
        try:
            records[app] = json.loads(data)
        except ValueError as e:
            raise ConfigError(f"state/{name} in the archive is not JSON: {e}") from e
    if config.settings.state_store == "kubernetes":
        from daemon.engine import control_cluster
        from daemon.kube import Clusters
        from daemon.status.kubestate import KubeStateStore

        clusters = Clusters(config.clusters)
        try:
            client = await clusters.client(control_cluster(config, clusters))
            s = config.settings
            kube = KubeStateStore(client, s.sharding_namespace or s.inventory_namespace)
            await kube.start()
            for app, record in sorted(records.items()):
                if kube.load(app):
                    out.lines.append(f"state of {app} exists in the cluster: kept")
                elif dry_run:
                    out.lines.append(f"would restore the state of {app} (cluster)")
                else:
                    await kube.save(app, record)
                    out.lines.append(f"restored the state of {app} (cluster)")
        finally:
            await clusters.aclose()
        return
    from daemon.status.state import StateStore

    for app, record in sorted(records.items()):
        if dry_run:
            out.lines.append(
                f"would restore the state of {app} into {target / 'apps' / f'{app}.json'}"
            )
            continue
        store = StateStore(target)
        existing = store.load(app)
        if existing and existing != record:
            raise ConfigError(
                f"{target}: a different state of {app} exists; move the state directory away "
                "(or restore with --state-dir) so nothing is overwritten"
            )
        if not existing:
            await store.save(app, record)
            out.lines.append(f"restored the state of {app} into {target / 'apps' / f'{app}.json'}")


async def _restore_inventories(
    config: Config, inventories: dict[str, bytes], out: Restored, *, dry_run: bool
) -> None:
    if not inventories:
        return
    from daemon.compare.inventory import Inventory
    from daemon.kube import Clusters
    from daemon.plan import tracking

    # Only the clusters: nothing else (no state or cache directory) is touched.
    clusters = Clusters(config.clusters)
    inventory = Inventory(config.settings.inventory_namespace)
    try:
        apps = {a.name: a for a in config.applications}
        for name, data in sorted(inventories.items()):
            app_name = name.removesuffix(".json")
            app = apps.get(app_name)
            if app is None:
                out.lines.append(f"inventory of {app_name} not restored: no such app in the config")
                continue
            entries = json.loads(data).get("entries") or []
            keys = {k for k in (tracking.key_from_str(e) for e in entries) if k}
            try:
                cluster = clusters.lookup(server=app.destination.server, name=app.destination.name)
                client = await clusters.client(cluster)
                if await inventory.load(app_name, client):
                    out.lines.append(f"inventory of {app_name} exists in its cluster: kept")
                elif dry_run:
                    out.lines.append(f"would restore the inventory of {app_name} ({len(keys)})")
                else:
                    await inventory.save(app_name, client, keys)
                    out.lines.append(f"restored the inventory of {app_name} ({len(keys)} objects)")
            except GitopsdError as e:
                out.lines.append(f"inventory of {app_name} not restored: {e}")
    finally:
        await clusters.aclose()
