"""`gitopsd backup`: gather what a gitopsd needs into one archive (`daemon.dr.restore` puts
it back).

Backup takes, from the config as loaded: every config file; the app state of every app the
store holds (each record is read whole: the file store replaces records by rename, the cluster
store by whole ConfigMaps); each app's in-cluster inventory; the last good renders; and the
credential files the config references, by path only unless secrets are included (encrypted).
With a backup key the archive is signed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import structlog

from daemon.dr import archive
from daemon.errors import ConfigError, GitopsdError
from daemon.settings import Config

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
    contents = archive.Contents(
        config_file=Path(config.path).name, config_dir=str(Path(config.path).parent)
    )
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
    elif contents.credentials:
        contents.notes.append(
            f"{len(contents.credentials)} credential files referenced by path only (no "
            "--include-secrets): a restore elsewhere needs them put in place first"
        )
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
    `keep` are removed; signed when `backup.keyFile` is set. Returns the archive's path."""
    s = config.settings
    key = archive.read_key(s.backup_key_file) if s.backup_key_file else None
    contents = await take(config, include_secrets=s.backup_include_secrets, key=key, engine=engine)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(s.backup_dir) / f"{PREFIX}{stamp}.tar.gz"
    write_archive(archive.pack(contents, key=key), out)
    kept = sorted(Path(s.backup_dir).glob(f"{PREFIX}*.tar.gz"))
    for old in kept[: max(0, len(kept) - s.backup_keep)]:
        old.unlink(missing_ok=True)
    return out
