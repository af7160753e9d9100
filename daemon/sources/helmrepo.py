"""Helm chart repositories: `repoURL: https://charts.example.com`, `chart: NAME`,
`targetRevision: VERSION` (exact, or a semver constraint such as `1.2.*` or `>=1.0 <2`).

The same discipline as the git cache:
- `index.yaml` is read at most once per poll interval per repository (`max_age`), shared by every
  app; the last one read is also kept on disk, so a repository that is down still resolves the
  versions it listed (with a warning) and cached charts still render;
- each chart version is downloaded once (streamed to disk, hashed as it arrives), checked
  against the index's sha256 digest, and unpacked within `ChartLimits` (daemon.sources.chartfiles:
  no links, devices or escaping paths) under `cacheDir/charts/<repository>/<chart>/<version>/`
  (atomically: a temporary directory renamed into place), shared by every app; OCI charts are
  pulled as archives by helm and unpacked the same way;
- every request has one deadline (`repoTimeout`) for the whole answer, and a size limit read
  as the body arrives; index.yaml is parsed in a worker thread (daemon.sources.chartindex);
- credentials come from `repositories` entries (longest URL prefix): basic auth with a password
  file, a CA file, a TLS client certificate and key.

Constraints follow Argo CD (Masterminds semver): exact versions first, else the highest version
the constraint admits, pre-releases only when the constraint names one. `node-semver` evaluates
the ranges (Masterminds' syntax is the npm one, with commas as AND).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import ssl
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import urljoin

import anyio
import structlog
import yaml

from daemon import yamlio
from daemon.errors import SourceError, SourceUnreachable
from daemon.settings import RepositoryCredentials
from daemon.sources.chartfiles import ChartLimits, unpack
from daemon.sources.chartindex import Entries, read_index

if TYPE_CHECKING:
    import httpx

log = structlog.get_logger("gitopsd.helmrepo")

MAX_REDIRECTS = 5
HELM_BASE_MEMORY = 512 * 1024 * 1024  # what helm itself needs, besides a chart it holds


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
        limits: ChartLimits | None = None,
    ) -> None:
        self.root = root
        self.credentials = credentials
        self.timeout = timeout
        self.limits = limits or ChartLimits()
        self._index: dict[str, tuple[float, Entries]] = {}  # repo -> (read at, its charts)
        self._resolved: dict[str, tuple[float, str]] = {}  # OCI chart@wanted -> (read at, version)
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
        return httpx.AsyncClient(
            verify=verify,
            auth=auth,
            timeout=self.timeout,
            # Bytes as sent: a size limit counts what arrives, a chart's digest is of the file.
            headers={"Accept-Encoding": "identity"},
            follow_redirects=True,  # chart hosts redirect (GitHub releases to its CDN)
            max_redirects=MAX_REDIRECTS,
            event_hooks={"request": [functools.partial(_no_downgrade, url)]},
        )

    async def _get(self, url: str, out: IO[bytes], *, limit: int, what: str, setting: str) -> str:
        """Stream `url` into `out`, at most `limit` bytes (`setting` names the limit), the
        whole answer within `timeout`; its sha256 hex."""
        import httpx

        self.requests += 1
        digest = hashlib.sha256()
        size = 0
        try:
            with anyio.fail_after(self.timeout):
                async with self._client(url) as client, client.stream("GET", url) as r:
                    _check_status(r.status_code, url, what)
                    async for chunk in r.aiter_raw():
                        size += len(chunk)
                        if size > limit:
                            raise SourceError(
                                f"{what}: {url} is larger than {limit} bytes ({setting}); "
                                "stopped reading"
                            )
                        digest.update(chunk)
                        out.write(chunk)
        except TimeoutError:
            raise SourceUnreachable(
                f"{what}: {url} did not answer in full within {self.timeout:g}s (repoTimeout)"
            ) from None
        except httpx.HTTPError as e:
            raise SourceUnreachable(f"{what}: {url}: {type(e).__name__}: {e}") from e
        return digest.hexdigest()

    async def index(self, repo_url: str, *, max_age: float) -> Entries:
        """The charts the repository's index.yaml lists, read at most once per `max_age`; the
        copy on disk when the repository does not answer."""
        repo = repo_url.rstrip("/")
        async with self._locks.setdefault(repo, anyio.Lock()):
            seen = self._index.get(repo)
            if seen is not None and time.monotonic() - seen[0] < max_age:
                return seen[1]
            where = f"Helm repository {repo}"
            saved = self._dir(repo) / "index.yaml"
            saved.parent.mkdir(parents=True, exist_ok=True)
            tmp = saved.with_name(f".index.{uuid.uuid4().hex}")
            try:
                with tmp.open("wb") as out:
                    url = f"{repo}/index.yaml"
                    limit = self.limits.max_index_bytes
                    await self._get(url, out, limit=limit, what=where, setting="maxChartIndexBytes")
                index = await self._read_index(tmp, where)
                tmp.replace(saved)
            except SourceUnreachable as e:
                if seen is not None or saved.exists():
                    log.warning("chart repository unreachable; using its last index", repo=repo)
                    index = seen[1] if seen is not None else await self._read_index(saved, where)
                    self._index[repo] = (time.monotonic(), index)
                    return index
                raise SourceUnreachable(f"{e}; no index of it is cached") from e
            finally:
                tmp.unlink(missing_ok=True)
            self._index[repo] = (time.monotonic(), index)
            return index

    async def _read_index(self, path: Path, where: str) -> Entries:
        """Parse an index file in a worker thread: a large one takes seconds of CPU, which
        must not stall the API, reconciles and Lease renewals."""
        read = functools.partial(read_index, path, where=where, max_nodes=self.limits.max_nodes)
        return await anyio.to_thread.run_sync(read)

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
        entries = index.get(chart)
        if not entries:
            names = ", ".join(sorted(index)[:10]) or "none"
            raise SourceError(f"{where}: no such chart in the index (charts: {names})")
        by_version = {str(e.get("version")): e for e in entries}
        version = pick_version(list(by_version), wanted if wanted != "HEAD" else "*", where=where)
        entry = by_version[version]
        urls = tuple(str(u) for u in entry.get("urls") or [])
        if not urls:
            raise SourceError(f"{where}: version {version} has no download URL in the index")
        return ChartRef(repo, chart, version, str(entry.get("digest") or ""), urls)

    async def fetch(self, ref: ChartRef) -> Path:
        """The unpacked chart directory of `ref` (downloaded and verified once)."""
        where = f"Helm repository {ref.repo_url}, chart {ref.chart} {ref.version}"
        if ref.oci:
            where = f"OCI chart {ref.oci} {ref.version}"
        base = self._dir(ref.repo_url) / _safe(ref.chart) / _safe(ref.version)
        chart_dir = base / ref.chart
        if (chart_dir / "Chart.yaml").is_file():
            return chart_dir
        async with self._locks.setdefault(f"{ref.repo_url}#{ref.chart}", anyio.Lock()):
            if (chart_dir / "Chart.yaml").is_file():
                return chart_dir
            work = self.root / ".work" / uuid.uuid4().hex
            work.mkdir(parents=True)
            try:
                if ref.oci:
                    archive = await self._pull_oci(ref, work, where)
                else:
                    archive = await self._download(ref, work / "chart.tgz", where)
                tmp = work / "unpacked"
                await anyio.to_thread.run_sync(
                    functools.partial(
                        unpack, archive, tmp, chart=ref.chart, where=where, limits=self.limits
                    )
                )
                if not (tmp / ref.chart / "Chart.yaml").is_file():
                    raise SourceError(f"{where}: the archive has no {ref.chart}/Chart.yaml")
                base.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, base)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        if not (chart_dir / "Chart.yaml").is_file():
            raise SourceError(f"{where}: the archive has no {ref.chart}/Chart.yaml")
        return chart_dir

    async def _download(self, ref: ChartRef, archive: Path, where: str) -> Path:
        """The chart archive of `ref`, streamed into `archive` and checked against the index's
        digest."""
        url = urljoin(ref.repo_url + "/", ref.urls[0])
        with archive.open("wb") as out:
            limit = self.limits.max_bytes
            got = await self._get(url, out, limit=limit, what=where, setting="maxChartBytes")
        if ref.digest and got != ref.digest:
            raise SourceError(
                f"{where}: {url} has digest sha256:{got}, the index says sha256:{ref.digest}"
            )
        return archive

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

    def _memory_limit(self) -> list[str]:
        """`prlimit` argv prefix bounding helm's heap: helm holds a registry's blob in memory
        (a manifest declaring a 3 GB layer made it allocate 3 GB), so no more than a chart
        may be plus helm's own needs; [] where util-linux's prlimit is missing."""
        prlimit = shutil.which("prlimit")
        return [prlimit, f"--data={self.helm_memory}", "--"] if prlimit else []

    @property
    def helm_memory(self) -> int:
        """Bytes of heap an OCI helm call may take (twice a chart's limit, plus helm)."""
        return 2 * self.limits.max_bytes + HELM_BASE_MEMORY

    async def _helm(
        self, args: list[str], url: str, *, what: str, cwd: Path, max_output: int = 1 << 20
    ) -> str:
        from daemon import proc

        helm = os.environ.get("GITOPSD_HELM") or shutil.which("helm") or "helm"
        env = {
            "HELM": helm,
            "HELM_CACHE_HOME": str(cwd / "cache"),
            "HELM_CONFIG_HOME": str(cwd / "config"),
            "HELM_DATA_HOME": str(cwd / "data"),
            "HELM_REGISTRY_CONFIG": str(cwd / "registry.json"),
        }
        argv = [*self._memory_limit(), helm, *args, *self._helm_args(url)]
        self.requests += 1
        try:
            await self._login(url, env, cwd, what)
            done = await proc.run(
                argv, timeout=self.timeout, cwd=cwd, env=env, max_output=max_output
            )
        except proc.CommandTimeout as e:
            raise SourceUnreachable(
                f"{what}: the registry did not answer within {self.timeout:g}s (repoTimeout); "
                "helm was stopped"
            ) from e
        except proc.OutputTooLarge as e:
            raise SourceError(f"{what}: helm {args[0]} printed more than {max_output} bytes") from e
        if done.returncode != 0:
            if "fatal error: runtime: out of memory" in done.err_text:
                raise SourceError(
                    f"{what}: helm {args[0]} passed its memory limit of {self.helm_memory} bytes "
                    "(the registry offers a chart larger than maxChartBytes?)"
                )
            raise _failure(done.err_text)(f"{what}: {done.err_text}")
        return done.stdout.decode(errors="replace")

    async def _resolve_oci(
        self, repo: str, chart: str, oci: str, wanted: str, max_age: float
    ) -> ChartRef:
        """The version `wanted` selects among the registry's tags (helm resolves constraints
        against them); once per poll; the last answer when the registry is down."""
        key = f"{oci}@{wanted}"
        seen = self._resolved.get(key)
        if seen is not None and time.monotonic() - seen[0] < max_age:
            return ChartRef(repo, chart, seen[1], "", (), oci)
        where = f"OCI chart {oci} {wanted}"
        saved = self._dir(oci) / f"resolved-{hashlib.sha256(wanted.encode()).hexdigest()[:12]}"
        args = ["show", "chart", oci]
        if wanted not in ("", "HEAD", "*"):
            args += ["--version", wanted]
        work = self.root / ".work" / uuid.uuid4().hex
        work.mkdir(parents=True)
        try:
            limit = self.limits.max_file_bytes  # Chart.yaml is one file of the chart
            text = await self._helm(args, oci, what=where, cwd=work, max_output=limit)
            load = functools.partial(yamlio.load, text, max_nodes=self.limits.max_nodes)
            meta = await anyio.to_thread.run_sync(load) or {}
            version = str(meta.get("version", "")) if isinstance(meta, dict) else ""
            if not version:
                raise SourceError(f"{where}: helm show chart printed no version")
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(version)
        except SourceUnreachable:
            cached = seen[1] if seen is not None else None
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
        self._resolved[key] = (time.monotonic(), version)
        return ChartRef(repo, chart, version, "", (), oci)

    async def _pull_oci(self, ref: ChartRef, work: Path, where: str) -> Path:
        """The chart archive of `ref`, pulled by helm (which checks the registry's digests)
        into `work`. Not `--untar`: helm turns a link member into an empty file and bounds
        only the total size, so the archive is unpacked as any other (`unpack`)."""
        dest = work / "pulled"
        dest.mkdir()
        args = ["pull", ref.oci, "--version", ref.version, "--destination", str(dest)]
        await self._helm(args, ref.oci, what=where, cwd=work)
        pulled = [p for p in dest.iterdir() if p.is_file() and not p.is_symlink()]
        if len(pulled) != 1:
            raise SourceError(f"{where}: helm pull left {len(pulled)} archives, not one")
        if pulled[0].stat().st_size > self.limits.max_bytes:
            raise SourceError(
                f"{where}: the chart archive is larger than {self.limits.max_bytes} bytes "
                "(maxChartBytes)"
            )
        return pulled[0]


def _failure(text: str) -> type[SourceError]:
    """SourceUnreachable when helm could not reach the registry at all (so cached charts may
    stand in), SourceError when the registry answered no (auth, missing tag)."""
    lowered = text.lower()
    words = ("connection refused", "no such host", "i/o timeout", "unreachable", "eof")
    return SourceUnreachable if any(w in lowered for w in words) else SourceError


def _safe(part: str) -> str:
    return "".join(c if c.isalnum() or c in "._+-" else "_" for c in part) or "_"


def _check_status(code: int, url: str, what: str) -> None:
    if code in (401, 403):
        raise SourceError(f"{what}: {url} answered {code} (credentials?)")
    if code == 404:
        raise SourceError(f"{what}: {url} not found (404)")
    if code >= 400:
        raise SourceUnreachable(f"{what}: {url} answered {code}")
    if code >= 300:
        raise SourceError(f"{what}: {url} answered {code} without a usable Location")


async def _no_downgrade(origin: str, request: httpx.Request) -> None:
    """Refuse a redirect from HTTPS to plain HTTP (credentials and content would travel in
    clear); httpx itself drops credentials on a redirect to another host."""
    if origin.startswith("https://") and request.url.scheme != "https":
        raise SourceError(f"{origin}: redirected to {request.url}, which is not HTTPS; refused")
