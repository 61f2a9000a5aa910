"""The Parquet sink without a shuffle (Parquet-only captures): real sockets and files.

When every sink is Parquet, streams hand over a window at a time and the sink writes each
stream's chunks as they leave the reading step; a window may be in several files (fast streams,
retried bundles). These tests check that verify, reassemble and resume take that in their stride,
byte for byte, and what happens to the files of a retried or failed bundle.
"""

import collections
import datetime
import os
import signal
import time

import psutil
import pyarrow.parquet as pq
import pytest
from apache_beam.transforms.window import IntervalWindow
from apache_beam.utils.timestamp import Timestamp

from streamtap.captures import read_capture, reassemble, verify
from streamtap.chunk import make_chunk
from streamtap.errors import SinkError
from streamtap.io.sinks.parquet.format import chunk_columns
from streamtap.io.sinks.parquet.read import capture_end, capture_files
from streamtap.io.sinks.parquet.write import _WriteBundleFilesFn
from streamtap.io.sinks.parquet.writer_processes import WriterProcessError, WriterProcesses
from tests.helpers import TcpFeeder, assert_verified, capture, chunks_of, stream_bytes


def _config(sources, path, max_bytes=65536, max_seconds=1.0, window_seconds=1, **sink):
    return {
        "sources": sources,
        "chunk": {"max_bytes": max_bytes, "max_seconds": max_seconds},
        "window_seconds": window_seconds,
        "sinks": [{"type": "parquet", "path": str(path), "compression": "none", **sink}],
    }


def _files_by_window(location: str, stream_id: str) -> dict[str, list]:
    """{window start HHMMSS: [file, ...]} from the file names."""
    windows = collections.defaultdict(list)
    for file in capture_files(location, stream_id):
        windows[file.name.split("-")[0]].append(file)
    return windows


def _check_files_match_their_names(location: str, stream_id: str, window_seconds: float):
    """Every file holds one window's chunks, ascending, named by window start and first seq."""
    for file in capture_files(location, stream_id):
        table = pq.read_table(file, columns=["seq", "event_time"])
        seqs = table.column("seq").to_pylist()
        times = [t.timestamp() for t in table.column("event_time").to_pylist()]
        assert seqs == sorted(seqs) and seqs, file
        start = min(times) - min(times) % window_seconds
        assert max(times) < start + window_seconds, f"{file} spans two windows"
        stamp = datetime.datetime.fromtimestamp(start, datetime.timezone.utc)
        assert file.name == f"{stamp:%H%M%S}-{seqs[0]:012d}.parquet"
        assert file.parent.name == f"date={stamp:%Y-%m-%d}"


def test_bounded_capture_over_several_windows_is_byte_exact_without_a_shuffle(tmp_path):
    data = os.urandom(600_000)
    with TcpFeeder(data, piece=16384, pause=0.08) as feeder:  # ~3 s: several 1 s windows
        output = capture(
            _config(
                [feeder.source("tcp1", max_bytes=len(data))],
                tmp_path,
                max_bytes=16384,
            )
        )
    assert "(bounded)" in output
    assert stream_bytes(str(tmp_path), "tcp1") == data
    reports = assert_verified(str(tmp_path), streams=1)
    assert reports["tcp1"].redeliveries == 0
    assert len(_files_by_window(str(tmp_path), "tcp1")) >= 3
    _check_files_match_their_names(str(tmp_path), "tcp1", 1)
    names = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert all(not name.startswith(".") for name in names), names  # no temporary file left


