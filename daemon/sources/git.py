"""The local repository cache: one bare clone per URL, revisions resolved by ls-remote, and
read-only checkouts of exact commits that rendering reads.

All git calls go through the git CLI with a timeout. Credentials come from the config's
`repositories` and never appear in arguments, logs or errors.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import anyio

from daemon import proc
from daemon.errors import SourceError, SourceUnreachable
from daemon.settings import RepositoryCredentials
from daemon.sources.helmrepo import ChartRepos

_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_SHORT_SHA_RE = re.compile(r"^[0-9a-f]{7,39}$")
_USERINFO_RE = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)
UNSAFE_LINKS_FILE = ".gitopsd-unsafe-links"
# Bumped whenever extraction rules change, so checkouts made by older rules are never reused.
CHECKOUT_LAYOUT = "checkouts-v2"
_ASKPASS = """#!/bin/sh
case "$1" in
  Username*) printf '%s\\n' "$GITOPSD_GIT_USERNAME" ;;
  *) printf '%s\\n' "$GITOPSD_GIT_PASSWORD" ;;
esac
"""


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """Remove URL credentials and any known secret value from `text`."""
    text = _USERINFO_RE.sub(r"\g<scheme>***@", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def normalize_url(url: str) -> str:
    """Canonical form for comparing repository URLs (scheme, user, .git and case dropped)."""
    u = url.strip().lower()
    u = re.sub(r"^[a-z0-9+.-]+://", "", u)
    u = re.sub(r"^[^@/]+@", "", u)
    u = u.replace(":", "/", 1) if re.match(r"^[^/]+:[^/\d]", u) else u
    return u.removesuffix("/").removesuffix(".git")


_REMOTE = ("ls-remote", "fetch")  # git calls that talk to the remote


@dataclass(frozen=True, slots=True)
class Resolved:
    """A revision resolved to a commit."""

    repo_url: str
    revision: str
    sha: str


class GitCounter:
    """Hook for metrics: called with (request_type, repo_url, seconds, ok)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, bool]] = []
        self.listeners: list[Callable[[str, str, float, bool], None]] = []

    def record(self, kind: str, url: str, seconds: float, ok: bool) -> None:
        self.calls.append((kind, url, seconds, ok))
        del self.calls[:-1000]
        for fn in self.listeners:
            fn(kind, url, seconds, ok)


