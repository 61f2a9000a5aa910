"""A full disk, for real: captures into a 2 MiB tmpfs. The write is retried with backoff while
the disk is full; space freed in time lets the capture go on, and a disk that stays full ends the
run with one line saying so, a summary that counts what is on disk, and complete files."""

from __future__ import annotations

import re
import subprocess
import threading
import time

import pytest

from streamtap.captures import read_capture, verify
from streamtap.io.sinks.activity import all_sink_activity
from streamtap.io.sources.synthetic import synthetic_bytes
from streamtap.plugins import parse_config
from tests.helpers import STREAMTAP, capture, stream_bytes, write_config

SENSOR = {"id": "sensor1", "type": "synthetic", "rate": 50000, "sample_format": "float64"}


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB file system of its own (tmpfs; the tests run as root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _config(path, **sink) -> dict:
    return {
        "sources": [dict(SENSOR, **sink.pop("source", {}))],
        "chunk": {"max_bytes": 65536, "max_seconds": 0.5},
        "window_seconds": 1,
        "sinks": [{"type": "parquet", "path": str(path), "compression": "none", **sink}],
    }


def _written(output: str) -> dict[str, int]:
    """The Parquet sink's counts in the end-of-run summary."""
    summary = output[output.index("streamtap: summary"):]
    line = next(line for line in summary.splitlines() if line.strip().startswith("parquet "))
    return {
        name.replace(" ", "_"): int(re.search(rf" {name} (\d+)", line).group(1))
        for name in ("files written", "chunks written", "bytes written", "write retries")
    }


def test_a_disk_that_stays_full_ends_the_run_with_one_clear_line(small_disk, tmp_path):
    config = write_config(tmp_path / "pipeline.yaml", _config(small_disk, max_retry_seconds=2))
    run = subprocess.run(
        [*STREAMTAP, "run", str(config), "--duration", "30", "--status-interval", "1"],
        capture_output=True, text=True, timeout=240,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "Traceback" not in output and "  File " not in output, output
    failed = [line for line in output.splitlines() if "the pipeline failed" in line]
    assert len(failed) == 1, output
    assert failed[0].startswith(
        f"streamtap: the pipeline failed: parquet sink: no space left on device writing "
        f"{small_disk}/stream=sensor1/"
    ), failed
    assert "retried for 2 s" in failed[0] and "free space on that file system" in failed[0]
    assert len([line for line in output.splitlines() if "no space left" in line]) == 2, output
    assert len(output.splitlines()) < 60, output

    # The summary counts what is on disk, and what is on disk is complete and verifies.
    on_disk = verify(read_capture(str(small_disk)))
    assert on_disk["sensor1"].ok, on_disk["sensor1"].problems
    written = _written(output)
    assert written["chunks_written"] == on_disk["sensor1"].chunks > 0
    assert written["bytes_written"] == on_disk["sensor1"].bytes
    assert written["write_retries"] >= 1
    assert [p.name for p in small_disk.rglob(".*")] == []  # no temporary file left
    data = stream_bytes(str(small_disk), "sensor1")
    source = parse_config(_config(small_disk)).sources[0]
    assert data == synthetic_bytes(source, 0, len(data) // 8)


def test_space_freed_while_the_write_is_retried_lets_the_capture_go_on(small_disk):
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 1_300_000)
    total = 1_200_000  # 3 s of the sensor; about half of it fits beside the filler
    config = _config(small_disk, max_retry_seconds=120, source={"max_bytes": total})

    def free_space_once_retrying() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(a.counts().get("write_retries") for a in all_sink_activity()):
                filler.unlink()
                return
            time.sleep(0.05)

    freer = threading.Thread(target=free_space_once_retrying, daemon=True)
    freer.start()
    output = capture(config, runner="FnApiRunner")
    freer.join(timeout=5)
    assert not filler.exists(), "the writer never found the disk full"

    report = verify(read_capture(str(small_disk)))["sensor1"]
    assert report.ok and report.bytes == total, report.problems
    data = stream_bytes(str(small_disk), "sensor1")
    assert data == synthetic_bytes(parse_config(config).sources[0], 0, total // 8)
    written = _written(output)
    assert written["chunks_written"] == report.chunks
    assert written["bytes_written"] == total and written["write_retries"] >= 1
