"""Operating a capture: Prometheus metrics, the rate watch, status lines as text and JSON.

A real Prometheus server (Debian's `prometheus`, tests/fixtures/prometheus.py) scrapes a
`streamtap run --metrics-port` subprocess every second; TCP feeders that pause and resume make a
stream stall and recover. No part of streamtap is replaced.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from streamtap.config import ChunkSettings
from streamtap.io.hub import hub
from streamtap.io.sinks.activity import sink_activity
from streamtap.io.sources.files import FileSource
from streamtap.io.stream_state import StreamPosition
from streamtap.metrics import serve_metrics
from streamtap.status import status_text, stream_status
from tests.fixtures.prometheus import prometheus  # noqa: F401 - the fixture
from tests.helpers import STREAMTAP, assert_verified, free_port, wait_until, write_config

CHUNK_SECONDS = 1.0
RATE = 16_000  # bytes per second: a 128 kbit/s radio stream


class PausingFeeder:
    """A TCP server on 127.0.0.1 that sends RATE bytes/s to its client until paused.

    `pause()` stops sending and returns the time of the last send; `resume()` goes on.
    """

    def __init__(self):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.sent = bytearray()
        self._sending = threading.Event()
        self._sending.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self.last_send = 0.0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            connection, _ = self._listener.accept()
        except OSError:
            return
        piece = RATE // 20
        with connection:
            while not self._closed.is_set():
                if not self._sending.wait(0.05):
                    continue
                with self._lock:
                    data = os.urandom(piece)
                    try:
                        connection.sendall(data)
                    except OSError:
                        return
                    self.sent += data
                    self.last_send = time.time()
                time.sleep(0.05)

    def pause(self) -> float:
        self._sending.clear()
        with self._lock:
            return self.last_send

    def resume(self) -> float:
        self._sending.set()
        return time.time()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self._thread.join(timeout=5)


class Capture:
    """`streamtap run` as a subprocess (its own process group), its output read as it comes:
    `lines` holds (arrival time, line) of stdout (status lines) and stderr (logs) alike."""

    def __init__(self, config: Path, *args: str):
        self.process = subprocess.Popen(
            [*STREAMTAP, "run", str(config), "--status-interval", "1", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            text=True,
        )
        self.lines: list[tuple[float, str, str]] = []  # (arrival, "out" | "err", line)
        self._readers = [
            threading.Thread(target=self._read, args=(pipe, name), daemon=True)
            for pipe, name in ((self.process.stdout, "out"), (self.process.stderr, "err"))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, pipe, name: str) -> None:
        for line in pipe:
            self.lines.append((time.time(), name, line.rstrip("\n")))

    def text(self, stream: str | None = None) -> str:
        return "\n".join(line for _, name, line in list(self.lines) if stream in (None, name))

    def interrupt(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)

    def wait(self, timeout: float = 90) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise AssertionError(f"streamtap did not exit within {timeout} s:\n{self.text()}")
        for reader in self._readers:
            reader.join(timeout=10)
        return code


def _log_time(line: str) -> float:
    """The time of a log line (`2026-01-01 12:00:00,123 WARNING ...`, local time)."""
    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


def test_prometheus_scrapes_a_capture_and_sees_a_stall_flagged_and_cleared(
    prometheus, tmp_path  # noqa: F811 - the fixture imported above
):
    feeders = {"paced": PausingFeeder(), "plain": PausingFeeder()}
    metrics_port = free_port()
    server = prometheus(metrics_port)
    config = write_config(
        tmp_path / "pipeline.yaml",
        {
            "sources": [
                # With an expected rate (flagged low, then stalled) and without (stalled only).
                {"id": "paced", "type": "tcp", "address": f"127.0.0.1:{feeders['paced'].port}",
                 "expected_rate": "128kbit/s"},
                {"id": "plain", "type": "tcp", "address": f"127.0.0.1:{feeders['plain'].port}"},
            ],
            "chunk": {"max_seconds": CHUNK_SECONDS},
            "window_seconds": 2,
            "sinks": [{"type": "parquet", "path": str(tmp_path / "capture")}],
        },
    )
    capture = Capture(config, "--metrics-port", str(metrics_port))
    try:
        wait_until(
            lambda: server.query('streamtap_stream_bytes_total{stream="plain"} > 0'),
            90, f"Prometheus to scrape bytes of the capture\n{capture.text()}\n{server.log()}",
        )
        time.sleep(3)
        paused = {name: feeder.pause() for name, feeder in feeders.items()}
        time.sleep(4 * CHUNK_SECONDS + 1)
        resumed = {name: feeder.resume() for name, feeder in feeders.items()}
        time.sleep(4 * CHUNK_SECONDS + 2)
        window = time.time() - min(paused.values()) + 10
        byte_samples = server.samples("streamtap_stream_bytes_total", window + 5)
        alert_samples = server.samples("streamtap_stream_rate_alert", window)
        stalled_samples = server.samples('streamtap_stream_rate_state{state="stalled"}', window)
        shortfall = server.samples("streamtap_stream_shortfall_bytes", window)
    finally:
        capture.interrupt()
        code = capture.wait()
        for feeder in feeders.values():
            feeder.close()
    output = capture.text()
    assert code == 0, output
    assert_verified(str(tmp_path / "capture"), streams=2)

    for name in feeders:
        # The per-stream byte counter, as Prometheus stored it: rising while the feeder sends,
        # flat while it pauses.
        values = byte_samples[name]
        assert [v for _, v in values] == sorted(v for _, v in values), values
        sending = [v for t, v in values if t < paused[name]]
        assert sending[-1] > sending[0], values
        during_pause = [v for t, v in values if paused[name] + 0.5 < t < resumed[name]]
        assert len(set(during_pause)) == 1, values
        after = [v for t, v in values if t > resumed[name] + 1]
        assert after[-1] > during_pause[-1], values

        # Flagged within two chunk intervals of the pause, as scraped (once a second) ...
        flagged = [t for t, v in alert_samples[name] if v == 1 and t > paused[name]]
        assert flagged, (name, alert_samples[name])
        assert flagged[0] - paused[name] <= 2 * CHUNK_SECONDS + 1.2, (name, paused, flagged)
        assert any(v == 1 for t, v in stalled_samples[name] if t < resumed[name])
        assert max(v for _, v in shortfall[name]) >= RATE * 1.5  # bytes short while paused
        # ... and cleared after it resumed.
        cleared = [t for t, v in alert_samples[name] if v == 0 and t > resumed[name]]
        assert cleared and all(v == 0 for t, v in alert_samples[name] if t > cleared[0])

        # The WARNING log line of the flag, with the time and size of the shortfall, is within
        # two chunk intervals of the last byte (the watch's own clock) ...
        warnings = [
            line for line in output.splitlines()
            if re.search(rf"WARNING streamtap.ratewatch: {name}: rate watch: ", line)
        ]
        assert warnings, output
        assert _log_time(warnings[0]) - paused[name] <= 2 * CHUNK_SECONDS + 0.25, warnings
        assert re.search(r"(STALLED|LOW RATE) for \d+\.\d s", warnings[0]), warnings
        assert any("STALLED" in line for line in warnings), warnings
        if name == "paced":
            assert "kB short" in warnings[0] and "expected_rate 16000 B/s" in warnings[0]
        # ... then the INFO line of the recovery.
        assert re.search(
            rf"INFO streamtap.ratewatch: {name}: rate watch: recovered; it was .* short", output
        ), output
        # The status lines show the flag while it lasts.
        assert re.search(rf"\] {name} +\S+ \S+  STALLED for \d+\.\d s", output), output


def test_fnapi_runner_prints_status_lines_and_drains_on_sigint(tmp_path):
    feeder = PausingFeeder()
    config = write_config(
        tmp_path / "pipeline.yaml",
        {
            "sources": [
                {"id": "live1", "type": "tcp", "address": f"127.0.0.1:{feeder.port}"},
                {"id": "sensor1", "type": "synthetic", "rate": 1000},
            ],
            "chunk": {"max_seconds": 0.5},
            "window_seconds": 2,
            "sinks": [{"type": "parquet", "path": str(tmp_path / "capture")}],
        },
    )
    capture = Capture(config, "--runner=FnApiRunner", "--duration", "300")
    try:
        wait_until(
            lambda: len(re.findall(r"\] live1 +\d", capture.text("out"))) >= 3,
            60, f"three status lines of live1 while the FnApiRunner runs\n{capture.text()}",
        )
        capture.interrupt()
        code = capture.wait(timeout=60)
    finally:
        feeder.close()
    output = capture.text()
    assert code == 0, output
    assert "SIGINT: finishing streams" in output
    assert re.search(r"^\[00:00:\d\d\] live1 +[\d.]+ kB/s  chunks \d+", output, re.MULTILINE), output
    assert re.search(r"^\s+live1\s+\d+ bytes\s+chunks \d+", output, re.MULTILINE), output  # the summary
    assert_verified(str(tmp_path / "capture"), streams=2)


def test_json_status_lines_parse_and_carry_the_numbers_of_the_text_lines(tmp_path):
    config = write_config(
        tmp_path / "pipeline.yaml",
        {
            "sources": [{"id": "sensor1", "type": "synthetic", "rate": 1000,
                         "expected_rate": "4kB/s"}],
            "chunk": {"max_seconds": 0.5},
            "sinks": [{"type": "parquet", "path": str(tmp_path / "capture")}],
        },
    )
    capture = Capture(config, "--runner=FnApiRunner", "--duration", "4", "--status-format", "json")
    assert capture.wait(timeout=120) == 0, capture.text()
    objects = [json.loads(line) for line in capture.text("out").splitlines()]  # stdout: only JSON
    streams = [entry for entry in objects if "stream" in entry]
    assert len(streams) >= 3, objects
    for entry in streams:
        assert entry["stream"] == "sensor1" and entry["rate_state"] == "ok"
        assert entry["expected_rate"] == 4000.0 and entry["shortfall"] is None
        assert {"time", "elapsed", "rate", "bytes", "chunks", "reconnects", "discontinuities",
                "errors", "state"} <= set(entry)
    assert [e["bytes"] for e in streams] == sorted(e["bytes"] for e in streams)
    assert 3000 <= streams[-1]["rate"] <= 5000  # 1000 float32 samples a second
    # Every number of a JSON line is in the text line made from the same status.
    for entry in streams:
        text = status_text(entry)
        assert _text_numbers(text) == {
            key: entry[key] for key in ("chunks", "reconnects", "discontinuities", "errors")
        }
        assert text.startswith("sensor1") and f"{entry['rate'] / 1000:.1f} kB/s" in text
        assert text.endswith(entry["state"])
    assert "streamtap: summary" in capture.text("err")


def _text_numbers(line: str) -> dict[str, int]:
    return {name: int(value) for name, value in re.findall(
        r"(chunks|reconnects|discontinuities|errors) (\d+)", line)}


def test_a_flagged_stream_shows_the_same_shortfall_in_text_and_json(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    source = FileSource(id="quiet1", path=str(fifo), expected_rate=1000)
    reader = hub().attach(source, ChunkSettings(max_seconds=0.2), StreamPosition(), None)
    writer = os.open(fifo, os.O_WRONLY)
    try:
        os.write(writer, b"x" * 100)
        wait_until(lambda: reader.stats.rate_state == "stalled", 5, "the FIFO stream to stall")
        entry = stream_status("quiet1", reader.stats, 0.0, 1.0)
    finally:
        os.close(writer)
        wait_until(lambda: reader.ended(), 5, "the FIFO stream to end")
        hub().release(reader)
    shortfall = entry["shortfall"]
    assert entry["rate_state"] == shortfall["state"] == "stalled"
    assert 0 < shortfall["seconds"] and shortfall["missing_bytes"] > 0
    json.loads(json.dumps(entry))
    text = status_text(entry)
    assert f"STALLED for {shortfall['seconds']:.1f} s" in text
    assert f"{shortfall['missing_bytes'] / 1000:.1f} kB short" in text or (
        f"{shortfall['missing_bytes']:.1f} B short" in text
    )
    assert reader.stats.rate_state == "ok" and reader.stats.rate_flags == 1  # ended: cleared


def test_sink_metrics_name_each_sink_and_stream_by_label():
    activity = sink_activity("kafka metrics-test", "run-metrics-test",
                             ("records_written", "records_retried"))
    now = time.time()
    activity.wrote("radio1", 1000, now - 0.3)
    activity.wrote("radio1", 500, now - 2.0)
    activity.wrote("radio2", 64, now - 700)
    activity.add("records_retried", 3)
    activity.add("errors")
    server = serve_metrics(0, ["radio1", "radio2"])
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    finally:
        server.close()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    sink = ("sink", "kafka metrics-test")
    assert samples[("streamtap_sink_chunks_total", (sink, ("stream", "radio1")))] == 2
    assert samples[("streamtap_sink_bytes_total", (sink, ("stream", "radio1")))] == 1500
    assert samples[("streamtap_sink_bytes_total", (sink, ("stream", "radio2")))] == 64
    assert 1.9 < samples[("streamtap_sink_last_lag_seconds", (sink, ("stream", "radio1")))] < 3
    assert samples[("streamtap_sink_retries_total", (sink,))] == 3
    assert samples[("streamtap_sink_errors_total", (sink,))] == 1
    assert samples[("streamtap_sink_lag_seconds_bucket", (("le", "0.5"), sink))] == 1
    assert samples[("streamtap_sink_lag_seconds_bucket", (("le", "2.5"), sink))] == 2
    assert samples[("streamtap_sink_lag_seconds_bucket", (("le", "+Inf"), sink))] == 3
    assert samples[("streamtap_sink_lag_seconds_count", (sink,))] == 3
    # No stream id or sink name is part of a metric name.
    assert not [name for name, _ in samples if "radio" in name or "metrics-test" in name]
