"""`gitopsd backup` and `gitopsd restore`: gather what a gitopsd needs into one archive, and put
it back so that a daemon started on the result converges without redoing anything.

Backup takes, from the config as loaded: every config file; the app state of every app the
store holds (each record is read whole: the file store replaces records by rename, the cluster
store by whole ConfigMaps); each app's in-cluster inventory; the last good renders; and the
credential files the config references, by path only unless secrets are included (encrypted).

Restore checks the whole archive first (`archive.unpack`), then writes the config tree as a new
directory (validated by loading it before it is moved into place), the state records where the
restored config keeps state (refusing to replace a different record), the last good renders,
the inventories that are missing in their clusters, and, with the key, credential files that do
not exist yet. `dry_run` only reports. The state carries the fingerprints of what was applied
and finished operations, so the first reconcile after a restore writes nothing for objects that
are already right, re-runs no hook, and prunes nothing the inventory owns.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import structlog

from daemon.dr import archive
from daemon.dr.files import write_tree
from daemon.errors import ConfigError, GitopsdError
from daemon.settings import Config, load

if TYPE_CHECKING:
    from daemon.engine import Engine

log = structlog.get_logger("gitopsd.backup")


def credential_files(config: Config) -> list[str]:
    """Every credential file the config refers to."""
    out: list[str] = []
    for c in config.clusters:
        out += [c.kubeconfig, c.bearer_token_file, c.ca_file]
    for r in config.repositories:
        out += [r.password_file, r.ssh_private_key_file, r.known_hosts_file, r.ca_file]
        out += [r.tls_client_cert_file, r.tls_client_key_file]
    out += [t.token_file for t in config.api_tokens]
    out += [w.get("secretFile", "") for w in config.webhooks.values()]
    out.append(config.settings.metrics_token_file)
    return sorted({p for p in out if p})


def config_members(config: Config) -> dict[str, bytes]:
    """config/<path relative to the config's directory> -> bytes, for every file loaded."""
    base = Path(config.path).parent
    members: dict[str, bytes] = {}
    external = 0
    for f in config.files:
        path = Path(f)
        try:
            rel = str(PurePosixPath(path.relative_to(base)))
        except ValueError:
            external += 1
            rel = f"_external/{external}/{path.name}"
        try:
            members[f"config/{rel}"] = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read for the backup: {e.strerror}", file=f) from e
    return members


async def take(
    config: Config,
    *,
    include_secrets: bool = False,
    key: bytes | None = None,
    engine: Engine | None = None,
) -> archive.Contents:
    """Everything a restore needs, read now (through the running daemon's `engine` when
    given, else through one opened for the purpose)."""
    if engine is not None:
        return await _take(config, engine, include_secrets, key)
    from daemon.engine import Engine

    async with Engine.open(config) as opened:
        return await _take(config, opened, include_secrets, key)


async def _take(
    config: Config, engine: Engine, include_secrets: bool, key: bytes | None
) -> archive.Contents:
    contents = archive.Contents(config_file=Path(config.path).name)
    contents.members.update(config_members(config))
    contents.credentials = credential_files(config)
    if include_secrets:
        if key is None:
            raise ConfigError("--include-secrets needs --key-file (secrets are never stored plain)")
        for i, path in enumerate(contents.credentials):
            try:
                data = Path(path).read_bytes()
            except OSError as e:
                contents.notes.append(f"credential file {path} not included: {e.strerror}")
                continue
            contents.members[f"secrets/{i}"] = archive.encrypt(key, data)
            contents.secrets[f"secrets/{i}"] = path
    from daemon.plan import tracking

    names = set(engine.store.names()) | {a.name for a in config.applications}
    for name in sorted(names):
        state = engine.store.load(name)
        if state:
            contents.members[f"state/{name}.json"] = json.dumps(
                state, indent=1, sort_keys=True, default=str
            ).encode()
    for app in config.applications:
        try:
            client = await engine.client_for(app)
            keys = await engine.reconciler.inventory.load(app.name, client)
        except GitopsdError as e:
            contents.notes.append(f"inventory of {app.name} not included: {e}")
            continue
        if keys:
            record = {
                "cluster": client.name,
                "entries": sorted(tracking.key_to_str(k) for k in keys),
            }
            contents.members[f"inventory/{app.name}.json"] = json.dumps(record, indent=1).encode()
    kept = Path(config.settings.state_dir) / "last-good"
    for f in sorted(kept.glob("*.json.gz")) if kept.is_dir() else []:
        contents.members[f"last-good/{f.name}"] = f.read_bytes()
    return contents


