"""Every non-HTTP source, captured end to end to Parquet on the FnApiRunner (bounded), byte-exact.

The same captures on Prism, unbounded and stopped by SIGINT, are in tests/test_prism_capture.py.
"""

import io
import os
import socket
import threading
import time

from streamtap.io.sources.synthetic import SyntheticSource, synthetic_bytes
from streamtap.pipelines.run import run_capture
from streamtap.plugins import parse_config
from tests.helpers import (
    TcpFeeder,
    assert_verified,
    capture,
    capture_in_process,
    chunks_of,
    free_port,
    stream_bytes,
)


def _config(sources, path, max_bytes=65536, max_seconds=0.5, window_seconds=2):
    return {
        "sources": sources,
        "chunk": {"max_bytes": max_bytes, "max_seconds": max_seconds},
        "window_seconds": window_seconds,
        "sinks": [{"type": "parquet", "path": str(path)}],
    }


def test_tcp_stream_round_trips_byte_exact(tmp_path):
    data = os.urandom(3_000_000)
    with TcpFeeder(data, piece=65536) as feeder:
        capture(
            _config(
                [feeder.source("tcp1", max_bytes=len(data))],
                tmp_path,
            )
        )
    assert stream_bytes(str(tmp_path), "tcp1") == data
    assert_verified(str(tmp_path), streams=1)
    chunks = chunks_of(str(tmp_path), "tcp1")
    assert max(len(c.payload) for c in chunks) == 65536
    assert not any(c.discontinuity for c in chunks)


def test_tcp_server_restart_gives_exactly_one_discontinuity_and_no_other_gap(tmp_path):
    first, second = os.urandom(300_000), os.urandom(200_000)
    port = free_port()
    feeder = TcpFeeder(first, port=port, keep_open=False)

    def restart_later():
        feeder.sent.wait(30)
        time.sleep(0.5)
        feeder.close()
        time.sleep(1.5)  # the server is down: the source sees connection refused and retries
        restarted.append(TcpFeeder(second, port=port))

    restarted: list = []
    threading.Thread(target=restart_later, daemon=True).start()
    try:
        capture(
            _config(
                [{"id": "restart1", "type": "tcp", "address": f"127.0.0.1:{port}",
                  "max_bytes": len(first) + len(second),
                  "reconnect": {"initial_delay": 0.2, "max_delay": 0.5}}],
                tmp_path,
            )
        )
    finally:
        for server in restarted:
            server.close()
    assert stream_bytes(str(tmp_path), "restart1") == first + second
    reports = assert_verified(str(tmp_path), streams=1)
    chunks = chunks_of(str(tmp_path), "restart1")
    marked = [c for c in chunks if c.discontinuity]
    assert len(marked) == 1
    assert marked[0].offset == len(first)
    assert reports["restart1"].sessions == 2


def test_tcp_listen_takes_each_connection_as_a_session(tmp_path):
    port = free_port()
    parts = [os.urandom(100_000), os.urandom(50_000)]

    def device():
        for part in parts:
            for _ in range(100):
                try:
                    connection = socket.create_connection(("127.0.0.1", port))
                    break
                except ConnectionRefusedError:
                    time.sleep(0.05)
            with connection:
                connection.sendall(part)
            time.sleep(0.3)

    threading.Thread(target=device, daemon=True).start()
    capture(
        _config(
            [{"id": "listen1", "type": "tcp_listen", "address": f"127.0.0.1:{port}",
              "max_bytes": sum(map(len, parts)), "reconnect": {"initial_delay": 0.05}}],
            tmp_path,
        )
    )
    assert stream_bytes(str(tmp_path), "listen1") == b"".join(parts)
    reports = assert_verified(str(tmp_path), streams=1)
    assert reports["listen1"].sessions == 2
    assert reports["listen1"].discontinuities == 1


