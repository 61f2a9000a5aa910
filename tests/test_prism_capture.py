"""Unbounded captures on Prism (the DirectRunner's streaming engine), stopped by Ctrl-C.

`streamtap run` runs as a terminal job would, in its own process group; SIGINT goes to the whole
group, as a Ctrl-C does. The capture must already have written window files while running, then
drain on the signal: every byte received before it is written and the process exits 0.
"""

import os
import re
import signal
import threading
import time

import apache_beam as beam

from streamtap.plugins import parse_config
from streamtap.io.sinks.parquet.read import capture_files
from streamtap.io.sources.synthetic import SyntheticSource, synthetic_bytes
from streamtap.pipelines.capture import build_capture
from tests.helpers import (
    CaptureProcess,
    LiveBroadcast,
    TcpFeeder,
    assert_verified,
    chunks_of,
    free_port,
    stream_bytes,
    wait_until,
    write_config,
)


def _summary_bytes(output: str, stream_id: str) -> int:
    match = re.search(rf"^\s+{re.escape(stream_id)}\s+(\d+) bytes", output, re.MULTILINE)
    assert match, output
    return int(match.group(1))


def test_unbounded_capture_writes_windows_while_running_and_drains_on_sigint(tmp_path):
    capture_dir = tmp_path / "capture"
    fifo = tmp_path / "sensor.fifo"
    os.mkfifo(fifo)
    fifo_data = os.urandom(500_000)
    tcp_data = os.urandom(2_000_000)
    feeder = TcpFeeder(tcp_data, piece=16384, pause=0.005)
    udp_port = free_port()
    datagrams = [os.urandom(200 + i % 700) for i in range(300)]
    sensor = {"id": "sensor1", "type": "synthetic", "rate": 2000, "sample_format": "int32"}
    config = write_config(
        tmp_path / "pipeline.yaml",
        {
            "sources": [
                sensor,
                feeder.source("tcp1"),
                {"id": "udp1", "type": "udp", "address": f"127.0.0.1:{udp_port}"},
                {"id": "fifo1", "type": "file", "path": str(fifo)},
            ],
            "chunk": {"max_bytes": 32768, "max_seconds": 0.5},
            "window_seconds": 1,
            "sinks": [{"type": "parquet", "path": str(capture_dir)}],
        },
    )

    def feed_fifo_and_udp():
        import socket

        with open(fifo, "wb") as pipe:  # blocks until the capture opens the FIFO
            pipe.write(fifo_data)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for datagram in datagrams:
                sock.sendto(datagram, ("127.0.0.1", udp_port))
                time.sleep(0.003)

    threading.Thread(target=feed_fifo_and_udp, daemon=True).start()
    run = CaptureProcess(config)
    try:
        wait_until(lambda: capture_dir.exists() and len(capture_files(str(capture_dir))) >= 3,
                   60, "window files while the capture runs")
        assert run.process.poll() is None  # files appeared while it was still running
        wait_until(feeder.sent.is_set, 60, "the TCP feeder to send everything")
        time.sleep(2.5)  # the UDP datagrams and the last TCP bytes arrive
        run.interrupt()
        code, output = run.wait(timeout=60)
    finally:
        feeder.close()
    assert code == 0, output
    assert "SIGINT" in output and "pipeline failed" not in output
    assert_verified(str(capture_dir), streams=4)
    assert stream_bytes(str(capture_dir), "tcp1") == tcp_data
    assert stream_bytes(str(capture_dir), "fifo1") == fifo_data
    assert stream_bytes(str(capture_dir), "udp1") == b"".join(datagrams)
    sensor_bytes = stream_bytes(str(capture_dir), "sensor1")
    # Everything the sensor source received before the signal was written.
    assert len(sensor_bytes) == _summary_bytes(output, "sensor1") > 0
    config_object = SyntheticSource(**{k: v for k, v in sensor.items() if k != "type"})
    expected = synthetic_bytes(config_object, 0, len(sensor_bytes) // 4 + 1)
    assert sensor_bytes == expected[: len(sensor_bytes)]


def test_tcp_server_restart_on_prism_gives_one_marked_discontinuity(tmp_path):
    capture_dir = tmp_path / "capture"
    port = free_port()
    first, second = os.urandom(400_000), os.urandom(300_000)
    feeder = TcpFeeder(first, port=port, keep_open=False)
    config = write_config(
        tmp_path / "pipeline.yaml",
        {
            "sources": [{"id": "tcp1", "type": "tcp", "address": f"127.0.0.1:{port}",
                         "reconnect": {"initial_delay": 0.2, "max_delay": 0.5}}],
            "chunk": {"max_bytes": 65536, "max_seconds": 0.5},
            "window_seconds": 1,
            "sinks": [{"type": "parquet", "path": str(capture_dir)}],
        },
    )
    run = CaptureProcess(config)
    restarted = None
    try:
        wait_until(feeder.sent.is_set, 60, "the first server to send")
        time.sleep(0.5)
        feeder.close()
        time.sleep(1.5)
        restarted = TcpFeeder(second, port=port)
        wait_until(restarted.sent.is_set, 60, "the restarted server to send")
        time.sleep(2)
        run.interrupt()
        code, output = run.wait(timeout=60)
    finally:
        if restarted:
            restarted.close()
    assert code == 0, output
    reports = assert_verified(str(capture_dir), streams=1)
    assert stream_bytes(str(capture_dir), "tcp1") == first + second
    assert reports["tcp1"].discontinuities == 1
    reconnects = re.search(r"^\s+tcp1\s+\d+ bytes\s+chunks \d+\s+reconnects (\d+)", output, re.M)
    assert reconnects and int(reconnects.group(1)) >= 1, output


def test_sigterm_drains_like_ctrl_c(tmp_path):
    capture_dir = tmp_path / "capture"
    config = write_config(
        tmp_path / "pipeline.yaml",
        {
            "sources": [{"id": "tone1", "type": "synthetic", "kind": "tone", "rate": 8000,
                         "sample_format": "int16"}],
            "chunk": {"max_bytes": 65536, "max_seconds": 0.5},
            "window_seconds": 1,
            "sinks": [{"type": "parquet", "path": str(capture_dir)}],
        },
    )
    run = CaptureProcess(config)
    wait_until(lambda: capture_dir.exists() and capture_files(str(capture_dir)), 60,
               "the first window file")
    os.kill(run.process.pid, signal.SIGTERM)  # as a scheduler stops a job
    code, output = run.wait(timeout=60)
    assert code == 0, output
    assert "SIGTERM" in output
    captured = stream_bytes(str(capture_dir), "tone1")
    assert len(captured) == _summary_bytes(output, "tone1") > 0
    assert_verified(str(capture_dir), streams=1)


def test_the_reading_and_writing_stage_has_an_output_for_prism(tmp_path):
    # Prism busy-waits through every bundle of a stage with no output (BENCHMARKS.md, scenario 2):
    # the sinks' outputs must be consumed by a shuffle, for Parquet and for Kafka alike.
    config = parse_config({
        "sources": [{"id": "s", "type": "synthetic"}],
        "sinks": [
            {"type": "parquet", "path": str(tmp_path / "out")},
            {"type": "kafka", "bootstrap_servers": "127.0.0.1:9", "topic": "t"},
        ],
    })
    pipeline = beam.Pipeline()
    build_capture(pipeline, config)
    transforms = pipeline.to_runner_api().components.transforms
    producer = {pcoll: t.unique_name for t in transforms.values() if not t.subtransforms
                for pcoll in t.outputs.values()}

    flatten = next(t for t in transforms.values() if t.unique_name == "SinkResults")
    sinks = sorted(producer[pcoll].split("/")[0] for pcoll in flatten.inputs.values())
    assert sinks == ["WriteToKafka", "WriteToParquet"]
    shuffle = next(t for t in transforms.values() if t.unique_name == "EndOfStage")
    assert shuffle.spec.urn == "beam:transform:group_by_key:v1"


def test_a_capture_killed_with_sigkill_resumes_on_the_next_run_and_verifies(tmp_path):
    """`streamtap run` and Prism SIGKILLed mid-capture (no drain, nothing flushed), then run
    again into the same directory: the second run continues every stream's seq and offset from
    the files on disk, so the whole capture verifies. A followed file and a synthetic source
    resume at their byte offset: nothing lost. The live TCP stream loses what was sent while
    nothing ran and what the killed process held: one marked discontinuity, never a silent gap."""
    capture_dir = tmp_path / "capture"
    growing = tmp_path / "growing.bin"
    growing.write_bytes(b"")
    file_data = os.urandom(3_000_000)
    broadcast = LiveBroadcast(rate=100_000)
    sensor = {"id": "sensor1", "type": "synthetic", "rate": 4000, "sample_format": "int16"}
    config = write_config(
        tmp_path / "pipeline.yaml",
        {
            "sources": [
                {"id": "file1", "type": "file", "path": str(growing), "follow": True,
                 "poll_interval": 0.05},
                sensor,
                {"id": "live1", "type": "tcp", "address": f"127.0.0.1:{broadcast.port}",
                 "reconnect": {"initial_delay": 0.2, "max_delay": 1.0}},
            ],
            "chunk": {"max_bytes": 65536, "max_seconds": 0.5},
            "window_seconds": 1,
            "sinks": [{"type": "parquet", "path": str(capture_dir)}],
        },
    )
    appended = threading.Event()

    def append_slowly() -> None:
        with open(growing, "ab") as out:
            for start in range(0, len(file_data), 100_000):
                out.write(file_data[start:start + 100_000])
                out.flush()
                time.sleep(0.3)  # ~9 s in all: through the kill and into the second run
        appended.set()

    first = CaptureProcess(config)
    try:
        wait_until(lambda: capture_dir.exists() and len(capture_files(str(capture_dir))) >= 6,
                   60, "window files of the first run")
        threading.Thread(target=append_slowly, daemon=True).start()
        time.sleep(3)
        os.killpg(first.process.pid, signal.SIGKILL)  # streamtap run and Prism, no drain
        code, _ = first.wait(timeout=30)
        assert code == -signal.SIGKILL
        time.sleep(1)  # the live stream goes on without us
        second = CaptureProcess(config)
        wait_until(appended.is_set, 60, "the file to be written completely")
        time.sleep(3)
        second.interrupt()
        code, output = second.wait(timeout=60)
    finally:
        broadcast.close()
    assert code == 0, output
    assert "file1: continuing the capture at seq" in output, output

    reports = assert_verified(str(capture_dir), streams=3)
    assert stream_bytes(str(capture_dir), "file1") == file_data
    assert reports["file1"].discontinuities == 0
    sensor_bytes = stream_bytes(str(capture_dir), "sensor1")
    source = SyntheticSource(**{k: v for k, v in sensor.items() if k != "type"})
    assert sensor_bytes == synthetic_bytes(source, 0, len(sensor_bytes) // 2)
    assert reports["sensor1"].discontinuities == 0
    live = reports["live1"]
    assert live.sessions == 2 and live.discontinuities == 1, live.summary()
    sessions: dict[str, bytearray] = {}
    for chunk in chunks_of(str(capture_dir), "live1"):
        sessions.setdefault(chunk.session, bytearray()).extend(chunk.payload)
    for data in sessions.values():
        broadcast.check_session(bytes(data))