class Repo:
    """One cached bare clone; every operation holds the repo's lock."""

    def __init__(self, cache: RepoCache, url: str) -> None:
        self.cache = cache
        self.url = url
        key = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.dir = cache.root / "repos" / key
        self.lock = anyio.Lock()
        self.refs: dict[str, str] = {}
        self.refs_at = -1e18  # when the ls-remote behind `refs` started
        self.stale_before = -1e18  # refs from an ls-remote started before this are stale
        self.refs_error: SourceError | None = None
        self.verified = False  # clone checked healthy since this process started
        self.commits: set[str] = set()  # commits known to be present locally

    # --- plumbing ---------------------------------------------------------------------------

    def _creds(self) -> RepositoryCredentials | None:
        best: RepositoryCredentials | None = None
        for c in self.cache.credentials:
            if self.url.startswith(c.url) and (best is None or len(c.url) > len(best.url)):
                best = c
        return best

    def _env(self) -> tuple[dict[str, str], list[str]]:
        env = {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": str(self.cache.askpass),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
            "LC_ALL": "C",
        }
        secrets: list[str] = []
        c = self._creds()
        if c is None:
            return env, secrets
        if c.password_file:
            try:
                password = Path(c.password_file).read_text().strip()
            except OSError as e:
                raise SourceError(
                    f"repository {redact(self.url)}: cannot read passwordFile "
                    f"{c.password_file}: {e.strerror}"
                ) from e
            env["GITOPSD_GIT_USERNAME"] = c.username or "git"
            env["GITOPSD_GIT_PASSWORD"] = password
            secrets.append(password)
        if c.ssh_private_key_file:
            hosts = (
                f"-o UserKnownHostsFile={c.known_hosts_file} -o StrictHostKeyChecking=yes"
                if c.known_hosts_file
                else "-o StrictHostKeyChecking=accept-new"
            )
            if c.insecure:
                hosts = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
            env["GIT_SSH_COMMAND"] = (
                f"ssh -o BatchMode=yes -o IdentitiesOnly=yes -i {c.ssh_private_key_file} {hosts}"
            )
        if c.insecure:
            env["GIT_SSL_NO_VERIFY"] = "true"
        return env, secrets

    async def _git(self, *args: str, kind: str, cwd: Path | None = None) -> proc.Completed:
        env, secrets = self._env()
        started = time.monotonic()
        ok = False
        try:
            result = await proc.run(
                ["git", *args],
                cwd=cwd or self.dir,
                env=env,
                timeout=self.cache.timeout,
                max_output=256 * 1024 * 1024,
            )
        except proc.CommandTimeout as e:
            self._remove_stale_locks(force=True)  # the git we just killed cannot unlock
            raise (SourceUnreachable if kind in _REMOTE else SourceError)(
                f"repository {redact(self.url)}: git {args[0]} timed out after "
                f"{self.cache.timeout:g}s"
            ) from e
        finally:
            self.cache.counter.record(kind, self.url, time.monotonic() - started, ok)
        if result.returncode != 0:
            msg = redact(result.err_text or f"exit code {result.returncode}", secrets)
            error = SourceUnreachable if kind in _REMOTE else SourceError
            raise error(f"repository {redact(self.url)}: git {args[0]} failed: {msg}")
        ok = True
        return result

    @contextlib.asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        """This clone, exclusively: within the process (anyio lock) and across processes
        sharing the cache dir (flock), e.g. `gitopsd diff` next to the running daemon."""
        async with self.lock:
            self.dir.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(f"{self.dir}.flock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                deadline = time.monotonic() + self.cache.timeout
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise SourceError(
                                f"repository {redact(self.url)}: another process holds the "
                                f"cache lock {self.dir}.flock"
                            ) from None
                        await anyio.sleep(0.05)
                yield
            finally:
                os.close(fd)  # closing releases the flock

    def _remove_stale_locks(self, *, force: bool = False) -> None:
        # We hold this clone's lock (in-process and flock), so a git lock file here belongs to
        # a git that was killed; one younger than a git call's timeout might still belong to a
        # git outside gitopsd, so it is left alone.
        now = time.time()
        for lock in self.dir.rglob("*.lock"):
            try:
                if force or now - lock.stat().st_mtime > min(self.cache.timeout, 60.0):
                    lock.unlink(missing_ok=True)
            except OSError:
                continue

    async def _ensure_clone(self) -> None:
        if self.verified:
            return
        if (self.dir / "HEAD").exists():
            self._remove_stale_locks()
            try:
                await self._git("rev-parse", "--git-dir", kind="local")
                self.verified = True
                return
            except SourceError:
                shutil.rmtree(self.dir, ignore_errors=True)  # corrupt: rebuild below
        self.dir.mkdir(parents=True, exist_ok=True)
        await self._git("init", "--bare", "--quiet", kind="local")
        await self._git("remote", "add", "origin", self.url, kind="local")
        self.verified = True

    # --- operations -------------------------------------------------------------------------

    def invalidate(self) -> None:
        """The remote changed (a webhook said so): the next `ls_remote` asks it again, and so
        does every one after it that could have started before this moment. Many calls in a
        row still cost one ls-remote once they stop."""
        self.stale_before = time.monotonic()

    async def ls_remote(self, *, max_age: float) -> dict[str, str]:
        """The remote's refs, fetched at most once per `max_age` seconds (one call per poll)."""
        async with self.locked():
            fresh = self.refs_at >= self.stale_before
            if fresh and time.monotonic() - self.refs_at < max_age:
                if self.refs_error is not None:
                    raise self.refs_error
                return self.refs
            await self._ensure_clone()
            started = time.monotonic()
            try:
                out = await self._git("ls-remote", "origin", kind="ls-remote")
            except SourceError as e:
                self.refs_error, self.refs_at = e, started
                raise
            refs: dict[str, str] = {}
            for line in out.stdout.decode(errors="replace").splitlines():
                sha, _, ref = line.partition("\t")
                if _SHA_RE.match(sha):
                    refs[ref] = sha
            self.refs, self.refs_at, self.refs_error = refs, started, None
            return refs

    async def has_commit(self, sha: str) -> bool:
        if sha in self.commits:
            return True
        try:
            await self._git("cat-file", "-e", f"{sha}^{{commit}}", kind="local")
        except SourceError:
            return False
        self.commits.add(sha)
        return True

    async def fetch(self, sha: str | None = None) -> None:
        """Fetch branches and tags (and `sha` itself if it is on no ref); rebuild if corrupt."""
        async with self.locked():
            await self._ensure_clone()
            if sha and await self.has_commit(sha):
                return
            specs = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]
            try:
                await self._git("fetch", "--quiet", "--prune", "origin", *specs, kind="fetch")
            except SourceError as e:
                text = str(e).lower()
                if ".lock" in text and "file exists" in text:
                    # A git process killed mid-fetch left its lock; we hold the repo lock, so
                    # nobody else is writing here.
                    self._remove_stale_locks()
                    await self._git("fetch", "--quiet", "--prune", "origin", *specs, kind="fetch")
                    return await self._fetch_missing(sha)
                if not any(
                    w in text
                    for w in (
                        "corrupt",
                        "bad object",
                        "not a git",
                        "broken",
                        "does not appear to be a git",
                    )
                ):
                    raise
                shutil.rmtree(self.dir, ignore_errors=True)
                self.verified = False
                self.commits.clear()
                await self._ensure_clone()
                await self._git("fetch", "--quiet", "--prune", "origin", *specs, kind="fetch")
            await self._fetch_missing(sha)

    async def _fetch_missing(self, sha: str | None) -> None:
        """Fetch a commit that is on no branch or tag (servers that allow it)."""
        if sha and not await self.has_commit(sha):
            try:
                await self._git("fetch", "--quiet", "origin", sha, kind="fetch")
            except SourceError as e:
                raise SourceError(f"repository {redact(self.url)}: commit {sha} not found") from e
            self.commits.add(sha)

    async def rev_parse(self, rev: str) -> str | None:
        async with self.locked():
            try:
                out = await self._git(
                    "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", kind="local"
                )
            except SourceError:
                return None
            return out.stdout.decode().strip() or None

    async def archive(self, sha: str) -> bytes:
        async with self.locked():
            out = await self._git("archive", "--format=tar", sha, kind="checkout")
            return out.stdout


