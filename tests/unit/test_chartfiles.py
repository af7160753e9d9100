"""The chart unpacker on crafted archives (pure: no network): PAX-header bombs, duplicate
members and truncated data are refused naming the member, within a few MB of memory."""

from __future__ import annotations

import gzip
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from daemon.errors import SourceError
from daemon.sources.chartfiles import ChartLimits, unpack
from tests.hostile.chartservers import CHART_YAML, member, write_archive


def test_a_pax_header_bomb_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A PAX header of 200 MB (tarfile reads a header whole into memory) stops at the 1 MB
    header allowance: the unpacker allocates a few MB, not the header's size."""
    archive = tmp_path / "c.tgz"
    n = 200 * 1024 * 1024
    body = len(" comment=\n") + n
    length = body + len(str(body + len(str(body))))
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = tarfile.XHDTYPE, length
    with gzip.open(archive, "wb", compresslevel=1) as gz:
        gz.write(pax.tobuf(format=tarfile.USTAR_FORMAT) + f"{length} comment=".encode())
        for _ in range(n // (1 << 20)):
            gz.write(b"x" * (1 << 20))
        gz.write(b"\n" + bytes(-length % 512))
        info, data = member("hello/Chart.yaml", CHART_YAML)
        gz.write(info.tobuf(format=tarfile.USTAR_FORMAT) + data + bytes(-len(data) % 512 + 1024))
    tracemalloc.start()
    try:
        with pytest.raises(SourceError, match=r"c 1\.0: an archive header .* than 1048576 bytes"):
            unpack(archive, tmp_path / "out", chart="hello", where="c 1.0", limits=ChartLimits())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, peak


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        (
            [member("hello/Chart.yaml", CHART_YAML), member("hello/Chart.yaml", CHART_YAML)],
            "archive member 'hello/Chart.yaml' appears twice",
        ),
        ([member("hello/./Chart.yaml", CHART_YAML)], "has an empty, '.' or '..' component"),
        ([member("other/Chart.yaml", CHART_YAML)], "'other/Chart.yaml' is outside hello/"),
        ([member("hello/f", kind=tarfile.FIFOTYPE)], "archive member 'hello/f' is a FIFO"),
    ],
)
def test_crafted_members_are_refused(tmp_path: Path, members: list[object], expected: str) -> None:
    """Duplicates, `.` components, paths outside the chart and FIFOs are refused by name."""
    write_archive(tmp_path / "c.tgz", members)
    with pytest.raises(SourceError, match=r"^c 1\.0: ") as e:
        unpack(
            tmp_path / "c.tgz", tmp_path / "out", chart="hello", where="c 1.0", limits=ChartLimits()
        )
    assert expected in str(e.value)


def test_a_truncated_archive_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    """An archive cut short names the chart and says it is not readable."""
    data = write_archive(tmp_path / "c.tgz", [member("hello/Chart.yaml", CHART_YAML * 100)])
    (tmp_path / "c.tgz").write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"^c 1\.0: not a readable chart archive"):
        unpack(
            tmp_path / "c.tgz", tmp_path / "out", chart="hello", where="c 1.0", limits=ChartLimits()
        )


def _settings_file(tmp_path: Path, **values: object) -> Path:
    import yaml

    cfg = tmp_path / "gitopsd.yaml"
    cluster = {"name": "in-cluster", "server": "https://kubernetes.default.svc"}
    settings = {"stateDir": str(tmp_path / "state"), **values}
    cfg.write_text(yaml.safe_dump({"clusters": [cluster], "settings": settings}))
    return cfg


def test_chart_limits_come_from_settings_with_helms_defaults(tmp_path: Path) -> None:
    """maxChartBytes, maxChartFiles, maxChartFileBytes, maxChartIndexBytes and maxYamlNodes
    set the limits; unset, a chart gets helm's 100 MiB / 5 MiB; zero is refused by name."""
    from daemon import settings
    from daemon.errors import ConfigError

    defaults = ChartLimits.of(settings.load(_settings_file(tmp_path)).settings)
    assert (defaults.max_bytes, defaults.max_file_bytes) == (100 * 1024 * 1024, 5 * 1024 * 1024)
    assert (defaults.max_files, defaults.max_index_bytes) == (10_000, 64 * 1024 * 1024)
    cfg = _settings_file(
        tmp_path,
        maxChartBytes=1000,
        maxChartFiles=7,
        maxChartFileBytes=100,
        maxChartIndexBytes=2000,
        maxYamlNodes=50,
    )
    assert ChartLimits.of(settings.load(cfg).settings) == ChartLimits(1000, 7, 100, 2000, 50)
    with pytest.raises(ConfigError, match="maxChartFiles: must be a positive integer"):
        settings.load(_settings_file(tmp_path, maxChartFiles=0))
