"""`layout: many_streams`: a window of many streams in few files near the target size, sorted by
stream and seq, read back byte-exact per stream and resumed, locally and on a real HDFS."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from apache_beam.transforms.window import IntervalWindow
from apache_beam.utils.timestamp import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtap.captures import read_capture, verify
from streamtap.chunk import make_chunk
from streamtap.io.sinks.parquet.many_streams import WriteWindowOfStreamsFn, cut_files
from streamtap.io.sinks.parquet.read import capture_end, capture_ends, capture_files
from streamtap.plugins import parse_config
from tests.fixtures.hdfs import dfs_ls, unique_hdfs_path
from tests.fixtures.s3 import s3_client
from tests.helpers import TcpFeeder, assert_verified, capture, stream_bytes
from tests.io.sinks.parquet.test_remote import _capture_tcp_and_http

DAY = 1_796_515_200.0  # 2026-12-06T00:00:00Z
_KiB = 1024


def _chunk(stream_id: str, seq: int, size: int, time: float):
    return make_chunk(stream_id, "s", seq, seq * size, os.urandom(size), time)


def _write_window(path, chunks, start: float, target: int, seconds: float = 10.0) -> list[str]:
    """Writes one window's group with the sink's own DoFn, as one bundle; the files' paths."""
    writer = WriteWindowOfStreamsFn(str(path), "none", target_bytes=target)
    window = IntervalWindow(Timestamp.of(start), Timestamp.of(start + seconds))
    writer.setup()
    try:
        writer.start_bundle()
        written = [wv.value for wv in writer.process(("", chunks), window=window)]
        written += [wv.value for wv in writer.finish_bundle()]
    finally:
        writer.teardown()
    return written


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=60),
    target=st.integers(1, 20000),
)
def test_cut_files_keeps_every_row_in_order_in_as_few_near_equal_files_as_the_target_allows(
    sizes, target
):
    rows = [make_chunk("s", seq, seq, 0, b"x" * size, 0.0) for seq, size in enumerate(sizes)]
    files = cut_files(rows, target)
    assert [row for file in files for row in file] == rows
    assert all(files)
    total = sum(sizes)
    assert len(files) <= max(1, -(-total // target))
    for file in files:
        assert sum(len(row.payload) for row in file) <= target + max(sizes)
    if max(sizes) * 2 <= total / max(1, -(-total // target)):  # rows small beside a file
        assert len(files) == max(1, -(-total // target))


def test_a_window_of_many_streams_becomes_few_files_sorted_by_stream_and_seq(tmp_path):
    streams = [f"radio-{i:03d}" for i in range(40)]
    # 40 streams x 6 chunks of 4 KiB, arriving interleaved: 960 KiB in the window.
    chunks = [
        _chunk(stream_id, seq, 4 * _KiB, DAY + seq)
        for seq in range(6)
        for stream_id in reversed(streams)
    ]
    written = _write_window(tmp_path, chunks + chunks[:5], DAY, target=256 * _KiB)  # 5 redelivered

    assert len(written) == 4  # 960 KiB / 256 KiB, in four files of 240 KiB
    assert not list(tmp_path.glob("stream=*"))
    for path in written:
        assert Path(path).parent.name == "date=2026-12-06"
        table = pq.read_table(path)
        keys = list(zip(table.column("stream_id").to_pylist(), table.column("seq").to_pylist()))
        assert keys == sorted(set(keys))
        assert 200 * _KiB <= sum(len(p) for p in table.column("payload").to_pylist()) <= 260 * _KiB
    reports = verify(read_capture(str(tmp_path)))
    assert sorted(reports) == streams and all(r.ok and r.chunks == 6 for r in reports.values())
    for stream_id in (streams[0], streams[17], streams[-1]):
        mine = sorted((c for c in chunks if c.stream_id == stream_id), key=lambda c: c.seq)
        assert [c.payload for c in read_capture(str(tmp_path), stream_id)] == [
            c.payload for c in mine
        ]
        assert capture_end(str(tmp_path), stream_id) == (6, 6 * 4 * _KiB)
    # The same window again (a retried bundle) writes the same names over the same content.
    assert _write_window(tmp_path, list(reversed(chunks)), DAY, target=256 * _KiB) == written


def test_a_stream_read_alone_skips_row_groups_that_cannot_hold_it(tmp_path):
    chunks = [
        _chunk(f"s{i:02d}", seq, 256 * _KiB, DAY + seq) for i in range(20) for seq in range(4)
    ]
    [path] = _write_window(tmp_path, chunks, DAY, target=64 * 2**20)
    metadata = pq.ParquetFile(path).metadata
    assert metadata.num_row_groups >= 4  # row groups of ~4 MiB, each a few streams
    assert [c.seq for c in read_capture(str(tmp_path), "s07")] == [0, 1, 2, 3]


def test_resume_finds_each_streams_end_in_the_newest_window_that_holds_it(tmp_path):
    early = [_chunk(s, seq, 1000, DAY + seq) for s in ("a", "b", "gone") for seq in range(3)]
    late = [_chunk(s, seq, 1000, DAY + 10 + seq) for s in ("a", "b") for seq in range(3, 5)]
    _write_window(tmp_path, early, DAY, target=2**20)
    _write_window(tmp_path, late, DAY + 10, target=2**20)
    ends = capture_ends(str(tmp_path), ["a", "b", "gone", "never"])
    assert ends == {"a": (5, 5000), "b": (5, 5000), "gone": (3, 3000)}
    assert len(capture_files(str(tmp_path), "a")) == 2


def _tcp_capture(location: str, streams: dict[str, bytes], **sink) -> str:
    feeders = {
        stream_id: TcpFeeder(data, piece=8192, pause=0.01) for stream_id, data in streams.items()
    }
    try:
        return capture(
            {
                "sources": [
                    feeders[stream_id].source(stream_id, max_bytes=len(data))
                    for stream_id, data in streams.items()
                ],
                "chunk": {"max_bytes": 8192, "max_seconds": 1.0},
                "window_seconds": 1,
                "sinks": [
                    {
                        "type": "parquet",
                        "path": location,
                        "compression": "zstd",
                        "layout": "many_streams",
                        **sink,
                    }
                ],
            }
        )
    finally:
        for feeder in feeders.values():
            feeder.close()


@pytest.mark.parametrize("files", ["auto", "per_window"])  # without a shuffle, after a GroupByKey
def test_a_capture_of_several_streams_round_trips_and_a_second_run_resumes(files, tmp_path):
    streams = {f"tcp{i}": os.urandom(120_000 + i * 1000) for i in range(4)}
    _tcp_capture(str(tmp_path), streams, target_file_size="64KiB", files=files)

    assert not list(tmp_path.glob("stream=*"))
    written = list(tmp_path.glob("date=*/*-streams-*.parquet"))
    assert written and all(os.path.getsize(f) < 200 * _KiB for f in written)
    for stream_id, data in streams.items():
        assert stream_bytes(str(tmp_path), stream_id) == data
    assert_verified(str(tmp_path), streams=4)

    more = {"tcp0": os.urandom(50_000), "tcp3": os.urandom(30_000)}
    output = _tcp_capture(str(tmp_path), more, target_file_size="64KiB", files=files)
    first = streams["tcp0"]
    assert (
        f"tcp0: continuing the capture at seq {-(-len(first) // 8192)}, byte {len(first)}" in output
    )
    assert stream_bytes(str(tmp_path), "tcp0") == first + more["tcp0"]
    assert stream_bytes(str(tmp_path), "tcp3") == streams["tcp3"] + more["tcp3"]
    assert_verified(str(tmp_path), streams=4)


def test_the_layout_and_target_size_are_checked_where_declared():
    def errors(**sink):
        try:
            parse_config(
                {
                    "sources": [{"id": "a", "type": "synthetic"}],
                    "sinks": [{"type": "parquet", "path": "/tmp/x", **sink}],
                }
            )
        except Exception as error:  # noqa: BLE001 - the message is the test
            return str(error)
        return ""

    assert "layout: must be one of per_stream, many_streams, got 'shared'" in errors(
        layout="shared"
    )
    assert "target_file_size" in errors(target_file_size="1KiB")
    assert "target_file_size" in errors(target_file_size="lots")
    assert errors(layout="many_streams", target_file_size="256MiB") == ""


@pytest.mark.parametrize("store", ["hdfs", "s3"])
def test_tcp_and_http_round_trip_through_hdfs_and_s3_in_the_many_streams_layout(store, request):
    """Hadoop's own listing (hdfs dfs) or boto3's sees only complete files of many streams."""
    tcp, web = os.urandom(250_000), os.urandom(200_000)
    layout = {"layout": "many_streams", "target_file_size": "128KiB"}
    if store == "hdfs":
        hdfs = request.getfixturevalue("hdfs")
        location = reading = f"{hdfs.url}{unique_hdfs_path('many')}"
        _capture_tcp_and_http(location, tcp, web, **layout)
        listed = list(dfs_ls(hdfs, location.removeprefix(hdfs.url)))
    else:
        endpoint, bucket = (
            request.getfixturevalue("s3_endpoint"),
            request.getfixturevalue("s3_bucket"),
        )
        location = f"s3://{bucket}/many"
        reading = f"{location}?endpoint_url={endpoint}"
        _capture_tcp_and_http(location, tcp, web, endpoint_url=endpoint, **layout)
        s3 = s3_client(endpoint)
        listed = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"]]
        assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")

    assert stream_bytes(reading, "tcp1") == tcp
    assert stream_bytes(reading, "web1") == web
    assert_verified(reading, streams=2)
    names = [path.rsplit("/", 2)[-2:] for path in listed]
    assert len(names) >= 3 and all(
        day.startswith("date=") and re.fullmatch(r"\d{6}-streams-[0-9a-f]{16}\.parquet", name)
        for day, name in names
    ), sorted(listed)
    assert capture_end(reading, "tcp1") == (-(-len(tcp) // 16384), len(tcp))


def test_a_capture_is_not_written_into_a_directory_of_the_other_layout(tmp_path):
    _write_window(tmp_path / "many", [_chunk("a", 0, 100, DAY)], DAY, target=2**20)
    per_stream = tmp_path / "per" / "stream=a" / "date=2026-12-06"
    per_stream.mkdir(parents=True)

    def preflight(path, layout):
        config = parse_config(
            {
                "sources": [{"id": "a", "type": "tcp", "address": "127.0.0.1:9"}],
                "sinks": [{"type": "parquet", "path": str(path), "layout": layout}],
            }
        )
        return config.sinks[0].preflight(config)

    assert preflight(tmp_path / "many", "many_streams") == []
    assert preflight(tmp_path / "per", "per_stream") == []
    assert preflight(tmp_path / "new", "many_streams") == []
    [problem] = preflight(tmp_path / "many", "per_stream")
    assert (
        "holds a capture in the many_streams layout; write layout: per_stream to another path"
        in problem
    )
    [problem] = preflight(tmp_path / "per", "many_streams")
    assert "holds a capture in the per_stream layout" in problem
