"""Chart archives and trees from a repository or a registry, treated as hostile: unpacked
streaming within limits (total bytes, file count, bytes per file, counted as they are
written), members that are links, devices or paths leaving the chart refused by name.

Python's tarfile `data` filter (PEP 706) admits links that stay inside the destination and
bounds no size, so the members are checked here instead.
"""

from __future__ import annotations

import gzip
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from daemon.errors import SourceError
from daemon.settings import Settings

_CHUNK = 64 * 1024
# What tarfile may read between two members' data: headers, PAX records, long names and
# padding. A PAX header is read whole into memory, so this bounds the memory a header can take.
_HEADER_ALLOWANCE = 1024 * 1024


_DEFAULTS = Settings()


@dataclass(frozen=True, slots=True)
class ChartLimits:
    """Bounds on one chart and on a repository's index: settings `maxChartBytes`,
    `maxChartFiles`, `maxChartFileBytes`, `maxChartIndexBytes` and `maxYamlNodes`."""

    max_bytes: int = _DEFAULTS.max_chart_bytes  # unpacked size of one chart, and its archive
    max_files: int = _DEFAULTS.max_chart_files  # files and directories in one chart
    max_file_bytes: int = _DEFAULTS.max_chart_file_bytes  # one file of a chart
    max_index_bytes: int = _DEFAULTS.max_chart_index_bytes  # one repository's index.yaml
    max_nodes: int = _DEFAULTS.max_yaml_nodes  # nodes index.yaml may expand to (alias bombs)

    @classmethod
    def of(cls, settings: Settings) -> ChartLimits:
        """The limits `settings` set."""
        return cls(
            max_bytes=settings.max_chart_bytes,
            max_files=settings.max_chart_files,
            max_file_bytes=settings.max_chart_file_bytes,
            max_index_bytes=settings.max_chart_index_bytes,
            max_nodes=settings.max_yaml_nodes,
        )


class _TooMuch(Exception):
    """The decompressed stream passed what its members may take."""


class _Counted:
    """The decompressed archive, read by tarfile, refusing to read past `ceiling` bytes."""

    def __init__(self, raw: gzip.GzipFile) -> None:
        self.raw = raw
        self.count = 0
        self.ceiling = _HEADER_ALLOWANCE

    def read(self, size: int = -1) -> bytes:
        want = _CHUNK if size is None or size < 0 else size
        data = self.raw.read(min(want, max(self.ceiling - self.count + 1, 0)))
        self.count += len(data)
        if self.count > self.ceiling:
            raise _TooMuch
        return data


def check_member(name: str, chart: str) -> str:
    """The reason member `name` may not be part of chart `chart`'s archive ("" when it may):
    absolute, `..`, `.` or empty components, or outside `<chart>/`."""
    parts = name.split("/")
    if name.startswith("/"):
        return "is an absolute path"
    if any(p in ("", ".", "..") for p in parts):
        return "has an empty, '.' or '..' component"
    if parts[0] != chart:
        return f"is outside {chart}/"
    return ""


def unpack(archive: Path, dest: Path, *, chart: str, where: str, limits: ChartLimits) -> None:
    """Extract the gzipped chart archive `archive` into the new directory `dest`: regular
    files and directories only, every path under `<chart>/`, within `limits`. SourceError
    naming `where` (the chart and version) and the member otherwise."""
    dest.mkdir(parents=True)
    try:
        with gzip.open(archive, "rb") as raw:
            _extract(_Counted(raw), dest, chart=chart, where=where, limits=limits)
    except _TooMuch:
        raise SourceError(
            f"{where}: an archive header (PAX records, a long name) is larger than "
            f"{_HEADER_ALLOWANCE} bytes"
        ) from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
        raise SourceError(f"{where}: not a readable chart archive: {e}") from e


def _extract(stream: _Counted, dest: Path, *, chart: str, where: str, limits: ChartLimits) -> None:
    files = total = 0
    with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
        for info in tar:
            name = info.name
            if (reason := check_member(name, chart)) or (reason := _kind(info)):
                raise SourceError(f"{where}: archive member {name!r} {reason}")
            files += 1
            if files > limits.max_files:
                raise SourceError(
                    f"{where}: the archive has more than {limits.max_files} files "
                    f"(maxChartFiles; at member {name!r})"
                )
            if info.isdir():
                (dest / name).mkdir(parents=True, exist_ok=True)
                stream.ceiling = stream.count + _HEADER_ALLOWANCE
                continue
            _check_size(info.size, total, where=where, member=name, limits=limits)
            # Exactly the member's data (plus block padding) may be read next.
            stream.ceiling = stream.count + info.size + _HEADER_ALLOWANCE
            source = tar.extractfile(info)
            if source is None:
                raise SourceError(f"{where}: archive member {name!r} has no data")
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            target = dest / name
            total += _copy(source, target, where=where, member=name, total=total, limits=limits)


def _kind(info: tarfile.TarInfo) -> str:
    """Why a member's type is refused ("" for a regular file or a directory)."""
    if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
        return ""
    if info.issym():
        return f"is a symbolic link (to {info.linkname!r})"
    if info.islnk():
        return f"is a hard link (to {info.linkname!r})"
    if info.ischr() or info.isblk():
        return "is a device file"
    if info.isfifo():
        return "is a FIFO"
    return f"has type {info.type!r}, not a regular file or directory"


def _check_size(size: int, total: int, *, where: str, member: str, limits: ChartLimits) -> None:
    if size > limits.max_file_bytes:
        raise SourceError(
            f"{where}: archive member {member!r} is larger than {limits.max_file_bytes} bytes "
            "(maxChartFileBytes)"
        )
    if total + size > limits.max_bytes:
        raise SourceError(
            f"{where}: the archive unpacks past {limits.max_bytes} bytes (maxChartBytes; "
            f"at member {member!r})"
        )


def _copy(
    source: IO[bytes], target: Path, *, where: str, member: str, total: int, limits: ChartLimits
) -> int:
    """Write one member, counting the bytes really written; the count."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags, 0o644)
    except FileExistsError:
        raise SourceError(f"{where}: archive member {member!r} appears twice") from None
    written = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            _check_size(written, total, where=where, member=member, limits=limits)
            out.write(chunk)
    return written
