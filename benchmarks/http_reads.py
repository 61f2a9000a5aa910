"""Per-read cost of the `http` source: N radio-like streams from a loopback server into chunks.

    python -m benchmarks.http_reads --streams 200 --seconds 30 --tree /tmp/snap-before \\
        --tree /tmp/snap-after

A server process sends each stream as Icecast does (128 kbit/s in ~12 writes a second, ICY
metadata every 16,000 bytes); for each `--tree` (a copy of streamtap: its directory goes on
PYTHONPATH) a client process runs the `http` connector's sessions into a ByteSink that cuts
64 KiB chunks with the real ChunkCutter, and reports its own CPU from `--warmup` seconds in.
The trees run one after the other, against the same server, `--rounds` times (alternating), so
the CPU-µs per read and per kB of each compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

_BYTES_PER_SECOND = 16_000  # 128 kbit/s
_WRITES_PER_SECOND = 12
_METAINT = 16_000


async def _serve(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"ICY 200 OK\r\nContent-Type: audio/mpeg\r\nicy-metaint: %d\r\n\r\n" % _METAINT)
        piece = _BYTES_PER_SECOND // _WRITES_PER_SECOND
        audio_left = _METAINT
        try:
            while True:
                out = bytearray()
                left = piece
                while left:
                    take = min(left, audio_left)
                    out += b"\x55" * take
                    left -= take
                    audio_left -= take
                    if audio_left == 0:
                        out += b"\x00"  # an empty metadata block
                        audio_left = _METAINT
                writer.write(out)
                await writer.drain()
                await asyncio.sleep(1 / _WRITES_PER_SECOND)
        except (ConnectionError, OSError):
            pass

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


class _ChunkingSink:
    """A ByteSink that cuts chunks as the reader does (ChunkCutter, clock read per write)."""

    def __init__(self, stats: dict):
        from streamtap.io.cutting import ChunkCutter

        self._stats = stats
        self._cutter = ChunkCutter(65536, 1.0, self._emit)

    def _emit(self, payload, offset, first_byte_time, tags) -> None:
        self._stats["chunks"] += 1

    def write(self, data: bytes, whole: bool = False) -> None:
        self._stats["reads"] += 1
        self._stats["bytes"] += len(data)
        self._cutter.write(data, time.time(), whole)

    def set_tags(self, tags) -> None:
        self._cutter.set_tags(tags)

    def room(self) -> int:
        return self._cutter.room()

    async def wait_for_room(self) -> None:
        return None


async def _client(port: int, streams: int, seconds: float, warmup: float) -> dict:
    import streamtap
    from streamtap.io.sources.http import HttpSource

    stats = {"reads": 0, "bytes": 0, "chunks": 0}

    async def one(index: int) -> None:
        source = HttpSource(id=f"r{index}", url=f"http://127.0.0.1:{port}/s{index}")
        connector = source.connector()
        while True:
            try:
                await connector.run_session(_ChunkingSink(stats), 0)
            except Exception:  # noqa: BLE001 - count and reopen, as the reader would
                stats["errors"] = stats.get("errors", 0) + 1
                await asyncio.sleep(0.5)

    tasks = [asyncio.create_task(one(i)) for i in range(streams)]
    await asyncio.sleep(warmup)
    before = dict(stats)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    await asyncio.sleep(seconds)
    after = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = time.monotonic() - started
    for task in tasks:
        task.cancel()
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    reads = stats["reads"] - before["reads"]
    received = stats["bytes"] - before["bytes"]
    return {
        "streamtap": str(Path(streamtap.__file__).parent),
        "seconds": round(elapsed, 1),
        "cores": round(cpu / elapsed, 4),
        "reads_per_second": round(reads / elapsed, 1),
        "kb_per_second": round(received / elapsed / 1000, 1),
        "cpu_us_per_read": round(cpu / reads * 1e6, 1) if reads else None,
        "cpu_us_per_kb": round(cpu / received * 1e9, 2) if received else None,
        "errors": stats.get("errors", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["drive", "serve", "client"], default="drive")
    parser.add_argument("--port", type=int, default=18765)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tree", action="append", default=[])
    args = parser.parse_args()
    if args.mode == "serve":
        asyncio.run(_serve(args.port))
        return
    if args.mode == "client":
        print(json.dumps(asyncio.run(_client(args.port, args.streams, args.seconds, args.warmup))))
        return
    here = Path(__file__).resolve().parents[1]
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.http_reads", "--mode", "serve",
                               "--port", str(args.port)], cwd=here)
    try:
        time.sleep(1.0)
        for round_ in range(args.rounds):
            for tree in args.tree:
                env = {**os.environ, "PYTHONPATH": tree}
                out = subprocess.run(
                    [sys.executable, "-m", "benchmarks.http_reads", "--mode", "client",
                     "--port", str(args.port), "--streams", str(args.streams),
                     "--seconds", str(args.seconds), "--warmup", str(args.warmup)],
                    cwd=tree, env=env, check=True, capture_output=True, text=True,
                ).stdout.strip().splitlines()[-1]
                result = json.loads(out)
                result.update(round=round_, load_1m=os.getloadavg()[0])
                print(json.dumps(result), flush=True)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
