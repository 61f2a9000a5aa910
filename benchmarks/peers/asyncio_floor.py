"""Scenario 2's floor: the least a Python process can spend receiving N Icecast streams.

    python -m benchmarks.peers.asyncio_floor --port 8000 --mounts radio1,radio2 --streams 1000

One asyncio task per stream: connect, send the same GET streamtap sends (`Icy-MetaData: 1`),
skip the response head, then `await reader.read(65536)` as packets come and discard the bytes.
No chunking, no timestamps, no files: what is left is the event loop, the sockets and the
kernel. It runs until SIGINT or SIGTERM, then prints one JSON line (bytes, streams that got data,
reconnects, its own CPU seconds and peak RSS). `measure_floor()` runs it as its own process with
the same harness as `streamtap run` (benchmarks.live.run_monitored), so its CPU is measured alone
and the same way: the steady rate from `warmup` seconds in until the SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
import time
from pathlib import Path

_CONNECTS_AT_ONCE = 32  # Icecast listens with a backlog of 5: do not open thousands at once


def raise_open_files() -> int:
    """Raises this process's soft open-file limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _listen(index: int, host: str, port: int, path: str, stats: dict,
                  gate: asyncio.Semaphore) -> None:
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: floor\r\n"
               "Icy-MetaData: 1\r\nAccept: */*\r\n\r\n").encode()
    while True:
        try:
            async with gate:
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(request)
                await reader.readuntil(b"\r\n\r\n")  # the response head, skipped
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            stats["failed_connects"] += 1
            await asyncio.sleep(0.5)
            continue
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                stats["bytes"][index] += len(data)
        except OSError:
            pass
        stats["reconnects"] += 1
        writer.close()


async def _main(args: argparse.Namespace) -> dict:
    mounts = args.mounts.split(",")
    stats = {"bytes": [0] * args.streams, "reconnects": 0, "failed_connects": 0}
    gate = asyncio.Semaphore(_CONNECTS_AT_ONCE)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    tasks = [asyncio.create_task(_listen(i, args.host, args.port, "/" + mounts[i % len(mounts)],
                                         stats, gate))
             for i in range(args.streams)]
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "floor": True,
        "streams": args.streams,
        "streams_with_data": sum(1 for b in stats["bytes"] if b),
        "bytes": sum(stats["bytes"]),
        "reconnects": stats["reconnects"],
        "failed_connects": stats["failed_connects"],
        "wall_seconds": round(time.monotonic() - started, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "max_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mounts", required=True, help="comma-separated mount names")
    parser.add_argument("--streams", type=int, required=True)
    args = parser.parse_args(argv)
    raise_open_files()
    print(json.dumps(asyncio.run(_main(args))), flush=True)
    return 0


def measure_floor(station, streams: int, seconds: float, workdir: Path, warmup: float) -> dict:
    """Runs the floor against `station` (an IcecastService) for `seconds`; its measured figures."""
    from benchmarks.live import run_monitored

    command = [sys.executable, "-m", "benchmarks.peers.asyncio_floor", "--port", str(station.port),
               "--mounts", ",".join(station.mounts), "--streams", str(streams)]
    result = run_monitored(command, workdir, seconds, drain_timeout=60.0, warmup=warmup)
    own = {}
    for line in (workdir / "output.log").read_text(errors="replace").splitlines():
        if line.startswith("{") and '"floor"' in line:
            own = json.loads(line)
    return {
        "cpu_cores_steady": round(result.steady_cpu_cores, 3) if result.steady_cpu_cores else None,
        "peak_rss_mib": round(result.peak_rss_bytes / 2**20, 1),  # sampled every 0.5 s, like streamtap's
        # getrusage's high-water mark: on Linux it keeps the forking parent's (the benchmark's)
        # RSS across exec, so it is no measure of the floor; kept only for reference.
        "ru_maxrss_mib": own.get("max_rss_mib"),
        "seconds": round(result.seconds, 1),
        "bytes_per_second": round(own["bytes"] / result.seconds) if own.get("bytes") else None,
        "streams_with_data": own.get("streams_with_data"),
        "reconnects": own.get("reconnects"),
        "failed_connects": own.get("failed_connects"),
        "exit_code": result.exit_code,
        "load_average_1m": result.load_average_1m,
    }


if __name__ == "__main__":
    sys.exit(main())
