"""Test helpers: run captures in-process or as a `streamtap` subprocess, feed real sockets."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import yaml

from streamtap.captures import read_capture, reassemble, verify
from streamtap.plugins import parse_config
from streamtap.pipelines.run import run_capture

STREAMTAP = [sys.executable, "-m", "streamtap.cli"]


def capture(
    config: dict, runner: str = "FnApiRunner", duration: float | None = 60.0, exit_code: int = 0
) -> str:
    """Runs a capture in this process; returns the status output. Fails the test unless the run
    ends with `exit_code` (1: a stream captured nothing and had errors)."""
    out = io.StringIO()
    code = run_capture(
        parse_config(config), [f"--runner={runner}"], duration=duration, status_interval=0, out=out
    )
    assert code == exit_code, out.getvalue()
    return out.getvalue()


def capture_in_process(config: dict, duration: float = 60.0) -> dict[str, int]:
    """Runs a bounded capture on the FnApiRunner in this process; returns the streamtap counters."""
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter

    from streamtap.pipelines.capture import build_capture

    pipeline = beam.Pipeline(runner="FnApiRunner")
    build_capture(pipeline, parse_config(config), duration=duration, bounded=True)
    result = pipeline.run()
    result.wait_until_finish()
    return {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("streamtap"))["counters"]
    }


def stream_bytes(location: str, stream_id: str) -> bytes:
    """The reassembled bytes of one stream of a capture."""
    output = io.BytesIO()
    reassemble(read_capture(location, stream_id), output)
    return output.getvalue()


def assert_verified(location: str, streams: int | None = None) -> dict:
    reports = verify(read_capture(location))
    problems = {sid: r.problems for sid, r in reports.items() if not r.ok}
    assert not problems, problems
    if streams is not None:
        assert len(reports) == streams, sorted(reports)
    return reports


def chunks_of(location: str, stream_id: str) -> list:
    return sorted(read_capture(location, stream_id), key=lambda chunk: chunk.seq)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class TcpFeeder:
    """A TCP server on 127.0.0.1 that sends `data` to the first client in small paced pieces.

    keep_open: after sending, hold the connection open (a live stream that went quiet) instead
    of closing it.
    """

    def __init__(self, data: bytes, port: int = 0, piece: int = 4096, pause: float = 0.001,
                 keep_open: bool = True):
        self.data = data
        self._piece = piece
        self._pause = pause
        self._keep_open = keep_open
        self._listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.port = self._listener.getsockname()[1]
        self.sent = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            connection, _ = self._listener.accept()
        except OSError:
            return
        with connection:
            for start in range(0, len(self.data), self._piece):
                connection.sendall(self.data[start : start + self._piece])
                time.sleep(self._pause)
            self.sent.set()
            if self._keep_open:
                self._closed.wait()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "TcpFeeder":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def source(self, stream_id: str, **fields) -> dict:
        """The config of a `tcp` source that reads this feeder, e.g. max_bytes=len(data)."""
        return {"id": stream_id, "type": "tcp", "address": f"127.0.0.1:{self.port}", **fields}


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


class CaptureProcess:
    """`streamtap run CONFIG` as a subprocess in its own process group (like a terminal job)."""

    def __init__(self, config_path: Path, *args: str):
        self.process = subprocess.Popen(
            [*STREAMTAP, "run", str(config_path), "--status-interval", "1", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
        )

    def interrupt(self) -> None:
        """Ctrl-C at a terminal: SIGINT to the whole process group."""
        os.killpg(self.process.pid, signal.SIGINT)

    def wait(self, timeout: float = 60) -> tuple[int, str]:
        try:
            output, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            output, _ = self.process.communicate()
            raise AssertionError(f"streamtap did not exit within {timeout} s:\n{output}")
        return self.process.returncode, output


class LiveBroadcast:
    """A live TCP stream: every client gets the broadcast from the moment it connects.

    The broadcast is a sequence of `piece`-byte pieces, each an 8-byte big-endian piece number
    followed by bytes derived from it, so any captured session can be checked on its own
    (`check_session`) wherever a reconnect made it start.
    """

    def __init__(self, rate: int = 200_000, piece: int = 2000):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._rate, self._piece = rate, piece
        self._start = time.monotonic()
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def piece(self, number: int) -> bytes:
        body = bytes((number * 31 + i) & 0xFF for i in range(self._piece - 8))
        return number.to_bytes(8, "big") + body

    def check_session(self, data: bytes) -> None:
        """Asserts `data` is whole consecutive pieces (the last one may be cut short)."""
        first = int.from_bytes(data[:8], "big")
        for index, start in enumerate(range(0, len(data), self._piece)):
            expected = self.piece(first + index)
            got = data[start:start + self._piece]
            assert got == expected[:len(got)], f"piece {first + index} differs"

    def _current_piece(self) -> int:
        return int((time.monotonic() - self._start) * self._rate) // self._piece

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            number = self._current_piece()
            while not self._stop.is_set():
                now = self._current_piece()
                try:
                    while number < now:
                        connection.sendall(self.piece(number))
                        number += 1
                except OSError:
                    return
                time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