class RepoCache:
    """All cached repositories, keyed by URL, under `root`."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        credentials: Sequence[RepositoryCredentials] = (),
        timeout: float = 60.0,
        keep_checkouts: int = 64,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.credentials = tuple(credentials)
        self.timeout = timeout
        self.keep_checkouts = keep_checkouts
        self.counter = GitCounter()
        self._repos: dict[str, Repo] = {}
        self._checkout_locks: dict[str, anyio.Lock] = {}
        # Helm chart repositories (`chart:` sources) share the cache and the credentials.
        self.charts = ChartRepos(self.root.parent / "charts", credentials=self.credentials)
        self.charts.timeout = timeout
        self.askpass = self.root / "askpass.sh"
        if not self.askpass.exists() or self.askpass.read_text() != _ASKPASS:
            self.askpass.write_text(_ASKPASS)
        self.askpass.chmod(0o700)

    def repo(self, url: str) -> Repo:
        """The cached clone of `url` (created on first use)."""
        if url not in self._repos:
            self._repos[url] = Repo(self, url)
        return self._repos[url]

    async def resolve(self, url: str, revision: str, *, max_age: float = 0.0) -> Resolved:
        """Resolve a branch, tag, HEAD, refs/... or (short) SHA to a commit SHA."""
        repo = self.repo(url)
        rev = (revision or "HEAD").strip()
        if _SHA_RE.match(rev):
            await repo.fetch(rev)
            return Resolved(url, revision, rev)
        refs = await repo.ls_remote(max_age=max_age)
        candidates = (
            [rev]
            if rev == "HEAD" or rev.startswith("refs/")
            else [f"refs/heads/{rev}", f"refs/tags/{rev}"]
        )
        for ref in candidates:
            sha = refs.get(f"{ref}^{{}}") or refs.get(ref)  # peeled annotated tag first
            if sha:
                await repo.fetch(sha)
                return Resolved(url, revision, sha)
        if _SHORT_SHA_RE.match(rev):
            await repo.fetch()
            full = await repo.rev_parse(rev)
            if full:
                return Resolved(url, revision, full)
        raise SourceError(
            f"repository {redact(url)}: revision {revision!r} not found "
            "(no such branch, tag or commit)"
        )

    async def checkout(self, url: str, sha: str) -> Path:
        """A read-only directory holding exactly commit `sha` (shared, cached by SHA)."""
        dest = self.root / CHECKOUT_LAYOUT / sha
        if (dest / ".gitopsd-complete").exists():
            os.utime(dest)
            return dest
        lock = self._checkout_locks.setdefault(sha, anyio.Lock())
        async with lock:
            if (dest / ".gitopsd-complete").exists():
                return dest
            repo = self.repo(url)
            await repo.fetch(sha)
            data = await repo.archive(sha)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=dest.parent))
            await anyio.to_thread.run_sync(_extract, data, tmp)
            (tmp / ".gitopsd-complete").write_text(sha)
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
            self._prune_checkouts()
            return dest

    def _prune_checkouts(self) -> None:
        base = self.root / CHECKOUT_LAYOUT
        dirs = sorted(
            (d for d in base.iterdir() if d.is_dir() and not d.name.startswith(".")),
            key=lambda d: d.stat().st_mtime,
        )
        for old in dirs[: max(0, len(dirs) - self.keep_checkouts)]:
            shutil.rmtree(old, ignore_errors=True)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _extract(data: bytes, dest: Path) -> None:
    """Unpack a `git archive` tarball without letting anything point outside `dest`.

    Directories and files are written first (no symlink exists yet, so nothing can redirect
    them); symlinks come last and are kept only if, resolved on the real filesystem, they stay
    inside the tree. Duplicate names (a hand-made tree can hold both `d` and `d/`) are refused.
    """
    unsafe: list[str] = []
    root = str(dest.resolve())
    if not data.strip(b"\0"):
        return  # the archive of an empty tree
    links: list[tarfile.TarInfo] = []
    seen: set[str] = set()
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        for member in tar.getmembers():
            name = os.path.normpath(member.name)
            target = os.path.normpath(os.path.join(root, name))
            if name.startswith(("/", "..")) or not _inside(target, root) or target == root:
                continue
            if name in seen:
                unsafe.append(f"{name} (duplicate entry)")
                continue
            seen.add(name)
            if member.issym():
                links.append(member)
            elif member.isdir():
                os.makedirs(target, exist_ok=True)
            elif member.isfile():
                os.makedirs(os.path.dirname(target), exist_ok=True)
                f = tar.extractfile(member)
                if f is None:
                    continue
                with open(target, "wb") as out:
                    out.write(f.read())
                mode = stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH
                if member.mode & 0o111:
                    mode |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
                os.chmod(target, mode)
    created: list[tuple[str, str]] = []
    for member in links:
        name = os.path.normpath(member.name)
        lexical_parent = os.path.dirname(os.path.join(root, name))
        real_parent = os.path.realpath(lexical_parent)
        where = os.path.join(real_parent, os.path.basename(name))
        resolved = os.path.normpath(os.path.join(real_parent, member.linkname))
        if (
            real_parent != lexical_parent
            or os.path.isabs(member.linkname)
            or not _inside(resolved, root)
            or os.path.lexists(where)
        ):
            unsafe.append(f"{name} -> {member.linkname}")
            continue
        os.makedirs(real_parent, exist_ok=True)
        os.symlink(member.linkname, where)
        created.append((name, where))
    # Chains of links are judged by where they finally lead.
    for name, where in created:
        if not _inside(os.path.realpath(where), root):
            unsafe.append(f"{name} -> {os.readlink(where)}")
            os.unlink(where)
    if unsafe:
        (dest / UNSAFE_LINKS_FILE).write_text("\n".join(unsafe) + "\n")


def safe_path(root: Path, rel: str, *, what: str) -> Path:
    """`root/rel`, refusing any path (or symlink on it) that leaves `root`."""
    if os.path.isabs(rel):
        raise SourceError(f"{what} {rel!r}: absolute paths are not allowed")
    base = root.resolve()
    candidate = (base / rel).resolve()
    if candidate != base and not str(candidate).startswith(str(base) + os.sep):
        raise SourceError(f"{what} {rel!r} resolves outside the repository")
    unsafe_file = base / UNSAFE_LINKS_FILE
    if not candidate.exists() and unsafe_file.exists():
        norm = os.path.normpath(rel)
        for entry in unsafe_file.read_text().splitlines():
            link = entry.split(" -> ", 1)[0]
            if norm == link or norm.startswith(link + "/"):
                raise SourceError(
                    f"{what} {rel!r} goes through symlink {entry!r} that leaves the repository"
                )
    return candidate


class CheckoutReader:
    """Directory listings and file contents at a revision, from the repo cache (for ApplicationSet
    git generators)."""

    def __init__(
        self,
        cache: RepoCache,
        *,
        max_file_bytes: int = 1024 * 1024,
        max_total_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.cache = cache
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes

    async def _root(self, repo_url: str, revision: str) -> Path:
        resolved = await self.cache.resolve(repo_url, revision, max_age=5.0)
        return await self.cache.checkout(repo_url, resolved.sha)

    async def list_dirs(self, repo_url: str, revision: str) -> list[str]:
        """Every directory in the repository, relative and '/'-separated."""
        root = await self._root(repo_url, revision)
        out = []
        for dirpath, dirnames, _ in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = os.path.relpath(dirpath, root)
            if rel != ".":
                out.append(rel.replace(os.sep, "/"))
        return sorted(out)

    async def read_files(self, repo_url: str, revision: str) -> dict[str, bytes]:
        """Every (regular, not too large) file in the repository by relative path."""
        root = await self._root(repo_url, revision)
        out: dict[str, bytes] = {}
        total = 0
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                p = Path(dirpath) / name
                if name.startswith(".gitopsd") or p.is_symlink():
                    continue
                size = p.stat().st_size
                if size > self.max_file_bytes:
                    continue
                total += size
                if total > self.max_total_bytes:
                    raise SourceError(
                        f"repository {redact(repo_url)}: more than {self.max_total_bytes} bytes "
                        "of files for a git files generator; use a smaller repository"
                    )
                out[str(p.relative_to(root)).replace(os.sep, "/")] = p.read_bytes()
        return out
