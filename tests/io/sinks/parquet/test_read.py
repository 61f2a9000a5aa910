"""Reading a Parquet capture back from real files: a stream by its exact id, its files in
first-seq order, a few rows at a time, temporary files never."""

from __future__ import annotations

import hashlib
import os
import shutil
import tracemalloc

from apache_beam.transforms.window import IntervalWindow
from apache_beam.utils.timestamp import Timestamp

from streamtap.captures import read_capture, reassemble, verify
from streamtap.chunk import make_chunk
from streamtap.io.sinks.parquet import config as parquet_config
from streamtap.io.sinks.parquet.read import capture_end, capture_files, read_parquet_chunks
from streamtap.io.sinks.parquet.write import _WriteBundleFilesFn

DAY = 1_796_515_200.0  # 2026-12-06T00:00:00Z


def write_files(path, chunks, window_seconds: float = 10.0) -> list[str]:
    """Writes chunks with the sink's own writer (files per stream and window), as one bundle."""
    writer = _WriteBundleFilesFn(str(path), "none")
    writer.setup()
    try:
        writer.start_bundle()
        written = []
        for chunk in chunks:
            start = chunk.event_time - chunk.event_time % window_seconds
            window = IntervalWindow(Timestamp.of(start), Timestamp.of(start + window_seconds))
            written += [wv.value for wv in writer.process(chunk, window=window)]
        written += [wv.value for wv in writer.finish_bundle()]
    finally:
        writer.teardown()
    return written


def stream(stream_id: str, times: list[float], size: int = 1000, first_seq: int = 0) -> list:
    return [
        make_chunk(stream_id, "s", first_seq + i, (first_seq + i) * size, os.urandom(size), t)
        for i, t in enumerate(times)
    ]


def test_a_stream_is_selected_by_its_exact_id_never_as_a_pattern(tmp_path):
    write_files(tmp_path, stream("a", [DAY + 1, DAY + 2]) + stream("b", [DAY + 1])
                + stream("ab", [DAY + 1]))
    assert {c.stream_id for c in read_parquet_chunks(str(tmp_path), "a")} == {"a"}
    for pattern in ("[ab]", "*", "a*", "?", "a?"):
        assert list(read_parquet_chunks(str(tmp_path), pattern)) == [], pattern
        assert capture_end(str(tmp_path), pattern) is None, pattern
    assert capture_end(str(tmp_path), "a") == (2, 2000)


def test_files_come_in_first_seq_order_not_name_order(tmp_path):
    """The clock stepped back across midnight: seq 10.. has earlier names than seq 0..; a
    reorder buffer far smaller than the stream still reassembles it."""
    chunks = stream("a", [DAY + 5 + i * 0.1 for i in range(10)], size=65536)
    chunks += stream("a", [DAY - 10 + i * 0.1 for i in range(10)], size=65536, first_seq=10)
    write_files(tmp_path, chunks)
    names = [f"{file.parent.name}/{file.name}" for file in capture_files(str(tmp_path), "a")]
    assert names == ["date=2026-12-06/000000-000000000000.parquet",
                     "date=2026-12-05/235950-000000000010.parquet"]
    assert [c.seq for c in read_parquet_chunks(str(tmp_path), "a")] == list(range(20))
    output = __import__("io").BytesIO()
    counts = reassemble(read_capture(str(tmp_path), "a"), output, max_held_bytes=128 * 1024)
    assert counts["chunks"] == 20
    assert output.getvalue() == b"".join(c.payload for c in chunks)


class _Digest:
    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return len(data)


def test_reassemble_reads_a_capture_a_few_rows_at_a_time(tmp_path):
    """48 MiB in two files of 24 MiB: reassemble with a 256 KiB reorder buffer holds a few
    chunks at a time, never a whole file."""
    times = [DAY + 10 * (i // 384) + (i % 384) * 0.02 for i in range(768)]
    chunks = stream("big", times, size=65536)
    write_files(tmp_path, chunks)
    assert len(capture_files(str(tmp_path), "big")) == 2
    want = hashlib.sha256(b"".join(c.payload for c in chunks)).hexdigest()
    del chunks

    out = _Digest()
    tracemalloc.start()
    try:
        counts = reassemble(read_capture(str(tmp_path), "big"), out, max_held_bytes=256 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert counts["chunks"] == 768 and out.hash.hexdigest() == want
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_verify_and_resume_ignore_temporary_files(tmp_path):
    capture = tmp_path / "capture"
    written = write_files(capture, stream("a", [DAY + 1, DAY + 2, DAY + 3]))
    day = os.path.dirname(written[0])
    # What a writer that died mid-write leaves: a hidden temporary name, even a complete file,
    # holding chunks further on.
    later = write_files(tmp_path / "other", stream("a", [DAY + 11], first_seq=3))[0]
    shutil.copy(later, os.path.join(day, ".000010-000000000003.parquet.tmp-0123abcd"))
    assert len(os.listdir(day)) == 2
    assert [c.seq for c in read_parquet_chunks(str(capture), "a")] == [0, 1, 2]
    assert verify(read_capture(str(capture)))["a"].chunks == 3
    sink = parquet_config.ParquetSink(path=str(capture))
    assert sink.resume_positions(["a"]) == {"a": (3, 3000)}


def test_a_run_into_a_capture_holding_an_unreadable_file_stops_with_the_file_named(tmp_path, capsys):
    """Resume used to crash with pyarrow's traceback; now the run does not start, and says which
    file and what to do (issue #14)."""
    from streamtap.cli import main
    from tests.helpers import write_config

    capture_dir = tmp_path / "capture"
    write_files(str(capture_dir), stream("s1", [0.0, 1.0, 2.0]))
    damaged = sorted(capture_files(str(capture_dir), "s1"))[-1]
    damaged.write_bytes(b"not parquet at all")
    config = write_config(tmp_path / "p.yaml", {
        "sources": [{"id": "s1", "type": "synthetic"}],
        "sinks": [{"type": "parquet", "path": str(capture_dir)}],
    })
    assert main(["run", str(config), "--duration", "1", "--runner=FnApiRunner"]) == 2
    err = capsys.readouterr().err
    assert f"resume: cannot read {damaged}" in err and "where stream s1 ended is unknown" in err
    assert "Traceback" not in err
