"""The Parquet sink on a real HDFS and on S3 (the moto server): captures of a TCP and an HTTP
source written through `streamtap.io.storage`, read back byte-exact by streamtap, by Hadoop's
own `hdfs dfs` and by boto3; `streamtap verify` on the URL; a second run resumes; an unreachable
store is a clear preflight error.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import time

import pyarrow.parquet as pq
import pytest

from streamtap.io.sinks.parquet.config import ParquetSink
from streamtap.io.sinks.parquet.storage import is_temporary_name
from streamtap.plugins import parse_config
from streamtap.services.hdfs import HdfsService
from streamtap.services.process import free_port
from tests.fixtures.hdfs import dfs_cat, dfs_ls, unique_hdfs_path
from tests.fixtures.s3 import s3_client
from tests.helpers import (
    STREAMTAP,
    CaptureProcess,
    TcpFeeder,
    assert_verified,
    capture,
    stream_bytes,
    wait_until,
    write_config,
)
from tests.io.sources.http_servers import ServerThread, head


def _http_server(data: bytes, piece: int = 16384, pause: float = 0.05) -> ServerThread:
    """Serves `data` over a few seconds to every request, then holds the connection open."""

    async def handle(request, writer) -> None:
        writer.write(head(headers={"Content-Type": "application/octet-stream"}))
        for start in range(0, len(data), piece):
            writer.write(data[start : start + piece])
            await writer.drain()
            await asyncio.sleep(pause)
        await asyncio.sleep(120)  # the capture ends at max_bytes, not at a reconnect

    return ServerThread(handle)


def _config(path: str, sources: list[dict], **sink) -> dict:
    return {
        "sources": sources,
        "chunk": {"max_bytes": 16384, "max_seconds": 1.0},
        "window_seconds": 1,
        "sinks": [{"type": "parquet", "path": path, "compression": "zstd", **sink}],
    }


def _capture_tcp_and_http(path: str, tcp: bytes, web: bytes, **sink) -> str:
    with TcpFeeder(tcp, piece=16384, pause=0.05) as feeder, _http_server(web) as server:
        return capture(_config(path, [
            feeder.source("tcp1", max_bytes=len(tcp)),
            {"id": "web1", "type": "http", "url": server.url("/live"), "max_bytes": len(web)},
        ], **sink))


def _payloads(files: dict[str, bytes]) -> bytes:
    """The payloads of Parquet files given as bytes, in seq order."""
    rows = []
    for data in files.values():
        table = pq.read_table(io.BytesIO(data), columns=["seq", "payload"])
        rows += zip(table.column("seq").to_pylist(), table.column("payload").to_pylist())
    return b"".join(payload for _, payload in sorted(rows))


def _verify_cli(location: str, streams: int) -> None:
    """`streamtap verify <location>` finds every one of `streams` streams OK."""
    run = subprocess.run(
        [*STREAMTAP, "verify", location], capture_output=True, text=True, timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"verify: {streams} of {streams} stream(s) OK" in run.stdout, run.stdout


def test_tcp_and_http_captures_round_trip_through_hdfs_and_a_second_run_resumes(hdfs):
    location = f"{hdfs.url}{unique_hdfs_path('parquet')}"
    root = location.removeprefix(hdfs.url)
    tcp, web = os.urandom(400_000), os.urandom(300_000)

    _capture_tcp_and_http(location, tcp, web)

    assert stream_bytes(location, "tcp1") == tcp
    assert stream_bytes(location, "web1") == web
    assert_verified(location, streams=2)
    # Hadoop's own client lists complete files only, under their final names, and fetches them.
    listed = dfs_ls(hdfs, root)
    names = [path.rsplit("/", 1)[1] for path in listed]
    assert names and all(name.endswith(".parquet") and not name.startswith(".") for name in names)
    for stream, data in (("tcp1", tcp), ("web1", web)):
        files = {path: dfs_cat(hdfs, path) for path in listed if f"/stream={stream}/" in path}
        assert all(len(content) == listed[path] for path, content in files.items())
        assert _payloads(files) == data
    _verify_cli(location, streams=2)

    more = os.urandom(100_000)
    with TcpFeeder(more, piece=16384, pause=0.02) as feeder:
        output = capture(_config(location, [feeder.source("tcp1", max_bytes=len(more))]))
    chunks = len(tcp) // 16384 + (len(tcp) % 16384 > 0)
    assert f"tcp1: continuing the capture at seq {chunks}, byte {len(tcp)}" in output
    assert stream_bytes(location, "tcp1") == tcp + more
    report = assert_verified(location, streams=2)["tcp1"]
    assert report.sessions == 2 and report.discontinuities == 1


def test_tcp_and_http_captures_round_trip_through_s3_and_a_second_run_resumes(
    s3_endpoint, s3_bucket
):
    location = f"s3://{s3_bucket}/raw"
    tcp, web = os.urandom(400_000), os.urandom(300_000)

    _capture_tcp_and_http(location, tcp, web, endpoint_url=s3_endpoint)

    reading = f"{location}?endpoint_url={s3_endpoint}"
    assert stream_bytes(reading, "tcp1") == tcp
    assert stream_bytes(reading, "web1") == web
    assert_verified(reading, streams=2)
    # boto3 sees complete objects only, under their final names.
    s3 = s3_client(s3_endpoint)
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys and all(key.startswith("raw/stream=") and key.endswith(".parquet") for key in keys)
    assert not s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
    files = {
        key: s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
        for key in keys if "/stream=web1/" in key
    }
    assert _payloads(files) == web
    _verify_cli(reading, streams=2)

    more = os.urandom(100_000)
    with TcpFeeder(more, piece=16384, pause=0.02) as feeder:
        output = capture(_config(
            location, [feeder.source("tcp1", max_bytes=len(more))], endpoint_url=s3_endpoint
        ))
    chunks = len(tcp) // 16384 + (len(tcp) % 16384 > 0)
    assert f"tcp1: continuing the capture at seq {chunks}, byte {len(tcp)}" in output
    assert stream_bytes(reading, "tcp1") == tcp + more


def _preflight(path: str, **sink) -> list[str]:
    source = {"id": "s", "type": "tcp", "address": "127.0.0.1:9"}
    config = parse_config(_config(path, [source], **sink))
    return config.sinks[0].preflight(config)


def test_an_unreachable_hdfs_or_s3_is_a_clear_preflight_error(s3_endpoint, s3_bucket):
    port = free_port()
    errors = _preflight(f"hdfs://127.0.0.1:{port}/raw")
    assert len(errors) == 1 and f"NameNode at 127.0.0.1:{port} cannot be reached" in errors[0]
    assert "streamtap services up hdfs" in errors[0]

    errors = _preflight(f"s3://{s3_bucket}/raw", endpoint_url=f"http://127.0.0.1:{port}")
    assert len(errors) == 1 and "the endpoint cannot be reached" in errors[0], errors
    errors = _preflight("s3://no-such-bucket-here/raw", endpoint_url=s3_endpoint)
    assert len(errors) == 1 and "does not exist" in errors[0], errors
    assert _preflight(f"s3://{s3_bucket}/raw", endpoint_url=s3_endpoint) == []


def test_preflight_removes_stale_temporaries_on_hdfs_and_leaves_everything_else(
    hdfs: HdfsService,
):
    root = unique_hdfs_path("parquet")
    day = f"{root}/stream=s/date=2026-01-01"
    stale = f"{day}/.120000-000000000000.parquet.tmp-0123abcd"
    final = f"{day}/120000-000000000000.parquet"
    for path in (stale, final):
        hdfs.dfs("-mkdir", "-p", day)
        hdfs.dfs("-touchz", path)
    assert is_temporary_name(stale.rsplit("/", 1)[1])
    # An hour old: HDFS keeps the mtime a client sets (FsShell -touch -m -t).
    hdfs.dfs("-touch", "-m", "-t", "20200101:000000", stale)

    assert _preflight(f"{hdfs.url}{root}") == []

    assert sorted(dfs_ls(hdfs, root)) == [final]


@pytest.mark.parametrize("path, error", [
    ("ftp://host/x", "use a local path, hdfs://host:port/path or s3://bucket/prefix"),
    ("hdfs:///x", "name the NameNode"),
])
def test_paths_the_sink_cannot_write_are_refused_with_the_fix(path, error):
    problems = ParquetSink(path=path).validate("sinks[0]")
    assert len(problems) == 1 and problems[0].startswith(f"sinks[0].path: {path!r}: ")
    assert error in problems[0]


# --- HDFS failing under a capture -------------------------------------------------------------


def _capture_while(tmp_path, location: str, data: bytes, fault, name: str) -> None:
    """`streamtap run` (Prism) of a live TCP source sending `data` over ~18 s into `location`
    (files appear as windows close); `fault()` once the first files are on HDFS; Ctrl-C once
    everything was sent. Fails unless the capture exits 0."""
    from streamtap.io.storage import open_storage

    feeder = TcpFeeder(data, piece=16384, pause=0.15)
    config = write_config(tmp_path / "pipeline.yaml", _config(location, [feeder.source(name)]))
    run = CaptureProcess(config)
    try:
        store = open_storage(location)
        wait_until(lambda: len(store.list()) >= 2, 90, "the first files on HDFS")
        assert run.process.poll() is None  # files appeared while it was still running
        fault()
        wait_until(feeder.sent.is_set, 120, "the TCP feeder to send everything")
        time.sleep(2.5)  # the last bytes arrive
        run.interrupt()
        code, output = run.wait(timeout=240)
    finally:
        feeder.close()
        if run.process.poll() is None:
            run.process.kill()
    assert code == 0, output
    assert "streamtap: the pipeline failed" not in output, output


def test_a_datanode_killed_mid_capture_with_replication_2_loses_nothing(
    hdfs_cluster_healed, tmp_path
):
    cluster: HdfsService = hdfs_cluster_healed
    location = f"{cluster.url}{unique_hdfs_path('dn-kill')}"
    data = os.urandom(2_000_000)

    _capture_while(tmp_path, location, data, lambda: cluster.kill_datanode(1), "tcp1")

    assert stream_bytes(location, "tcp1") == data
    report = assert_verified(location, streams=1)["tcp1"]
    assert report.discontinuities == 0
    _verify_cli(location, streams=1)


def test_the_namenode_restarted_mid_capture_loses_nothing(hdfs_cluster_healed, tmp_path):
    cluster: HdfsService = hdfs_cluster_healed
    location = f"{cluster.url}{unique_hdfs_path('nn-restart')}"
    data = os.urandom(2_000_000)

    _capture_while(
        tmp_path, location, data, lambda: cluster.restart_namenode(kill=True, down_seconds=2),
        "tcp1",
    )

    assert stream_bytes(location, "tcp1") == data
    report = assert_verified(location, streams=1)["tcp1"]
    assert report.discontinuities == 0
    listed = dfs_ls(cluster, location.removeprefix(cluster.url))
    assert listed and all(not path.rsplit("/", 1)[1].startswith(".") for path in listed)
