"""The `streamtap` command as a user runs it: exit codes and messages, verify's teeth."""

import os
import re
import shutil
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamtap.io.sinks.parquet.read import capture_files
from tests.helpers import STREAMTAP, TcpFeeder, capture, chunks_of, write_config


def streamtap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*STREAMTAP, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A verified capture of 600 kB sent over ~3 s: ~40 chunks in several window files."""
    root = tmp_path_factory.mktemp("recorded")
    data = os.urandom(600_000)
    with TcpFeeder(data, piece=16384, pause=0.08) as feeder:
        capture(
            {
                "sources": [feeder.source("file1", max_bytes=len(data))],
                "chunk": {"max_bytes": 16384, "max_seconds": 1.0},
                "window_seconds": 1,
                "sinks": [{"type": "parquet", "path": str(root / "capture"),
                           "compression": "none"}],
            }
        )
    return root, data


def _copy(recorded, tmp_path):
    root, data = recorded
    shutil.copytree(root / "capture", tmp_path / "capture")
    return str(tmp_path / "capture"), data


def test_validate_reports_every_error_with_its_key(tmp_path):
    config = write_config(
        tmp_path / "bad.yaml",
        {
            "sources": [
                {"id": "a/b", "type": "tcp", "address": "127.0.0.1:9000"},
                {"id": "ok1", "type": "http", "url": "ftp://example.org/x"},
            ],
            "chunk": {"max_bytes": 0},
            "sinks": [{"type": "parquet", "pth": "./x"}],
        },
    )
    result = streamtap("validate", str(config))
    assert result.returncode == 2
    assert "sources[0].id: 'a/b' is not a safe stream id" in result.stderr
    assert "sources[1].url:" in result.stderr and "ftp" in result.stderr
    assert "sinks[0].pth: unknown key; did you mean 'path'?" in result.stderr


def test_validate_accepts_a_good_config_and_run_refuses_an_unwritable_sink(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    config = write_config(
        tmp_path / "good.yaml",
        {
            "sources": [{"id": "s1", "type": "synthetic"}],
            "sinks": [{"type": "parquet", "path": str(blocker / "capture")}],
        },
    )
    assert streamtap("validate", "--offline", str(config)).returncode == 0
    result = streamtap("run", str(config), "--duration", "1")
    assert result.returncode == 1
    assert "cannot create" in result.stderr and str(blocker) in result.stderr


def test_verify_passes_and_reassemble_writes_the_exact_bytes(recorded, tmp_path):
    root, data = recorded
    result = streamtap("verify", str(root / "capture"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "file1:" in result.stdout and "OK" in result.stdout
    output = tmp_path / "out.bin"
    result = streamtap("reassemble", str(root / "capture"), "--stream", "file1", "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert output.read_bytes() == data


def test_reassemble_selects_an_event_time_range(recorded, tmp_path):
    root, data = recorded
    chunks = chunks_of(str(root / "capture"), "file1")
    import datetime

    def iso(epoch):
        return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat()

    middle = chunks[len(chunks) // 2]
    output = tmp_path / "part.bin"
    result = streamtap(
        "reassemble", str(root / "capture"), "--stream", "file1", "--output", str(output),
        "--start", iso(middle.event_time),
    )
    assert result.returncode == 0, result.stderr
    expected = b"".join(c.payload for c in chunks if c.event_time >= middle.event_time)
    assert output.read_bytes() == expected and len(expected) < len(data)


def test_verify_fails_on_a_corrupted_payload(recorded, tmp_path):
    location, _ = _copy(recorded, tmp_path)
    victim = capture_files(location)[0]
    table = pq.read_table(victim)
    payloads = table.column("payload").to_pylist()
    payloads[0] = bytes([payloads[0][0] ^ 0xFF]) + payloads[0][1:]
    table = table.set_column(table.schema.get_field_index("payload"), "payload",
                             pa.array(payloads, pa.binary()))
    pq.write_table(table, victim)
    result = streamtap("verify", location)
    assert result.returncode == 1
    assert "checksum mismatch" in result.stdout


def test_verify_fails_on_a_missing_file(recorded, tmp_path):
    location, _ = _copy(recorded, tmp_path)
    files = capture_files(location)
    assert len(files) >= 3
    files[1].unlink()
    result = streamtap("verify", location)
    assert result.returncode == 1
    assert "missing" in result.stdout


def test_verify_drops_exact_redeliveries_but_fails_on_conflicting_duplicates(recorded, tmp_path):
    location, data = _copy(recorded, tmp_path)
    first = capture_files(location)[0]
    shutil.copy(first, first.with_name("999999-" + first.name))  # the same chunks again
    result = streamtap("verify", location)
    assert result.returncode == 0, result.stdout
    redelivered = re.search(r", (\d+) redelivered", result.stdout)
    assert redelivered and int(redelivered.group(1)) > 0, result.stdout
    output = tmp_path / "out.bin"
    streamtap("reassemble", location, "--stream", "file1", "--output", str(output))
    assert output.read_bytes() == data

    table = pq.read_table(first)
    sessions = ["another-session"] * table.num_rows
    table = table.set_column(table.schema.get_field_index("session"), "session",
                             pa.array(sessions, pa.string()))
    pq.write_table(table, first.with_name("999998-" + first.name))
    result = streamtap("verify", location)
    assert result.returncode == 1
    assert "duplicate sequence number" in result.stdout


def test_verify_of_an_empty_or_missing_location_is_an_error(tmp_path):
    result = streamtap("verify", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "not a directory" in result.stderr
    (tmp_path / "empty").mkdir()
    result = streamtap("verify", str(tmp_path / "empty"))
    assert result.returncode == 1 and "no chunks" in result.stderr


def test_no_temporary_or_partial_files_remain(recorded):
    root, _ = recorded
    names = [p.name for p in (root / "capture").rglob("*") if p.is_file()]
    assert names and all(name.endswith(".parquet") and not name.startswith(".") for name in names)
    for path in (root / "capture").rglob("*.parquet"):
        assert path.parent.name.startswith("date=") and path.parent.parent.name == "stream=file1"
