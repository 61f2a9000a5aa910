"""`streamtap demo`: a capture with no external services, from a fresh clone.

It captures three built-in streams for a while to a local Parquet directory, then verifies the
capture: a synthetic temperature sensor (1,000 float32 readings/s), a synthetic 16 kHz PCM tone,
and a TCP "device" that this process serves on 127.0.0.1, so the live-socket path is exercised.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TextIO

from streamtap.captures import read_capture, verify
from streamtap.plugins import parse_config
from streamtap.pipelines.run import run_capture

__all__ = ["run_demo", "DeviceServer"]


class DeviceServer:
    """Serves a deterministic byte stream (bytes i % 251) at `rate` bytes/s to each client."""

    def __init__(self, rate: int = 8000):
        self._rate = rate
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, name="demo-device", daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        block = max(1, self._rate // 20)  # sent every 50 ms
        # 251 is prime, so the pattern does not line up with chunk or block sizes.
        pattern = bytes(i % 251 for i in range(251 + block))
        position = 0
        with connection:
            while not self._stopped.is_set():
                start = position % 251
                try:
                    connection.sendall(pattern[start : start + block])
                except OSError:
                    return
                position += block
                time.sleep(0.05)

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()


def run_demo(output: str, duration: float, beam_args: list[str], out: TextIO) -> int:
    device = DeviceServer()
    try:
        config = parse_config(
            {
                "sources": [
                    {"id": "sensor1", "type": "synthetic", "kind": "sensor", "rate": 1000},
                    {
                        "id": "tone1",
                        "type": "synthetic",
                        "kind": "tone",
                        "rate": 16000,
                        "sample_format": "int16",
                    },
                    {"id": "device1", "type": "tcp", "address": f"127.0.0.1:{device.port}"},
                ],
                "chunk": {"max_bytes": 65536, "max_seconds": 1.0},
                "window_seconds": 5,
                "sinks": [{"type": "parquet", "path": output}],
            },
            "demo config",
        )
        out.write(f"streamtap demo: capturing 3 built-in streams for {duration:g} s to {output}\n")
        code = run_capture(config, beam_args, duration=duration, status_interval=5, out=out)
    finally:
        device.close()
    if code != 0:
        return code
    out.write(f"streamtap demo: verifying {output}\n")
    reports = verify(read_capture(output))
    for report in reports.values():
        out.write(f"  {report.summary()}\n")
        for problem in report.problems:
            out.write(f"    {problem}\n")
    ok = len(reports) == 3 and all(report.ok for report in reports.values())
    out.write("streamtap demo: verify passed\n" if ok else "streamtap demo: verify FAILED\n")
    return 0 if ok else 1
