"""Helm chart repositories: `repoURL: https://charts.example.com`, `chart: NAME`,
`targetRevision: VERSION` (exact, or a semver constraint such as `1.2.*` or `>=1.0 <2`).

The same discipline as the git cache:
- `index.yaml` is read at most once per poll interval per repository (`max_age`), shared by every
  app; the last one read is also kept on disk, so a repository that is down still resolves the
  versions it listed (with a warning) and cached charts still render;
- each chart version is downloaded once, checked against the index's sha256 digest, and unpacked
  under `cacheDir/charts/<repository>/<chart>/<version>/` (atomically: a temporary directory
  renamed into place), shared by every app;
- credentials come from `repositories` entries (longest URL prefix): basic auth with a password
  file, a CA file, a TLS client certificate and key.

Constraints follow Argo CD (Masterminds semver): exact versions first, else the highest version
the constraint admits, pre-releases only when the constraint names one. `node-semver` evaluates
the ranges (Masterminds' syntax is the npm one, with commas as AND).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import ssl
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import anyio
import structlog
import yaml

from daemon import yamlio
from daemon.errors import SourceError, SourceUnreachable
from daemon.settings import RepositoryCredentials

if TYPE_CHECKING:
    import httpx

log = structlog.get_logger("gitopsd.helmrepo")

MAX_INDEX = 64 * 1024 * 1024
MAX_CHART = 64 * 1024 * 1024


@dataclass(frozen=True)
class ChartRef:
    """One chart version as the repository's index lists it."""

    repo_url: str
    chart: str
    version: str
    digest: str  # sha256 hex from the index ("" when the index has none)
    urls: tuple[str, ...]

    @property
    def revision(self) -> str:
        """What the app's status shows as its revision: the chart version (as Argo CD)."""
        return self.version


def pick_version(versions: list[str], wanted: str, *, where: str) -> str:
    """The version `wanted` selects among `versions`: itself when listed, else the highest
    version the constraint admits. SourceError naming the chart and what is available."""
    if wanted in versions:
        return wanted
    import nodesemver  # type: ignore[import-untyped]

    constraint = wanted.replace(",", " ").strip() or "*"
    try:
        best = nodesemver.max_satisfying(versions, constraint, loose=True)
    except (ValueError, TypeError) as e:
        raise SourceError(f"{where}: targetRevision {wanted!r} is not a version constraint") from e
    if best is None:
        shown = ", ".join(sorted(versions, reverse=True)[:10]) or "none"
        raise SourceError(f"{where}: no version matches {wanted!r} (available: {shown})")
    return str(best)


