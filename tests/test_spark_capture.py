"""Bounded captures on a real standalone Spark cluster (streamtap.services.spark), byte-exact.

The cluster (Master, 1 Worker, Beam Spark job server) is started once for the session by the
`spark` fixture. Beam's portable Spark runner runs batch pipelines only, so every capture here is
bounded (`--duration`, or `max_bytes` on every source). Options come from the Spark runner
plug-in (streamtap.pipelines.runners.spark): it finds the cluster's job server and picks LOOPBACK
workers (the Python SDK workers run in the capturing process, executors call them over loopback).
"""

from __future__ import annotations

import io
import os

import pytest

from streamtap.plugins import parse_config
from apache_beam.options.pipeline_options import PipelineOptions

from streamtap.errors import RunError
from streamtap.pipelines.run import run_capture
from streamtap.pipelines.runners.spark import Spark
from tests.fixtures.spark import spark, spark_env  # noqa: F401  (fixtures)
from tests.helpers import (
    CaptureProcess,
    TcpFeeder,
    assert_verified,
    stream_bytes,
    write_config,
)

# Generous: the first run on a machine also fetches Spark (PyPI) and the job server (Maven).
pytestmark = pytest.mark.timeout(420)


def _completed_apps(service) -> set[str]:
    return {app["id"] for app in service.master_state().get("completedapps", [])}


def test_spark_defaults_use_the_running_cluster(spark_env):
    args = Spark().defaults(["--runner=SparkRunner",
                             f"--spark_master_url={spark_env.master_url}"])
    assert f"--job_endpoint={spark_env.job_endpoint}" in args
    assert "--environment_type=LOOPBACK" in args
    assert any(arg.startswith("--files_to_stage=") for arg in args)
    assert Spark().defaults(args) == args  # idempotent: run_capture may fill them again
    assert Spark().defaults(["--runner=FnApiRunner"]) == ["--runner=FnApiRunner"]


def test_spark_runner_refuses_what_it_cannot_run():
    with pytest.raises(RunError, match="bounded captures only"):
        Spark().check(PipelineOptions(["--runner=SparkRunner"]), bounded=False)
    Spark().check(PipelineOptions(["--runner=SparkRunner"]), bounded=True)
    Spark().check(PipelineOptions(["--runner=FlinkRunner"]), bounded=False)
    with pytest.raises(RunError, match="environment_type"):
        Spark().defaults(["--runner=SparkRunner", "--spark_master_url=spark://10.1.2.3:7077"])
    with pytest.raises(RunError, match="spark://HOST:PORT"):
        Spark().defaults(["--runner=SparkRunner", "--spark_master_url=yarn"])


def test_bounded_file_and_tcp_capture_on_spark_is_byte_exact(spark_env, tmp_path):
    """A regular file (to EOF) and a TCP stream (max_bytes, paced over ~3 s, so the source
    defers while it waits) on the cluster; in-process run_capture."""
    capture_dir = tmp_path / "capture"
    file_data = os.urandom(1_500_000)
    data_file = tmp_path / "recording.bin"
    data_file.write_bytes(file_data)
    tcp_data = os.urandom(1_000_000)
    feeder = TcpFeeder(tcp_data, piece=16384, pause=0.05)
    config = parse_config({
        "sources": [
            {"id": "file1", "type": "file", "path": str(data_file), "start_offset": 1000},
            feeder.source("tcp1", max_bytes=len(tcp_data)),
        ],
        "chunk": {"max_bytes": 32768, "max_seconds": 0.5},
        "window_seconds": 2,
        "sinks": [{"type": "parquet", "path": str(capture_dir)}],
    })
    apps_before = _completed_apps(spark_env)
    out = io.StringIO()
    try:
        code = run_capture(
            config,
            Spark().defaults(["--runner=SparkRunner",
                              f"--spark_master_url={spark_env.master_url}"]),
            duration=60, status_interval=0, out=out,
        )
    finally:
        feeder.close()
    assert code == 0, out.getvalue()
    assert "(bounded)" in out.getvalue()
    reports = assert_verified(str(capture_dir), streams=2)
    assert stream_bytes(str(capture_dir), "file1") == file_data[1000:]
    assert stream_bytes(str(capture_dir), "tcp1") == tcp_data
    assert reports["tcp1"].sessions == 1 and reports["tcp1"].discontinuities == 0
    # It ran as an application of the standalone cluster (not Spark inside the job server).
    assert len(_completed_apps(spark_env) - apps_before) == 1


def test_streamtap_run_on_spark_with_duration(spark_env, tmp_path):
    """`streamtap run pipeline.yaml --runner=SparkRunner --spark_master_url=... --duration N`."""
    capture_dir = tmp_path / "capture"
    file_data = os.urandom(800_000)
    data_file = tmp_path / "recording.bin"
    data_file.write_bytes(file_data)
    tcp_data = os.urandom(500_000)
    feeder = TcpFeeder(tcp_data, piece=8192, pause=0.01)
    config = write_config(tmp_path / "pipeline.yaml", {
        "sources": [
            {"id": "file1", "type": "file", "path": str(data_file)},
            feeder.source("tcp1", max_bytes=len(tcp_data)),
        ],
        "chunk": {"max_bytes": 65536, "max_seconds": 0.5},
        "window_seconds": 2,
        "sinks": [{"type": "parquet", "path": str(capture_dir)}],
    })
    run = CaptureProcess(config, "--runner=SparkRunner",
                         f"--spark_master_url={spark_env.master_url}", "--duration", "20")
    try:
        code, output = run.wait(timeout=180)
    finally:
        feeder.close()
    assert code == 0, output
    assert "(bounded)" in output and "pipeline failed" not in output
    assert_verified(str(capture_dir), streams=2)
    assert stream_bytes(str(capture_dir), "file1") == file_data
    assert stream_bytes(str(capture_dir), "tcp1") == tcp_data