def write_archive(data: bytes, out: Path) -> None:
    """Write the archive atomically (temporary file, fsync, rename), readable by owner only."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


PREFIX = "gitopsd-backup-"


def next_run(schedule: str, now: dt.datetime) -> dt.datetime:
    """The first minute strictly after `now` (naive UTC) that `schedule` (five cron fields,
    Argo CD's dialect) matches."""
    from daemon.appproject.cron import parse_cron

    start = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    return next(parse_cron(schedule).walk(start, backward=False))


async def scheduled(config: Config, engine: Engine) -> Path:
    """One backup into `settings.backup.dir`, named by its UTC time; the oldest beyond
    `keep` are removed. Returns the archive's path."""
    s = config.settings
    key = archive.read_key(s.backup_key_file) if s.backup_include_secrets else None
    contents = await take(config, include_secrets=s.backup_include_secrets, key=key, engine=engine)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(s.backup_dir) / f"{PREFIX}{stamp}.tar.gz"
    write_archive(archive.pack(contents), out)
    kept = sorted(Path(s.backup_dir).glob(f"{PREFIX}*.tar.gz"))
    for old in kept[: max(0, len(kept) - s.backup_keep)]:
        old.unlink(missing_ok=True)
    return out


@dataclass
class Restored:
    """What a restore did (or, dry-run, would do)."""

    lines: list[str] = field(default_factory=list)


def _members(contents: archive.Contents, prefix: str) -> dict[str, bytes]:
    return {p.removeprefix(prefix): d for p, d in contents.members.items() if p.startswith(prefix)}


async def restore(
    contents: archive.Contents,
    dest: Path,
    *,
    dry_run: bool = False,
    state_dir: str = "",
    key: bytes | None = None,
    cluster: bool = True,
) -> Restored:
    """Put `contents` back: the config tree at `dest`, then state, inventories, secrets."""
    out = Restored()
    config_files = {rel: (data, 0o644) for rel, data in _members(contents, "config/").items()}
    states = _members(contents, "state/")
    inventories = _members(contents, "inventory/")
    kept = _members(contents, "last-good/")
    if contents.config_file not in config_files:
        raise ConfigError(f"the archive has no config/{contents.config_file}")
    # Secrets are opened before anything is written: a wrong key leaves nothing behind.
    secrets = {
        member: archive.decrypt(key, contents.members[member], what=member)
        for member in contents.secrets
        if key is not None
    }
    if dry_run:
        out.lines.append(f"would create {dest} with {len(config_files)} config files:")
        out.lines += [f"  {dest / rel}" for rel in sorted(config_files)]
    else:
        write_tree(config_files, dest, check=lambda tree: _check(tree / contents.config_file))
        out.lines.append(f"created {dest} with {len(config_files)} config files")
    if dry_run:
        scratch = _scratch(config_files)
        try:
            config = load(scratch / contents.config_file)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    else:
        config = load(dest / contents.config_file)
    target = Path(state_dir or config.settings.state_dir)
    await _restore_states(config, states, target, out, dry_run=dry_run)
    for name, data in sorted(kept.items()):
        path = target / "last-good" / name
        if dry_run:
            out.lines.append(f"would write the last good render {path}")
        elif not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            out.lines.append(f"wrote the last good render {path}")
    if cluster:
        await _restore_inventories(config, inventories, out, dry_run=dry_run)
    else:
        out.lines.append(f"{len(inventories)} inventories not restored (--no-cluster)")
    _restore_secrets(contents, secrets, key is not None, out, dry_run=dry_run)
    return out


def _check(path: Path) -> None:
    load(path)


def _scratch(files: dict[str, tuple[bytes, int]]) -> Path:
    """A throwaway copy of the config tree, to read a dry run's settings from."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="gitopsd-restore-"))
    for rel, (data, _) in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


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
            out.lines.append(f"would restore the state of {app} into {target}")
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
            out.lines.append(f"restored the state of {app} into {target}")


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


def _restore_secrets(
    contents: archive.Contents,
    opened: dict[str, bytes],
    keyed: bool,
    out: Restored,
    *,
    dry_run: bool,
) -> None:
    if not contents.secrets:
        for path in contents.credentials:
            if not Path(path).exists():
                out.lines.append(f"credential file {path} is referenced but missing: provide it")
        return
    if not keyed:
        out.lines.append(
            f"{len(contents.secrets)} credential files in the archive not restored (no --key-file)"
        )
        return
    for member, path in sorted(contents.secrets.items()):
        data = opened[member]
        p = Path(path)
        if p.exists():
            same = p.read_bytes() == data
            out.lines.append(f"credential file {path} exists{'' if same else ' (differs)'}: kept")
        elif dry_run:
            out.lines.append(f"would write the credential file {path}")
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            out.lines.append(f"wrote the credential file {path}")