class ChartRepos:
    """Every Helm chart repository the apps use, cached under `root`."""

    def __init__(
        self,
        root: Path,
        *,
        credentials: tuple[RepositoryCredentials, ...] = (),
        timeout: float = 60.0,
    ) -> None:
        self.root = root
        self.credentials = credentials
        self.timeout = timeout
        self._index: dict[str, tuple[float, dict[str, Any]]] = {}  # repo -> (read at, index)
        self._locks: dict[str, anyio.Lock] = {}
        self.requests = 0  # HTTP requests made (tests and benchmarks read it)

    def _dir(self, repo_url: str) -> Path:
        return self.root / hashlib.sha256(repo_url.rstrip("/").encode()).hexdigest()[:16]

    def _creds(self, url: str) -> RepositoryCredentials | None:
        best = None
        for c in self.credentials:
            if url.startswith(c.url) and (best is None or len(c.url) > len(best.url)):
                best = c
        return best

    def _client(self, url: str) -> httpx.AsyncClient:
        import httpx  # only when an app uses a chart repository (a start stays light)

        c = self._creds(url)
        verify: ssl.SSLContext | bool = True
        auth = None
        if c is not None:
            if c.insecure:
                verify = False
            elif c.ca_file or c.tls_client_cert_file:
                ctx = ssl.create_default_context(cafile=c.ca_file or None)
                if c.tls_client_cert_file:
                    ctx.load_cert_chain(c.tls_client_cert_file, c.tls_client_key_file or None)
                verify = ctx
            if c.username or c.password_file:
                try:
                    password = Path(c.password_file).read_text().strip() if c.password_file else ""
                except OSError as e:
                    raise SourceError(
                        f"repository {url}: cannot read passwordFile {c.password_file}: "
                        f"{e.strerror}"
                    ) from e
                auth = httpx.BasicAuth(c.username, password)
        return httpx.AsyncClient(verify=verify, auth=auth, timeout=self.timeout)

    async def _get(self, url: str, *, limit: int, what: str) -> bytes:
        import httpx

        self.requests += 1
        try:
            async with self._client(url) as client, client.stream("GET", url) as r:
                if r.status_code in (401, 403):
                    raise SourceError(f"{what}: {url} answered {r.status_code} (credentials?)")
                if r.status_code == 404:
                    raise SourceError(f"{what}: {url} not found (404)")
                if r.status_code >= 400:
                    raise SourceUnreachable(f"{what}: {url} answered {r.status_code}")
                data = bytearray()
                async for chunk in r.aiter_bytes():
                    data += chunk
                    if len(data) > limit:
                        raise SourceError(f"{what}: {url} is larger than {limit} bytes")
                return bytes(data)
        except httpx.HTTPError as e:
            raise SourceUnreachable(f"{what}: {url}: {type(e).__name__}: {e}") from e

    async def index(self, repo_url: str, *, max_age: float) -> dict[str, Any]:
        """The repository's index.yaml, read at most once per `max_age`; the copy on disk when
        the repository does not answer."""
        repo = repo_url.rstrip("/")
        async with self._locks.setdefault(repo, anyio.Lock()):
            seen = self._index.get(repo)
            if seen is not None and time.monotonic() - seen[0] < max_age:
                return seen[1]
            where = f"Helm repository {repo}"
            saved = self._dir(repo) / "index.yaml"
            try:
                raw = await self._get(f"{repo}/index.yaml", limit=MAX_INDEX, what=where)
            except SourceUnreachable as e:
                if seen is not None or saved.exists():
                    log.warning("chart repository unreachable; using its last index", repo=repo)
                    index = seen[1] if seen is not None else _parse_index(saved.read_bytes(), where)
                    self._index[repo] = (time.monotonic(), index)
                    return index
                raise SourceUnreachable(f"{e}; no index of it is cached") from e
            index = _parse_index(raw, where)
            saved.parent.mkdir(parents=True, exist_ok=True)
            tmp = saved.with_name(f".index.{uuid.uuid4().hex}")
            tmp.write_bytes(raw)
            tmp.replace(saved)
            self._index[repo] = (time.monotonic(), index)
            return index

    async def resolve(self, repo_url: str, chart: str, wanted: str, *, max_age: float) -> ChartRef:
        """The chart version `wanted` selects, from the repository's index."""
        repo = repo_url.rstrip("/")
        where = f"Helm repository {repo}, chart {chart}"
        index = await self.index(repo, max_age=max_age)
        entries = (index.get("entries") or {}).get(chart)
        if not isinstance(entries, list) or not entries:
            names = ", ".join(sorted(index.get("entries") or {})[:10]) or "none"
            raise SourceError(f"{where}: no such chart in the index (charts: {names})")
        by_version = {str(e.get("version")): e for e in entries if isinstance(e, dict)}
        version = pick_version(list(by_version), wanted if wanted != "HEAD" else "*", where=where)
        entry = by_version[version]
        urls = tuple(str(u) for u in entry.get("urls") or [])
        if not urls:
            raise SourceError(f"{where}: version {version} has no download URL in the index")
        return ChartRef(repo, chart, version, str(entry.get("digest") or ""), urls)

    async def fetch(self, ref: ChartRef) -> Path:
        """The unpacked chart directory of `ref` (downloaded and verified once)."""
        where = f"Helm repository {ref.repo_url}, chart {ref.chart} {ref.version}"
        base = self._dir(ref.repo_url) / _safe(ref.chart) / _safe(ref.version)
        chart_dir = base / ref.chart
        if (chart_dir / "Chart.yaml").is_file():
            return chart_dir
        async with self._locks.setdefault(f"{ref.repo_url}#{ref.chart}", anyio.Lock()):
            if (chart_dir / "Chart.yaml").is_file():
                return chart_dir
            url = urljoin(ref.repo_url + "/", ref.urls[0])
            data = await self._get(url, limit=MAX_CHART, what=where)
            got = hashlib.sha256(data).hexdigest()
            if ref.digest and got != ref.digest:
                raise SourceError(
                    f"{where}: {url} has digest sha256:{got}, the index says sha256:{ref.digest}"
                )
            tmp = base.with_name(f".{base.name}.{uuid.uuid4().hex}")
            try:
                await anyio.to_thread.run_sync(_unpack, data, tmp, ref.chart, where)
                base.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, base)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        if not (chart_dir / "Chart.yaml").is_file():
            raise SourceError(f"{where}: the archive has no {ref.chart}/Chart.yaml")
        return chart_dir


def _safe(part: str) -> str:
    return "".join(c if c.isalnum() or c in "._+-" else "_" for c in part) or "_"


def _parse_index(raw: bytes, where: str) -> dict[str, Any]:
    try:
        index = yamlio.load(raw.decode())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SourceError(f"{where}: index.yaml is not valid YAML: {e}") from e
    if not isinstance(index, dict) or not isinstance(index.get("entries"), dict):
        raise SourceError(f"{where}: index.yaml has no entries")
    return index


def _unpack(data: bytes, dest: Path, chart: str, where: str) -> None:
    """Extract a chart archive into `dest`: regular files and directories only, every path
    under `<chart>/`, nothing leaving `dest`."""
    dest.mkdir(parents=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for info in tar:
                path = PurePosixPath(info.name)
                if path.is_absolute() or ".." in path.parts or path.parts[:1] != (chart,):
                    raise SourceError(f"{where}: archive member {info.name} is outside {chart}/")
                if info.isdir():
                    (dest / path).mkdir(parents=True, exist_ok=True)
                elif info.isfile():
                    f = tar.extractfile(info)
                    if f is None:
                        continue
                    (dest / path).parent.mkdir(parents=True, exist_ok=True)
                    (dest / path).write_bytes(f.read())
                # links and devices are skipped: a chart needs neither
    except (tarfile.TarError, EOFError, OSError) as e:
        raise SourceError(f"{where}: not a readable chart archive: {e}") from e