def test_fast_stream_window_in_several_files_verifies_and_a_second_run_resumes(tmp_path):
    # 80 MiB inside one 60 s window: the reader hands it over in several bundles (its buffer
    # holds 64 MiB at most), so the window has several files.
    first = os.urandom(80 * 1024 * 1024)
    with TcpFeeder(first, piece=1024 * 1024, pause=0) as feeder:
        capture(
            _config(
                [feeder.source("fast1", max_bytes=len(first))],
                tmp_path,
                window_seconds=60,
            )
        )
    windows = _files_by_window(str(tmp_path), "fast1")
    assert max(len(files) for files in windows.values()) >= 2, windows
    _check_files_match_their_names(str(tmp_path), "fast1", 60)
    assert stream_bytes(str(tmp_path), "fast1") == first
    assert_verified(str(tmp_path), streams=1)
    chunks = len(first) // 65536
    assert capture_end(str(tmp_path), "fast1") == (chunks, len(first))

    second = os.urandom(3_000_000)
    with TcpFeeder(second, piece=65536) as feeder:
        output = capture(
            _config(
                [feeder.source("fast1", max_bytes=len(second))],
                tmp_path,
                window_seconds=60,
            )
        )
    assert f"fast1: continuing the capture at seq {chunks}, byte {len(first)}" in output
    assert stream_bytes(str(tmp_path), "fast1") == first + second
    report = assert_verified(str(tmp_path), streams=1)["fast1"]
    assert report.sessions == 2 and report.discontinuities == 1
    assert chunks_of(str(tmp_path), "fast1")[chunks].discontinuity


def test_per_window_option_groups_a_bounded_capture_into_one_file_per_window(tmp_path):
    data = os.urandom(400_000)
    with TcpFeeder(data, piece=16384, pause=0.08) as feeder:
        capture(
            _config(
                [feeder.source("tcp1", max_bytes=len(data))],
                tmp_path,
                max_bytes=16384,
                files="per_window",
            )
        )
    assert stream_bytes(str(tmp_path), "tcp1") == data
    assert_verified(str(tmp_path), streams=1)
    windows = _files_by_window(str(tmp_path), "tcp1")
    assert len(windows) >= 2
    assert all(len(files) == 1 for files in windows.values()), windows


def test_with_another_sink_the_parquet_sink_groups_per_window(tmp_path):
    # Streams then do not hand over whole windows (the other sink wants every chunk at once),
    # so writing per bundle would make a file per poll: the sink groups per window instead.
    data = os.urandom(400_000)
    feeder = TcpFeeder(data, piece=16384, pause=0.08)
    config = _config(
        [feeder.source("tcp1", max_bytes=len(data))],
        tmp_path / "a",
        max_bytes=16384,
    )
    config["sinks"].append({"type": "parquet", "path": str(tmp_path / "b"), "files": "per_window"})
    try:
        capture(config)
    finally:
        feeder.close()
    for location in (tmp_path / "a", tmp_path / "b"):
        assert stream_bytes(str(location), "tcp1") == data
        assert_verified(str(location), streams=1)
        windows = _files_by_window(str(location), "tcp1")
        assert len(windows) >= 2
        assert all(len(files) == 1 for files in windows.values()), windows


# --- the writer DoFn driven bundle by bundle, as the runner does, on real files ---------------

_START = 1_790_000_000.0  # a window boundary for 2 s windows


def _stream(count: int, seconds_apart: float = 0.25, size: int = 5000):
    session = "0123456789abcdef"
    return [
        make_chunk("s1", session, seq, seq * size, os.urandom(size), _START + seq * seconds_apart)
        for seq in range(count)
    ]


def _window(chunk, size: float = 2.0) -> IntervalWindow:
    start = chunk.event_time - (chunk.event_time - _START) % size
    return IntervalWindow(Timestamp.of(start), Timestamp.of(start + size))


def _run_bundle(fn: _WriteBundleFilesFn, chunks) -> list[str]:
    """One bundle through the writer: start, every chunk, finish; returns the files written."""
    fn.start_bundle()
    written = []
    for chunk in chunks:
        written += [wv.value for wv in fn.process(chunk, window=_window(chunk)) or []]
    written += [wv.value for wv in fn.finish_bundle()]
    return written