def _wait_until_bound(port: int, timeout: float = 60.0) -> None:
    """Waits until something holds UDP `port` on 127.0.0.1 (binding it ourselves fails): a fixed
    sleep lost the first datagrams when a loaded machine started the capture late."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing bound UDP port {port} within {timeout} s")


def test_udp_datagrams_round_trip_byte_exact_and_stay_whole(tmp_path):
    port = free_port()
    datagrams = [os.urandom(100 + (i * 37) % 1300) for i in range(400)]

    def send():
        _wait_until_bound(port)  # datagrams sent before the source binds are lost
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for datagram in datagrams:
                sock.sendto(datagram, ("127.0.0.1", port))
                time.sleep(0.002)

    threading.Thread(target=send, daemon=True).start()
    capture(
        _config(
            [{"id": "udp1", "type": "udp", "address": f"127.0.0.1:{port}",
              "max_bytes": sum(map(len, datagrams))}],
            tmp_path,
            max_bytes=16384,
        )
    )
    assert stream_bytes(str(tmp_path), "udp1") == b"".join(datagrams)
    assert_verified(str(tmp_path), streams=1)
    boundaries = set()
    position = 0
    for datagram in datagrams:
        position += len(datagram)
        boundaries.add(position)
    for chunk in chunks_of(str(tmp_path), "udp1"):
        assert chunk.end_offset in boundaries  # no datagram is split across chunks


def test_fifo_round_trips_byte_exact_until_its_writer_closes(tmp_path):
    fifo = tmp_path / "sensor.fifo"
    os.mkfifo(fifo)
    data = os.urandom(2_000_000)

    def write():
        with open(fifo, "wb") as pipe:
            for start in range(0, len(data), 50_000):
                pipe.write(data[start : start + 50_000])
                pipe.flush()
                time.sleep(0.01)

    threading.Thread(target=write, daemon=True).start()
    capture(_config([{"id": "fifo1", "type": "file", "path": str(fifo)}], tmp_path / "cap"))
    assert stream_bytes(str(tmp_path / "cap"), "fifo1") == data
    assert_verified(str(tmp_path / "cap"), streams=1)


def test_regular_file_round_trips_and_start_offset_resumes(tmp_path):
    data = os.urandom(5_000_000)
    path = tmp_path / "recording.bin"
    path.write_bytes(data)
    capture(
        _config(
            [
                {"id": "file1", "type": "file", "path": str(path)},
                {"id": "tail1", "type": "file", "path": str(path), "start_offset": 4_000_000},
            ],
            tmp_path / "cap",
        )
    )
    assert stream_bytes(str(tmp_path / "cap"), "file1") == data
    assert stream_bytes(str(tmp_path / "cap"), "tail1") == data[4_000_000:]
    assert chunks_of(str(tmp_path / "cap"), "tail1")[0].offset == 4_000_000
    reports = assert_verified(str(tmp_path / "cap"))
    assert reports["file1"].bytes == len(data)


def test_followed_file_captures_what_is_appended(tmp_path):
    path = tmp_path / "growing.log"
    first, appended = os.urandom(10_000), os.urandom(30_000)
    path.write_bytes(first)

    def append():
        time.sleep(1.0)
        with open(path, "ab") as log:
            for start in range(0, len(appended), 3000):
                log.write(appended[start : start + 3000])
                log.flush()
                time.sleep(0.05)

    threading.Thread(target=append, daemon=True).start()
    capture(
        _config(
            [{"id": "log1", "type": "file", "path": str(path), "follow": True,
              "poll_interval": 0.05, "max_bytes": len(first) + len(appended)}],
            tmp_path / "cap",
        )
    )
    assert stream_bytes(str(tmp_path / "cap"), "log1") == first + appended


def test_character_device_is_read_as_a_live_stream(tmp_path):
    capture(
        _config(
            [{"id": "zero1", "type": "file", "path": "/dev/zero", "max_bytes": 1_000_000}],
            tmp_path,
        )
    )
    assert stream_bytes(str(tmp_path), "zero1") == bytes(1_000_000)


def test_synthetic_sources_produce_their_documented_bytes(tmp_path):
    sensor = {"id": "sensor1", "type": "synthetic", "kind": "sensor", "rate": 1000,
              "sample_format": "float32", "seed": 7}
    tone = {"id": "tone1", "type": "synthetic", "kind": "tone", "rate": 8000,
            "sample_format": "int16", "frequency": 1000}
    capture(_config([sensor, tone], tmp_path), duration=3)
    for spec in (sensor, tone):
        config = SyntheticSource(**{k: v for k, v in spec.items() if k != "type"})
        captured = stream_bytes(str(tmp_path), spec["id"])
        samples = len(captured) // config.sample_size
        assert samples >= 0.7 * 3 * spec["rate"]  # paced in real time
        assert captured == synthetic_bytes(config, 0, samples)[: len(captured)]
    assert_verified(str(tmp_path), streams=2)


def test_a_dead_stream_does_not_stop_the_healthy_ones(tmp_path):
    dead_port = free_port()  # nothing listens here
    data = os.urandom(200_000)
    with TcpFeeder(data) as feeder:
        out = io.StringIO()
        code = run_capture(
            parse_config(_config(
                [
                    {"id": "dead1", "type": "tcp", "address": f"127.0.0.1:{dead_port}",
                     "reconnect": {"initial_delay": 0.1, "max_delay": 0.2}},
                    feeder.source("alive1"),
                ],
                tmp_path,
            )),
            ["--runner=FnApiRunner"], duration=3, status_interval=0, out=out,
        )
    output = out.getvalue()
    assert stream_bytes(str(tmp_path), "alive1") == data
    assert "dead1" in output and "connection refused" in output
    # The run still fails: a configured stream captured nothing (tests/pipelines/test_run.py).
    assert code == 1 and "dead1: FAILED: captured nothing" in output, output


def test_per_stream_beam_metrics_count_what_was_captured(tmp_path):
    data = os.urandom(400_000)
    with TcpFeeder(data, piece=8192) as feeder:
        counters = capture_in_process(
            _config(
                [feeder.source("metered1", max_bytes=len(data))],
                tmp_path,
                max_bytes=10_000,
            )
        )
    assert counters["metered1.bytes"] == len(data)
    assert counters["metered1.chunks"] == len(chunks_of(str(tmp_path), "metered1")) == 40


def test_a_second_run_continues_the_capture_where_the_first_ended(tmp_path):
    data = os.urandom(3_000_000)
    path = tmp_path / "recording.bin"
    path.write_bytes(data)
    feeder = TcpFeeder(os.urandom(100_000))
    live_first = feeder.data
    sources = [
        {"id": "file1", "type": "file", "path": str(path)},
        feeder.source("live1"),
    ]
    first = [dict(sources[0], max_bytes=1_000_000), dict(sources[1], max_bytes=len(live_first))]
    try:
        capture(_config(first, tmp_path / "cap"))
    finally:
        feeder.close()
    feeder = TcpFeeder(os.urandom(50_000))
    second = [sources[0], dict(sources[1], address=f"127.0.0.1:{feeder.port}",
                               max_bytes=50_000)]
    try:
        output = capture(_config(second, tmp_path / "cap"))
    finally:
        feeder.close()
    assert "file1: continuing the capture at seq" in output
    reports = assert_verified(str(tmp_path / "cap"), streams=2)
    assert stream_bytes(str(tmp_path / "cap"), "file1") == data
    assert reports["file1"].discontinuities == 0  # a file resumes exactly: nothing is missing
    assert stream_bytes(str(tmp_path / "cap"), "live1") == live_first + feeder.data
    assert reports["live1"].discontinuities == 1  # a live stream may have lost bytes in between
    assert reports["live1"].sessions == 2


def test_a_float32_sensor_over_tcp_read_in_odd_pieces_is_cut_into_whole_samples(tmp_path):
    """chunk.align samples with sample_bytes 4: the feeder sends 4,099-byte pieces, the limit
    (10,001 bytes) and the time cuts fall mid-sample, yet every chunk holds whole samples."""
    import numpy as np

    data = np.sin(np.arange(100_000, dtype=np.float32) / 50).astype("<f4").tobytes()
    with TcpFeeder(data, piece=4099, pause=0.01) as feeder:
        config = _config(
            [feeder.source("sensor1", max_bytes=len(data), sample_bytes=4)],
            tmp_path,
            max_bytes=10_001,
            max_seconds=0.03,
        )
        config["chunk"]["align"] = "auto"
        capture(config)
    assert stream_bytes(str(tmp_path), "sensor1") == data
    assert_verified(str(tmp_path), streams=1)
    chunks = chunks_of(str(tmp_path), "sensor1")
    assert all(len(c.payload) % 4 == 0 for c in chunks), sorted({len(c.payload) % 4 for c in chunks})
    assert all(c.tags["frames"] == str(len(c.payload) // 4) for c in chunks)
    assert max(len(c.payload) for c in chunks) <= 10_000  # the limit, rounded down to a sample
    assert any(len(c.payload) < 10_000 for c in chunks[:-1])  # and cuts on time
