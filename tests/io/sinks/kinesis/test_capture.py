"""Whole captures into the real Kinesis endpoint: HTTP and TCP byte-exact over several shards with
a SplitShard mid-capture, faults injected by the proxy, a second run that continues, the CLI."""

from __future__ import annotations

import io
import os
import re
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from streamtap.captures import read_capture, verify
from streamtap.pipelines.run import run_capture
from streamtap.plugins import parse_config
from tests.fixtures.kinesis import create_stream, kinesis_client, unique_stream
from tests.helpers import STREAMTAP, TcpFeeder, capture, stream_bytes


class PacedHttpServer:
    """An HTTP server on 127.0.0.1 that sends `data` (Content-Length) in paced pieces."""

    def __init__(self, data: bytes, piece: int = 16384, pause: float = 0.03):
        body, step, wait = data, piece, pause

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for start in range(0, len(body), step):
                    self.wfile.write(body[start : start + step])
                    self.wfile.flush()
                    time.sleep(wait)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/stream"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()


def location(stream: str, endpoint_url: str) -> str:
    return f"kinesis://{stream}?region=us-east-1&endpoint_url={endpoint_url}"


def verified(where: str, streams: int) -> dict:
    reports = verify(read_capture(where))
    assert len(reports) == streams, sorted(reports)
    problems = {sid: r.problems for sid, r in reports.items() if not r.ok}
    assert not problems, problems
    return reports


def _config(sources: list[dict], sink: dict) -> dict:
    return {
        "sources": sources,
        "chunk": {"max_bytes": 32768, "max_seconds": 0.5},
        "window_seconds": 2,
        "sinks": [{"type": "kinesis", "region": "us-east-1", **sink}],
    }


def test_http_and_tcp_round_trip_byte_exact_with_a_shard_split_mid_capture(kinesis, tmp_path):
    stream = create_stream(kinesis.endpoint_url, unique_stream("split"), shards=3)
    tcp_data, http_data = os.urandom(1_500_000), os.urandom(1_000_000)
    client = kinesis_client(kinesis.endpoint_url)
    split: dict = {}

    def split_when_records_arrive() -> None:
        # Split the first shard once the capture has written to the stream for a while.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not split:
            shards = client.list_shards(StreamName=stream)["Shards"]
            written = sum(
                len(
                    client.get_records(
                        ShardIterator=client.get_shard_iterator(
                            StreamName=stream,
                            ShardId=s["ShardId"],
                            ShardIteratorType="TRIM_HORIZON",
                        )["ShardIterator"]
                    )["Records"]
                )
                for s in shards
            )
            if written >= 15:
                first = shards[0]
                low = int(first["HashKeyRange"]["StartingHashKey"])
                high = int(first["HashKeyRange"]["EndingHashKey"])
                client.split_shard(
                    StreamName=stream,
                    ShardToSplit=first["ShardId"],
                    NewStartingHashKey=str((low + high) // 2),
                )
                split["after_records"] = written
            time.sleep(0.3)

    splitter = threading.Thread(target=split_when_records_arrive, daemon=True)
    with TcpFeeder(tcp_data, piece=16384, pause=0.05) as feeder, PacedHttpServer(http_data) as web:
        splitter.start()
        capture(
            _config(
                [
                    feeder.source("sensor1", max_bytes=len(tcp_data)),
                    {"id": "web1", "type": "http", "url": web.url, "max_bytes": len(http_data)},
                ],
                {"stream": stream, "endpoint_url": kinesis.endpoint_url},
            ),
            duration=40,
        )
        splitter.join(timeout=30)
    assert split, "the capture ended before the shard could be split"
    shards = client.list_shards(StreamName=stream)["Shards"]
    assert len(shards) == 5 and sum("ParentShardId" in s for s in shards) == 2
    where = location(stream, kinesis.endpoint_url)
    verified(where, streams=2)
    assert stream_bytes(where, "sensor1") == tcp_data
    assert stream_bytes(where, "web1") == http_data

    # The CLI reads the stream the same way.
    output = tmp_path / "web1.bin"
    result = subprocess.run(
        [*STREAMTAP, "reassemble", where, "--stream", "web1", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert output.read_bytes() == http_data
    result = subprocess.run(
        [*STREAMTAP, "verify", where], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 of 2 stream(s) OK" in result.stdout


def test_faults_lose_no_chunk_and_the_status_lines_show_the_retries(kinesis, kinesis_faults):
    stream = create_stream(kinesis.endpoint_url, unique_stream("faulty"), shards=2)
    kinesis_faults.set_faults(records=0.3, throttle=0.15, errors=0.05)
    tcp_data = os.urandom(1_200_000)
    out = io.StringIO()
    with TcpFeeder(tcp_data, piece=8192, pause=0.02) as feeder:
        config = _config(
            [
                feeder.source("sensor1", max_bytes=len(tcp_data)),
                {
                    "id": "tone1",
                    "type": "synthetic",
                    "kind": "tone",
                    "rate": 8000,
                    "sample_format": "int16",
                },
            ],
            {"stream": stream, "endpoint_url": kinesis_faults.endpoint_url},
        )
        # On Prism the pipeline runs while the status lines print (the FnApiRunner returns
        # from run() only at the end).
        code = run_capture(
            parse_config(config), ["--runner=PrismRunner"], duration=6, status_interval=1, out=out
        )
    text = out.getvalue()
    assert code == 0, text
    assert (
        kinesis_faults.stats["records_failed"] > 0 and kinesis_faults.stats["calls_throttled"] > 0
    )
    where = location(stream, kinesis.endpoint_url)
    reports = verified(where, streams=2)
    assert stream_bytes(where, "sensor1") == tcp_data
    # Every chunk of the tone went through too: its bytes are contiguous from offset 0.
    assert reports["tone1"].discontinuities == 0 and reports["tone1"].chunks > 5
    # The status lines and the summary report the sink's retries and throttles.
    status = [
        line
        for line in text.splitlines()
        if re.match(rf"\[\d\d:\d\d:\d\d\] kinesis {stream} ", line)
    ]
    assert status, text
    summary = re.search(
        rf"kinesis {stream} +records put (\d+) +bytes put (\d+) +records retried "
        r"(\d+) +records throttled (\d+)",
        text.split("streamtap: summary")[-1],
    )
    assert summary, text
    _, bytes_put, retried, throttled = map(int, summary.groups())
    assert retried > 0 and throttled > 0
    assert bytes_put >= len(tcp_data)


def test_a_second_run_continues_seq_and_verify_passes_over_both(kinesis, tmp_path):
    stream = create_stream(kinesis.endpoint_url, unique_stream("resume"), shards=2)
    first_data, second_data = os.urandom(300_000), os.urandom(200_000)
    sink = {"stream": stream, "endpoint_url": kinesis.endpoint_url}
    with TcpFeeder(first_data, piece=16384) as feeder:
        capture(_config([feeder.source("live1", max_bytes=len(first_data))], sink))
    where = location(stream, kinesis.endpoint_url)
    first_chunks = verified(where, streams=1)["live1"].chunks
    with TcpFeeder(second_data, piece=16384) as feeder:
        output = capture(_config([feeder.source("live1", max_bytes=len(second_data))], sink))
    assert f"live1: continuing the capture at seq {first_chunks}, byte {len(first_data)}" in output
    reports = verified(where, streams=1)
    assert stream_bytes(where, "live1") == first_data + second_data
    assert reports["live1"].sessions == 2
    assert reports["live1"].discontinuities == 1  # a live stream may have lost bytes in between