@pytest.fixture
def writer(tmp_path):
    fn = _WriteBundleFilesFn(str(tmp_path), "none")
    fn.setup()
    yield fn
    fn.teardown()


def _read_back(location: str):
    output = __import__("io").BytesIO()
    reassemble(read_capture(location, "s1"), output)
    return output.getvalue(), verify(read_capture(location))["s1"]


def test_a_bundle_writes_one_file_per_window_named_by_its_first_chunk(writer, tmp_path):
    chunks = _stream(20)  # 5 s of chunks: windows of 2 s from _START
    written = _run_bundle(writer, chunks)
    names = sorted(os.path.basename(path) for path in written)
    assert names == ["141320-000000000000.parquet", "141322-000000000008.parquet",
                     "141324-000000000016.parquet"]
    data, report = _read_back(str(tmp_path))
    assert data == b"".join(c.payload for c in chunks) and report.ok
    assert capture_end(str(tmp_path), "s1") == (20, 20 * 5000)


def test_a_writer_assigning_windows_itself_writes_the_files_windowinto_would(tmp_path):
    """Bounded Parquet-only captures skip WindowInto: the writer windows each chunk from its
    event time (benchmark scenario 1). The windows are FixedWindows' own, also for event times
    on and just below a window's edge, and the paths come out in the global window."""
    from apache_beam.transforms.window import FixedWindows, GlobalWindow, WindowFn

    from streamtap.io.sinks.parquet.write import _WriteBundleFilesOwnWindowsFn

    edges = [_START - 1e-6, _START, _START + 1.999999, _START + 2.0, _START + 3.0000004]
    chunks = [
        make_chunk("s1", "0123456789abcdef", seq, seq * 100, os.urandom(100), event_time)
        for seq, event_time in enumerate(edges)
    ]
    fixed = FixedWindows(2.0)
    for chunk in chunks:  # what WindowInto gives a chunk (its timestamp is its event time)
        timestamp = Timestamp.of(chunk.event_time)
        [expected] = fixed.assign(WindowFn.AssignContext(timestamp, element=chunk))
        own = _WriteBundleFilesOwnWindowsFn(str(tmp_path / "w"), "none", window_seconds=2.0)
        own.setup()
        try:
            own.start_bundle()
            own.process(chunk)
            [written] = own.finish_bundle()
        finally:
            own.teardown()
        assert written.windows == (GlobalWindow(),)
        assert written.timestamp == expected.max_timestamp()
    fn = _WriteBundleFilesOwnWindowsFn(str(tmp_path / "own"), "none", window_seconds=2.0)
    fn.setup()
    try:
        fn.start_bundle()
        own_files = [wv.value for c in chunks for wv in fn.process(c)]
        own_files += [wv.value for wv in fn.finish_bundle()]
    finally:
        fn.teardown()
    reference = _WriteBundleFilesFn(str(tmp_path / "ref"), "none")
    reference.setup()
    try:
        reference.start_bundle()
        windowed = []
        for chunk in chunks:
            context = WindowFn.AssignContext(Timestamp.of(chunk.event_time), element=chunk)
            windowed += [wv.value for wv in reference.process(chunk, fixed.assign(context)[0])]
        windowed += [wv.value for wv in reference.finish_bundle()]
    finally:
        reference.teardown()
    relative = lambda paths, root: sorted(os.path.relpath(p, tmp_path / root) for p in paths)
    assert relative(own_files, "own") == relative(windowed, "ref")
    assert len(own_files) == 3


