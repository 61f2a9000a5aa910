"""`streamtap run`'s verdict: a bounded run in which a configured stream captured nothing and had
errors exits 1 and names it with its last error, after writing what the other streams captured."""

from __future__ import annotations

import subprocess

import pytest

from streamtap.io.sources.synthetic import SyntheticSource, synthetic_bytes
from tests.helpers import STREAMTAP, assert_verified, free_port, stream_bytes, write_config


@pytest.mark.parametrize("runner", ["FnApiRunner", "PrismRunner"])
def test_a_stream_that_captured_nothing_and_failed_makes_the_run_exit_1(tmp_path, runner):
    capture_dir = tmp_path / "capture"
    sensor = {"id": "sensor1", "type": "synthetic", "rate": 2000, "sample_format": "int16"}
    dead_port = free_port()  # nothing listens there: connection refused, again and again
    config = write_config(tmp_path / "pipeline.yaml", {
        "sources": [
            sensor,
            {"id": "unreachable", "type": "tcp", "address": f"127.0.0.1:{dead_port}",
             "reconnect": {"initial_delay": 0.2, "max_delay": 0.5}},
        ],
        "chunk": {"max_bytes": 8192, "max_seconds": 0.5},
        "window_seconds": 1,
        "sinks": [{"type": "parquet", "path": str(capture_dir)}],
    })

    run = subprocess.run(
        [*STREAMTAP, "run", str(config), "--duration", "4", f"--runner={runner}",
         "--status-interval", "0"],
        capture_output=True, text=True, timeout=180, check=False,
    )

    assert run.returncode == 1, run.stdout + run.stderr
    failures = [line for line in run.stderr.splitlines() if "FAILED" in line]
    assert failures == [failures[0]] and "unreachable: FAILED: captured nothing" in failures[0]
    assert "the last: connection refused" in failures[0], failures
    assert "sensor1" not in "".join(failures)
    # What the healthy stream captured is written all the same, complete.
    assert_verified(str(capture_dir), streams=1)
    captured = stream_bytes(str(capture_dir), "sensor1")
    source = SyntheticSource(**{k: v for k, v in sensor.items() if k != "type"})
    assert len(captured) >= 2 * 2000 * 2
    assert captured == synthetic_bytes(source, 0, len(captured) // 2)


def test_a_stream_with_errors_that_captured_something_does_not_fail_the_run(tmp_path):
    """An http stream that fails first, then streams (the errors are in the summary)."""
    import asyncio
    import os

    from tests.io.sources.http_servers import ServerThread, head

    attempts = []

    async def handle(request, writer) -> None:
        attempts.append(request)
        if len(attempts) == 1:
            writer.write(head("HTTP/1.1 503 Service Unavailable"))
        else:
            writer.write(head(headers={"Content-Type": "application/octet-stream"}))
            while True:
                writer.write(os.urandom(2048))
                await writer.drain()
                await asyncio.sleep(0.05)
        await writer.drain()

    with ServerThread(handle) as server:
        config = write_config(tmp_path / "pipeline.yaml", {
            "sources": [{"id": "flaky", "type": "http", "url": server.url("/s"),
                         "reconnect": {"initial_delay": 0.1, "max_delay": 0.2}}],
            "chunk": {"max_bytes": 8192, "max_seconds": 0.5},
            "window_seconds": 1,
            "sinks": [{"type": "parquet", "path": str(tmp_path / "capture")}],
        })
        run = subprocess.run(
            [*STREAMTAP, "run", str(config), "--duration", "3", "--runner=FnApiRunner",
             "--status-interval", "0"],
            capture_output=True, text=True, timeout=180, check=False,
        )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "errors 1" in run.stderr and "FAILED" not in run.stderr, run.stderr
    assert_verified(str(tmp_path / "capture"), streams=1)
