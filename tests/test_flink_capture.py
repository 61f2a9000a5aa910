"""Captures on a real standalone Flink cluster (streamtap.services.flink), byte-exact.

The cluster (JobManager, 2 TaskManagers, Beam job server) is started once for the module by the
`flink` fixture. Captures run as `streamtap run ... --runner=FlinkRunner --flink_master=HOST:PORT`
and nothing else: streamtap finds the cluster's job server and picks LOOPBACK workers (the
Python SDK workers run inside `streamtap run`, TaskManagers call them over loopback).
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time

import psutil
import pytest

from streamtap.plugins import parse_config
from streamtap.io.sinks.parquet.read import capture_files
from streamtap.io.sources.synthetic import SyntheticSource, synthetic_bytes
from streamtap.pipelines.runners.flink import Flink
from streamtap.errors import RunError
from streamtap.pipelines.run import run_capture
from tests.fixtures.flink import taskmanager_of_job
from tests.helpers import (
    CaptureProcess,
    LiveBroadcast,
    TcpFeeder,
    assert_verified,
    chunks_of,
    stream_bytes,
    wait_until,
    write_config,
)

# Generous: the first run on a machine also fetches Flink (PyPI) and the job server (Maven).
pytestmark = pytest.mark.timeout(420)


def _finished_jobs(service) -> set[str]:
    return {job["jid"] for job in service.jobs() if job["state"] == "FINISHED"}


def _checkpoint_counts(service, job_id: str) -> dict:
    return service.rest(f"/jobs/{job_id}/checkpoints")["counts"]


def _running_job(service) -> str | None:
    running = [job["jid"] for job in service.jobs() if job["state"] == "RUNNING"]
    return running[0] if running else None


def test_loopback_workers_serve_two_taskmanagers_whose_worker_ids_repeat(flink_env, tmp_path):
    """--parallelism=4 on 2 TaskManagers x 2 slots, LOOPBACK: both TaskManagers ask this process
    for worker "1-1". Beam's pool kept one worker per id, so when the TaskManager that started
    its worker first was done first, it stopped the other's worker mid-capture: its task failed,
    Flink ran the region again and every chunk was captured twice (verify: duplicate sequence
    numbers), exit 0. Which TaskManager starts and ends first is Flink's choice, so this failed
    about every other run before the fix; tests/pipelines/runners/test_loopback.py reproduces the
    stop deterministically. First in this module, while both TaskManagers' worker counters are
    alike (a fresh cluster)."""
    capture_dir = tmp_path / "capture"
    seconds = [1, 1, 10, 10]  # two groups end long before the other two
    sensors = [{"id": f"sensor{i}", "type": "synthetic", "rate": 2000, "sample_format": "int16",
                "seed": i, "max_bytes": 4000 * s} for i, s in enumerate(seconds)]
    config = parse_config({
        "sources": sensors,
        "chunk": {"max_bytes": 16384, "max_seconds": 0.5},
        "window_seconds": 1,
        "sinks": [{"type": "parquet", "path": str(capture_dir)}],
    })
    jobs_before = _finished_jobs(flink_env)
    out = io.StringIO()
    code = run_capture(config, ["--runner=FlinkRunner", f"--flink_master={flink_env.flink_master}",
                                "--parallelism=4"], status_interval=0, out=out)
    assert code == 0, out.getvalue()
    (job_id,) = _finished_jobs(flink_env) - jobs_before
    history = flink_env.rest(f"/jobs/{job_id}/exceptions").get("exceptionHistory", {})
    assert not history.get("entries"), str(history)[:3000]
    assert_verified(str(capture_dir), streams=4)
    for sensor in sensors:
        source = SyntheticSource(**{k: v for k, v in sensor.items() if k != "type"})
        captured = stream_bytes(str(capture_dir), sensor["id"])
        assert captured == synthetic_bytes(source, 0, sensor["max_bytes"] // 2)
    # Both TaskManagers ran the reading step.
    vertex = next(v for v in flink_env.rest(f"/jobs/{job_id}")["vertices"]
                  if "ReadChunks" in v["name"])
    managers = flink_env.rest(f"/jobs/{job_id}/vertices/{vertex['id']}/taskmanagers")
    assert len({tm["taskmanager-id"] for tm in managers["taskmanagers"]}) == 2, managers


def test_unbounded_capture_on_flink_is_byte_exact_and_drains_on_sigint(flink_env, tmp_path):
    """TCP and file streams on the cluster; window files appear while it runs; Ctrl-C drains."""
    capture_dir = tmp_path / "capture"
    tcp_data = os.urandom(2_000_000)
    feeder = TcpFeeder(tcp_data, piece=16384, pause=0.004)
    file_data = os.urandom(3_000_000)
    data_file = tmp_path / "recording.bin"
    data_file.write_bytes(file_data)
    config = write_config(
        tmp_path / "pipeline.yaml",
        {
            "sources": [
                feeder.source("tcp1"),
                {"id": "file1", "type": "file", "path": str(data_file)},
            ],
            "chunk": {"max_bytes": 65536, "max_seconds": 0.5},
            "window_seconds": 2,
            "sinks": [{"type": "parquet", "path": str(capture_dir)}],
        },
    )
    jobs_before = _finished_jobs(flink_env)
    run = CaptureProcess(config, "--runner=FlinkRunner", f"--flink_master={flink_env.flink_master}")
    try:
        wait_until(feeder.sent.is_set, 120, "the TCP feeder to send everything")
        wait_until(lambda: capture_dir.exists() and len(capture_files(str(capture_dir))) >= 2,
                   60, "window files while the capture runs")
        assert run.process.poll() is None  # files appeared while it was still running
        time.sleep(2.5)  # the last TCP bytes are cut into a chunk (max_seconds 0.5)
        run.interrupt()
        code, output = run.wait(timeout=120)
    finally:
        feeder.close()
    assert code == 0, output
    assert "SIGINT" in output and "pipeline failed" not in output
    assert_verified(str(capture_dir), streams=2)
    assert stream_bytes(str(capture_dir), "tcp1") == tcp_data
    assert stream_bytes(str(capture_dir), "file1") == file_data
    # It ran as a job of the standalone cluster, which finished (not on an embedded MiniCluster).
    assert len(_finished_jobs(flink_env) - jobs_before) == 1


def test_bounded_capture_on_flink_batch(flink_env, tmp_path):
    """`--duration` makes a bounded job: Flink runs it in batch mode; in-process run_capture."""
    capture_dir = tmp_path / "capture"
    file_data = os.urandom(1_500_000)
    data_file = tmp_path / "recording.bin"
    data_file.write_bytes(file_data)
    sensor = {"id": "sensor1", "type": "synthetic", "rate": 4000, "sample_format": "int32"}
    config = parse_config({
        "sources": [sensor, {"id": "file1", "type": "file", "path": str(data_file),
                             "start_offset": 1000}],
        "chunk": {"max_bytes": 32768, "max_seconds": 0.5},
        "window_seconds": 2,
        "sinks": [{"type": "parquet", "path": str(capture_dir)}],
    })
    out = io.StringIO()
    jobs_before = _finished_jobs(flink_env)
    code = run_capture(
        config, ["--runner=FlinkRunner", f"--flink_master={flink_env.flink_master}"],
        duration=6, status_interval=0, out=out,
    )
    assert code == 0, out.getvalue()
    assert "(bounded)" in out.getvalue()
    reports = assert_verified(str(capture_dir), streams=2)
    assert stream_bytes(str(capture_dir), "file1") == file_data[1000:]
    sensor_bytes = stream_bytes(str(capture_dir), "sensor1")
    assert reports["sensor1"].discontinuities == 0 and len(sensor_bytes) > 4 * 4000 * 3
    source = SyntheticSource(**{k: v for k, v in sensor.items() if k != "type"})
    assert sensor_bytes == synthetic_bytes(source, 0, len(sensor_bytes) // 4)
    # The dashboard (REST API) names the steps after streamtap's labels and shows the per-stream
    # metrics (Beam's metrics container is the job's "Accumulators" tab).
    (job_id,) = _finished_jobs(flink_env) - jobs_before
    vertices = " ".join(v["name"] for v in flink_env.rest(f"/jobs/{job_id}")["vertices"])
    # No "Window" step: a bounded Parquet-only capture's writer windows the chunks itself
    # (WriteChunksToParquet.own_windows).
    for label in ("ReadStreams", "WriteToParquet"):
        assert label in vertices, vertices
    accumulators = str(flink_env.rest(f"/jobs/{job_id}/accumulators"))
    assert "sensor1.bytes" in accumulators, accumulators[:2000]


def test_taskmanager_killed_mid_capture_recovers_from_checkpoint(flink_healed, tmp_path):
    """SIGKILL of the TaskManager running the capture: the job restarts from its last
    checkpoint on the other TaskManager. The followed file resumes at its offset with nothing
    lost; the live TCP stream reconnects and marks a discontinuity instead of hiding the gap."""
    service = flink_healed
    capture_dir = tmp_path / "capture"
    growing = tmp_path / "growing.bin"
    growing.write_bytes(b"")
    file_data = os.urandom(4_000_000)
    broadcast = LiveBroadcast()
    config = write_config(
        tmp_path / "pipeline.yaml",
        {
            "sources": [
                {"id": "file1", "type": "file", "path": str(growing), "follow": True,
                 "poll_interval": 0.05},
                {"id": "live1", "type": "tcp", "address": f"127.0.0.1:{broadcast.port}",
                 "reconnect": {"initial_delay": 0.2, "max_delay": 1.0}},
            ],
            "chunk": {"max_bytes": 65536, "max_seconds": 0.5},
            "window_seconds": 2,
            "sinks": [{"type": "parquet", "path": str(capture_dir)}],
        },
    )
    appended = threading.Event()

    def append_slowly() -> None:
        with open(growing, "ab") as out:
            for start in range(0, len(file_data), 100_000):
                out.write(file_data[start:start + 100_000])
                out.flush()
                time.sleep(0.5)
        appended.set()

    run = CaptureProcess(config, "--runner=FlinkRunner",
                         f"--flink_master={service.flink_master}",
                         "--checkpointing_interval=2000")
    try:
        wait_until(lambda: _running_job(service) is not None, 120, "the job to run")
        job = _running_job(service)
        wait_until(lambda: capture_dir.exists() and capture_files(str(capture_dir)), 120,
                   "the first window files")
        writer = threading.Thread(target=append_slowly, daemon=True)
        writer.start()
        time.sleep(5)  # a few checkpoints (every 2 s) while both streams flow
        victim = taskmanager_of_job(service, job, "ReadChunks")
        assert victim is not None
        service.kill_taskmanager(victim)
        wait_until(appended.is_set, 120, "the file to be written completely")
        time.sleep(6)  # the restarted job catches up with the file
        run.interrupt()
        code, output = run.wait(timeout=120)
    finally:
        broadcast.close()
    assert code == 0, output
    states = [j["state"] for j in service.jobs() if j["jid"] == job]
    assert states == ["FINISHED"], states
    # It was restored from a checkpoint (not restarted from scratch).
    assert _checkpoint_counts(service, job)["restored"] >= 1
    reports = assert_verified(str(capture_dir), streams=2)
    assert stream_bytes(str(capture_dir), "file1") == file_data
    # The live stream: every session is an unbroken run of the broadcast, and anything lost
    # between sessions is a marked discontinuity (verify passed). With LOOPBACK workers the
    # reader lives in `streamtap run`, not in the killed TaskManager: its TCP session survives
    # and the restored job gets the very same chunks again, so nothing is lost at all.
    sessions: dict[str, bytearray] = {}
    for chunk in chunks_of(str(capture_dir), "live1"):
        sessions.setdefault(chunk.session, bytearray()).extend(chunk.payload)
    for data in sessions.values():
        broadcast.check_session(bytes(data))
    live = reports["live1"]
    assert live.discontinuities == live.sessions - 1, live.summary()
    assert live.bytes > 2_000_000, live.summary()


def test_two_hundred_concurrent_streams_on_the_cluster_have_no_unmarked_gap(flink_env, tmp_path):
    """200 live streams at once on the two-core cluster: every one verified and byte-exact."""
    capture_dir = tmp_path / "capture"
    sensors = [
        {"id": f"sensor{i:03d}", "type": "synthetic", "rate": 250, "sample_format": "float32",
         "seed": i}
        for i in range(200)
    ]
    config = parse_config({
        "sources": sensors,
        "chunk": {"max_bytes": 65536, "max_seconds": 2.0},
        "window_seconds": 5,
        "sinks": [{"type": "parquet", "path": str(capture_dir)}],
    })
    out = io.StringIO()
    code = run_capture(
        config, ["--runner=FlinkRunner", f"--flink_master={flink_env.flink_master}"],
        duration=20, status_interval=0, out=out,
    )
    assert code == 0, out.getvalue()
    reports = assert_verified(str(capture_dir), streams=200)
    for sensor in sensors:
        captured = stream_bytes(str(capture_dir), sensor["id"])
        assert len(captured) >= 4 * 250 * 10, (sensor["id"], len(captured))  # most of 20 s
        source = SyntheticSource(**{k: v for k, v in sensor.items() if k != "type"})
        assert captured == synthetic_bytes(source, 0, len(captured) // 4)
        assert reports[sensor["id"]].discontinuities == 0


class _ReaderRecordingFeeder(TcpFeeder):
    """A TcpFeeder that sends everything at once and notes which process connected to it
    (pid, parent pid)."""

    reader: tuple[int, int] | None = None

    def _serve(self) -> None:
        try:
            connection, peer = self._listener.accept()
        except OSError:
            return
        for conn in psutil.net_connections(kind="tcp"):
            if conn.pid and conn.laddr and tuple(conn.laddr)[:2] == tuple(peer)[:2]:
                self.reader = (conn.pid, psutil.Process(conn.pid).ppid())
        with connection:
            connection.sendall(self.data)
            self.sent.set()
            self._closed.wait()


def test_external_workers_from_the_clusters_worker_pool_are_byte_exact(flink_env, tmp_path):
    """--environment_type=EXTERNAL without a config: streamtap takes the local cluster's worker
    pool; with --parallelism=2 the streams are read by worker processes of that pool (not by
    this process, as with LOOPBACK), and the bounded batch capture is byte-exact."""
    pool = flink_env.process_ids()["worker-pool"]
    master = f"--flink_master={flink_env.flink_master}"
    filled = Flink().defaults(["--runner=FlinkRunner", master, "--parallelism=2",
                               "--environment_type=EXTERNAL"])
    assert f"--environment_config={flink_env.worker_pool}" in filled
    assert "--sdk_worker_parallelism=2" in filled  # min(slots per TaskManager, parallelism)
    with pytest.raises(RunError, match="worker pool"):
        Flink().defaults(["--runner=FlinkRunner", "--flink_master=127.0.0.1:1",
                          "--job_endpoint=127.0.0.1:2", "--environment_type=EXTERNAL"])

    capture_dir = tmp_path / "capture"
    payloads = [os.urandom(3_000_000) for _ in range(3)]
    feeders = [_ReaderRecordingFeeder(data) for data in payloads]
    config = parse_config({
        "sources": [feeder.source(f"tcp{i}", max_bytes=len(feeder.data))
                    for i, feeder in enumerate(feeders)],
        "chunk": {"max_bytes": 65536, "max_seconds": 0.5},
        "window_seconds": 2,
        "sinks": [{"type": "parquet", "path": str(capture_dir)}],
    })
    out = io.StringIO()
    jobs_before = _finished_jobs(flink_env)
    try:
        code = run_capture(config, ["--runner=FlinkRunner", master, "--parallelism=2",
                                    "--environment_type=EXTERNAL"], status_interval=0, out=out)
    finally:
        for feeder in feeders:
            feeder.close()
    assert code == 0, out.getvalue()
    assert_verified(str(capture_dir), streams=3)
    for index, data in enumerate(payloads):
        assert stream_bytes(str(capture_dir), f"tcp{index}") == data
    readers = [feeder.reader for feeder in feeders]
    assert all(reader is not None for reader in readers), readers
    assert all(pid != os.getpid() and parent == pool for pid, parent in readers), (readers, pool)
    (job_id,) = _finished_jobs(flink_env) - jobs_before
    vertices = flink_env.rest(f"/jobs/{job_id}")["vertices"]
    assert {v["parallelism"] for v in vertices if "ReadStreams" in v["name"]} == {2}, vertices


def test_external_workers_of_an_unbounded_capture_drain_on_ctrl_c(flink_env, tmp_path):
    """--environment_type=EXTERNAL, unbounded (a streaming job, checkpointed): the streams live in
    the worker pool's processes. Ctrl-C reaches them through the run's stop file, each marks its
    end beside it, and `streamtap run` drains the job: it FINISHES, the run exits 0 and every
    byte received is written. (The drain used to watch streams in `streamtap run` only: the job
    ran on and the run never ended.)"""
    capture_dir = tmp_path / "capture"
    payloads = [os.urandom(1_500_000) for _ in range(2)]
    feeders = [_ReaderRecordingFeeder(data) for data in payloads]
    sensor = {"id": "sensor1", "type": "synthetic", "rate": 2000, "sample_format": "int16"}
    config = write_config(tmp_path / "pipeline.yaml", {
        "sources": [feeders[0].source("tcp0"), feeders[1].source("tcp1"), sensor],
        "chunk": {"max_bytes": 65536, "max_seconds": 0.5},
        "window_seconds": 1,
        "sinks": [{"type": "parquet", "path": str(capture_dir)}],
    })
    jobs_before = {job["jid"] for job in flink_env.jobs()}
    run = CaptureProcess(config, "--runner=FlinkRunner", f"--flink_master={flink_env.flink_master}",
                         "--environment_type=EXTERNAL", "--parallelism=2")
    try:
        for feeder in feeders:
            wait_until(feeder.sent.is_set, 180, "the feeders to send everything")
        wait_until(lambda: capture_dir.exists() and len(capture_files(str(capture_dir))) >= 4,
                   120, "window files while the capture runs")
        time.sleep(2)
        assert run.process.poll() is None
        run.interrupt()
        code, output = run.wait(timeout=180)
    finally:
        for feeder in feeders:
            feeder.close()
        if run.process.poll() is None:  # failed before the end: leave no capture running
            os.killpg(run.process.pid, signal.SIGKILL)
            print(run.process.communicate()[0][-5000:])
    assert code == 0, output
    assert "SIGINT" in output and "pipeline failed" not in output
    (job_id,) = {job["jid"] for job in flink_env.jobs()} - jobs_before
    assert [j["state"] for j in flink_env.jobs() if j["jid"] == job_id] == ["FINISHED"]
    # The streams were read in the pool's worker processes, not in `streamtap run`.
    pool = flink_env.process_ids()["worker-pool"]
    assert all(f.reader is not None and f.reader[1] == pool for f in feeders), [
        f.reader for f in feeders]
    reports = assert_verified(str(capture_dir), streams=3)
    for index, data in enumerate(payloads):
        assert stream_bytes(str(capture_dir), f"tcp{index}") == data
    sensor_bytes = stream_bytes(str(capture_dir), "sensor1")
    source = SyntheticSource(**{k: v for k, v in sensor.items() if k != "type"})
    assert sensor_bytes == synthetic_bytes(source, 0, len(sensor_bytes) // 2)
    assert reports["sensor1"].chunks > 0