def test_the_own_windows_transform_gives_the_file_paths_their_windows(tmp_path):
    """WriteChunksToParquet.own_windows() in a pipeline: chunks without windows in, each path
    out in the window of its chunks (as when WindowInto came first)."""
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to
    from apache_beam.transforms.window import FixedWindows
    from apache_beam.utils.timestamp import Duration

    from streamtap.io.sinks.parquet.config import ParquetSink
    from streamtap.io.sinks.parquet.write import WriteChunksToParquet

    chunks = _stream(10)  # 0.25 s apart: windows of 2 s from _START

    def named(path, window=beam.DoFn.WindowParam):
        return os.path.basename(path), float(window.start), float(window.end)

    sink = ParquetSink(path=str(tmp_path), compression="none")
    transform = WriteChunksToParquet(sink, whole_windows=True).own_windows(2.0, Duration(0))
    assert WriteChunksToParquet(sink).own_windows(2.0, Duration(0)) is None  # per window
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        files = pipeline | beam.Create(chunks, reshuffle=False) | transform
        assert isinstance(files.windowing.windowfn, FixedWindows)
        assert_that(files | beam.Map(named), equal_to([
            ("141320-000000000000.parquet", _START, _START + 2),
            ("141322-000000000008.parquet", _START + 2, _START + 4),
        ]))
    data, report = _read_back(str(tmp_path))
    assert data == b"".join(c.payload for c in chunks) and report.ok


def test_a_retried_bundle_never_loses_chunks_of_the_first_attempt(writer, tmp_path):
    chunks = _stream(14)
    # First attempt: chunks 0..11 reach the disk, then the bundle fails (it is not committed).
    _run_bundle(writer, chunks[:12])
    # The retry ends earlier (the runner split it after chunk 9): the file of window 2 (first
    # seq 8) would shrink to 8..9; the one on disk goes further and is kept.
    _run_bundle(writer, chunks[:10])
    window_2 = tmp_path / "stream=s1" / "date=2026-09-21" / "141322-000000000008.parquet"
    assert pq.read_table(window_2).column("seq").to_pylist() == list(range(8, 12))
    # The residual goes on from chunk 10: chunks 10..11 are on disk twice, with the same bytes.
    _run_bundle(writer, chunks[10:])
    data, report = _read_back(str(tmp_path))
    assert data == b"".join(c.payload for c in chunks)
    assert report.ok, report.problems
    assert report.redeliveries == 2
    assert capture_end(str(tmp_path), "s1") == (14, 14 * 5000)


def test_a_failed_write_leaves_a_prefix_of_the_stream_and_no_temporary_file(writer, tmp_path):
    # 40 chunks 6000 s apart, a file each: chunks 0..5 on 2026-09-21, 6..20 on the 22nd,
    # 21..34 on the 23rd, 35..39 on the 24th.
    chunks = _stream(40, seconds_apart=6000.0)
    stream_dir = tmp_path / "stream=s1"
    stream_dir.mkdir()
    # The second day's directory cannot be created: a file is in the way. The files of the
    # days after it could be written, but must not appear.
    (stream_dir / "date=2026-09-22").write_text("in the way")
    with pytest.raises(Exception):
        _run_bundle(writer, chunks)
    on_disk = sorted(c.seq for c in read_capture(str(tmp_path), "s1"))
    # Files are renamed in seq order and nothing after a failed one: what is there is a prefix
    # (every chunk before the failed file's first one), so resume continues without a hole.
    assert on_disk == list(range(6))
    assert capture_end(str(tmp_path), "s1") == (6, 6 * 5000)
    leftovers = [p.name for p in tmp_path.rglob(".*")]
    assert leftovers == [], leftovers


# --- a window of many streams: small files written by helper processes -------------------------


def _many_streams(streams: int, chunks_each: int = 3, size: int = 7000):
    """A window's chunks of many streams, each stream's together, as a reading step emits them."""
    return [
        make_chunk(f"s{index:03d}", "0123456789abcdef", seq, seq * size, os.urandom(size),
                   _START + 0.5 * seq)
        for index in range(streams)
        for seq in range(chunks_each)
    ]


def _bytes_by_stream(location: str) -> dict[str, bytes]:
    chunks = sorted(read_capture(location), key=lambda c: (c.stream_id, c.seq))
    streams = collections.defaultdict(bytes)
    for chunk in chunks:
        streams[chunk.stream_id] += chunk.payload
    return dict(streams)


