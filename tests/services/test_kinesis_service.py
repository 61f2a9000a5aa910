"""`streamtap services up|status|down kinesis`: the moto server as a daemon, from the CLI."""

from __future__ import annotations

import os
import subprocess

from streamtap.services.process import free_port
from tests.fixtures.kinesis import create_stream, kinesis_client
from tests.helpers import STREAMTAP


def test_up_status_down_from_the_cli(tmp_path):
    env = {**os.environ, "STREAMTAP_STATE": str(tmp_path)}

    def streamtap(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*STREAMTAP, *args], capture_output=True, text=True, timeout=120, check=False, env=env
        )

    port = free_port()
    up = streamtap("services", "up", "kinesis", "--port", str(port))
    try:
        assert up.returncode == 0, up.stderr
        endpoint = f"http://127.0.0.1:{port}"
        assert f"endpoint_url: {endpoint}" in up.stdout
        # A real Kinesis API: a stream made here is listed by another client.
        create_stream(endpoint, "svc-check", shards=2)
        assert kinesis_client(endpoint).list_streams()["StreamNames"] == ["svc-check"]
        status = streamtap("services", "status", "kinesis")
        assert status.returncode == 0 and f"endpoint_url: {endpoint}" in status.stdout
    finally:
        down = streamtap("services", "down", "kinesis")
    assert down.returncode == 0, down.stderr
    status = streamtap("services", "status", "kinesis")
    assert status.returncode == 1 and "kinesis: not running" in status.stdout
