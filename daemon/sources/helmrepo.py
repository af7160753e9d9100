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
    digest: str  # sha256 hex from the index ("" when the index has none, or OCI)
    urls: tuple[str, ...]
    oci: str = ""  # oci://registry/path/chart for an OCI chart

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

    def aliased(self, alias: str) -> str:
        """The URL of the `repositories` entry named `alias` (a chart dependency's `@name` or
        `alias:name`, as `helm repo add name url` would register it); "" when none is."""
        for c in self.credentials:
            if c.name and c.name == alias:
                if c.enable_oci and "://" not in c.url:
                    return f"oci://{c.url}"
                return c.url
        return ""

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

    def oci_ref(self, repo_url: str, chart: str) -> str:
        """`oci://registry/path/chart` for an OCI chart source ("" for a chart repository):
        `oci://` URLs, and Argo CD's scheme-less `registry/path` whose `repositories` entry
        has `enableOCI: true`."""
        repo = repo_url.rstrip("/")
        if repo.startswith("oci://"):
            return f"{repo}/{chart}"
        if repo.startswith(("http://", "https://")):
            return ""
        c = self._creds(repo)
        if c is not None and c.enable_oci:
            return f"oci://{repo}/{chart}"
        raise SourceError(
            f"chart {chart} from {repo!r}: not an HTTP(S) chart repository or an oci:// "
            "registry (for Argo CD's registry/path form, give it a repositories entry with "
            "enableOCI: true)"
        )

    async def resolve(self, repo_url: str, chart: str, wanted: str, *, max_age: float) -> ChartRef:
        """The chart version `wanted` selects: from the repository's index, or from the
        registry's tags for an OCI chart."""
        oci = self.oci_ref(repo_url, chart)
        if oci:
            return await self._resolve_oci(repo_url.rstrip("/"), chart, oci, wanted, max_age)
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
            if ref.oci:
                await self._pull_oci(ref, base, where)
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

    # --- OCI registries (through helm, which speaks the registry protocol and its auth) ---

    def _helm_args(self, url: str) -> list[str]:
        c = self._creds(url.removeprefix("oci://"))
        args: list[str] = []
        if c is None:
            return args
        if c.force_http:
            args.append("--plain-http")
        if c.insecure:
            args.append("--insecure-skip-tls-verify")
        if c.ca_file:
            args += ["--ca-file", c.ca_file]
        if c.tls_client_cert_file:
            args += ["--cert-file", c.tls_client_cert_file, "--key-file", c.tls_client_key_file]
        return args

    async def _login(self, url: str, env: dict[str, str], cwd: Path, what: str) -> None:
        """`helm registry login` into the call's own registry config, the password on stdin
        (never in an argument another process could read)."""
        from daemon import proc

        c = self._creds(url.removeprefix("oci://"))
        if c is None or not c.username:
            return
        try:
            password = Path(c.password_file).read_text().strip() if c.password_file else ""
        except OSError as e:
            raise SourceError(
                f"repository {url}: cannot read passwordFile {c.password_file}: {e.strerror}"
            ) from e
        host = url.removeprefix("oci://").split("/", 1)[0]
        argv = [env["HELM"], "registry", "login", host, "--username", c.username]
        argv.append("--password-stdin")
        # login's flags: --insecure (not --insecure-skip-tls-verify); the rest as for pulls.
        argv += [
            "--insecure" if a == "--insecure-skip-tls-verify" else a for a in self._helm_args(url)
        ]
        done = await proc.run(
            argv, timeout=self.timeout, cwd=cwd, env=env, stdin=password.encode() + b"\n"
        )
        if done.returncode != 0:
            error = _failure(done.err_text)
            raise error(f"{what}: registry login as {c.username} failed: {done.err_text}")

    async def _helm(self, args: list[str], url: str, *, what: str, cwd: Path) -> str:
        from daemon import proc

        helm = os.environ.get("GITOPSD_HELM") or shutil.which("helm") or "helm"
        env = {
            "HELM": helm,
            "HELM_CACHE_HOME": str(cwd / "cache"),
            "HELM_CONFIG_HOME": str(cwd / "config"),
            "HELM_DATA_HOME": str(cwd / "data"),
            "HELM_REGISTRY_CONFIG": str(cwd / "registry.json"),
        }
        argv = [helm, *args, *self._helm_args(url)]
        self.requests += 1
        try:
            await self._login(url, env, cwd, what)
            done = await proc.run(argv, timeout=self.timeout, cwd=cwd, env=env)
        except proc.CommandTimeout as e:
            raise SourceUnreachable(f"{what}: helm timed out after {self.timeout:g}s") from e
        if done.returncode != 0:
            raise _failure(done.err_text)(f"{what}: {done.err_text}")
        return done.stdout.decode(errors="replace")

    async def _resolve_oci(
        self, repo: str, chart: str, oci: str, wanted: str, max_age: float
    ) -> ChartRef:
        """The version `wanted` selects among the registry's tags (helm resolves constraints
        against them); once per poll; the last answer when the registry is down."""
        key = f"{oci}@{wanted}"
        seen = self._index.get(key)
        if seen is not None and time.monotonic() - seen[0] < max_age:
            return ChartRef(repo, chart, str(seen[1]["version"]), "", (), oci)
        where = f"OCI chart {oci}"
        saved = self._dir(oci) / f"resolved-{hashlib.sha256(wanted.encode()).hexdigest()[:12]}"
        args = ["show", "chart", oci]
        if wanted not in ("", "HEAD", "*"):
            args += ["--version", wanted]
        work = self.root / ".work" / uuid.uuid4().hex
        work.mkdir(parents=True)
        try:
            text = await self._helm(args, oci, what=where, cwd=work)
            meta = yamlio.load(text) or {}
            version = str(meta.get("version", "")) if isinstance(meta, dict) else ""
            if not version:
                raise SourceError(f"{where}: helm show chart printed no version")
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(version)
        except SourceUnreachable:
            cached = seen[1]["version"] if seen is not None else None
            if cached is None and saved.exists():
                cached = saved.read_text().strip()
            if not cached:
                raise
            log.warning("OCI registry unreachable; using the version it last gave", chart=oci)
            version = str(cached)
        except yaml.YAMLError as e:
            raise SourceError(f"{where}: helm show chart printed invalid YAML: {e}") from e
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self._index[key] = (time.monotonic(), {"version": version})
        return ChartRef(repo, chart, version, "", (), oci)

    async def _pull_oci(self, ref: ChartRef, base: Path, where: str) -> None:
        tmp = base.with_name(f".{base.name}.{uuid.uuid4().hex}")
        work = self.root / ".work" / uuid.uuid4().hex
        work.mkdir(parents=True)
        try:
            args = ["pull", ref.oci, "--version", ref.version, "--untar", "--untardir", str(tmp)]
            await self._helm(args, ref.oci, what=where, cwd=work)
            base.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, base)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)


def _failure(text: str) -> type[SourceError]:
    """SourceUnreachable when helm could not reach the registry at all (so cached charts may
    stand in), SourceError when the registry answered no (auth, missing tag)."""
    lowered = text.lower()
    words = ("connection refused", "no such host", "i/o timeout", "unreachable", "eof")
    return SourceUnreachable if any(w in lowered for w in words) else SourceError


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