def test_a_window_of_many_streams_is_written_by_helper_processes_byte_exact(writer, tmp_path):
    chunks = _many_streams(40)
    written = _run_bundle(writer, chunks)
    assert writer._processes is not None  # 40 small files: the helpers wrote them
    assert len(written) == 40
    expected = collections.defaultdict(bytes)
    for chunk in chunks:
        expected[chunk.stream_id] += chunk.payload
    assert _bytes_by_stream(str(tmp_path)) == dict(expected)
    assert all(report.ok for report in verify(read_capture(str(tmp_path))).values())
    assert [p.name for p in tmp_path.rglob(".*")] == []


def test_a_failed_write_in_a_helper_fails_the_bundle_and_leaves_no_temporary_file(
    writer, tmp_path
):
    chunks = _many_streams(40)
    # Stream s007's directory cannot be created: a file is in the way.
    (tmp_path / "stream=s007").write_text("in the way")
    with pytest.raises(SinkError) as failure:  # one line: what, where, what to do
        _run_bundle(writer, chunks)
    assert "stream=s007" in str(failure.value) and "Not a directory" in str(failure.value)
    on_disk = _bytes_by_stream(str(tmp_path))
    assert "s007" not in on_disk
    # Every file that did appear is complete; nothing half-written is left behind.
    for stream_id, data in on_disk.items():
        assert data == b"".join(c.payload for c in chunks if c.stream_id == stream_id)
    assert [p.name for p in tmp_path.rglob(".*")] == []
    # The retried bundle (the obstacle gone) writes every stream.
    (tmp_path / "stream=s007").unlink()
    _run_bundle(writer, chunks)
    assert len(_bytes_by_stream(str(tmp_path))) == 40


class _KillsTheHelper:
    """Unpickled in the helper process, this ends it at once, as the OOM killer would."""

    def __reduce__(self):
        return (os._exit, (3,))


def _helpers() -> list[psutil.Process]:
    """The writer helper processes of this (test) process."""
    return [
        p for p in psutil.Process().children(recursive=True)
        if "streamtap.io.sinks.parquet.writer_processes" in " ".join(p.cmdline())
    ]


def _write_one(processes: WriterProcesses, directory, name: str, chunks) -> str:
    """One file through a helper, renamed as the sink does; returns its path."""
    job = (str(directory), name, chunk_columns(chunks), "none")
    (temporary, final), = processes.submit([job]).result(timeout=60)
    os.replace(temporary, final)
    return final


def test_a_helper_that_dies_fails_its_batch_and_a_new_one_takes_the_next(tmp_path):
    chunks = _stream(3)
    job = (str(tmp_path), "a.parquet", chunk_columns(chunks), "none")
    processes = WriterProcesses(1)
    try:
        with pytest.raises(WriterProcessError, match="exit code 3"):
            processes.submit([job, _KillsTheHelper()]).result(timeout=60)
        final = _write_one(processes, tmp_path, "a.parquet", chunks)
        assert pq.read_table(final).column("payload").to_pylist() == [c.payload for c in chunks]
    finally:
        processes.shutdown()
    assert _helpers() == []


def test_helpers_outlive_ctrl_c_so_a_draining_capture_can_write_its_last_files(tmp_path):
    chunks = _stream(3)
    processes = WriterProcesses(1)
    try:
        _write_one(processes, tmp_path, "a.parquet", chunks)
        helper, = _helpers()
        helper.send_signal(signal.SIGINT)  # what Ctrl-C sends the whole process group
        time.sleep(0.5)
        final = _write_one(processes, tmp_path, "b.parquet", chunks)
        assert [p.pid for p in _helpers()] == [helper.pid]  # the same helper wrote it
        assert pq.read_table(final).column("payload").to_pylist() == [c.payload for c in chunks]
    finally:
        processes.shutdown()
