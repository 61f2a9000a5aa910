"""Start-up and memory per idle stream (issue #19), both on `streamtap run` (Prism, Parquet).

Start-up: a capture of `startup_streams` live Icecast streams (window `window_seconds`), with
JSON status lines every second. From the `streamtap run` process start: the first status line in
which a stream has bytes, the first in which every stream has, the first with a cut chunk, and
the first Parquet file's mtime (a file can only follow its window's end: the window is short).

Idle memory: captures of N idle HTTP streams (benchmarks/peers/idle_http.py: a response head,
then nothing; the sources' read_timeout is an hour) for N in `idle_streams` (1 stands in for 0: a
capture needs a source); peak RSS of the tree (Python + Prism) over `idle_seconds`, and
(RSS(largest N) - RSS(next)) / (difference in N): the memory one idle stream costs.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import services
from benchmarks.live import _env, run_live_capture
from benchmarks.measure import load_average
from benchmarks.peers.asyncio_floor import raise_open_files
from benchmarks.scenarios.live_icecast import _config

NAME = "startup"


def _epoch(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso).timestamp()


def start_up(cfg: dict, workdir: Path) -> dict:
    n = cfg["startup_streams"]
    with services.icecast(cfg["mounts"], n, cfg["bitrate"]) as station:
        out = workdir / "startup-capture"
        config = _config(station, n, cfg["window_seconds"], cfg["chunk_max_seconds"], out)
        result = run_live_capture(config, workdir / "startup-run", cfg["startup_seconds"],
                                  warmup=cfg["startup_seconds"] / 2,
                                  extra_args=("--status-interval", "1", "--status-format", "json"))
    started = result.stopped_epoch - result.seconds
    first_bytes = first_chunk = None
    seen: set[str] = set()
    all_reading = None
    for line in (workdir / "startup-run" / "output.log").read_text(errors="replace").splitlines():
        if not line.startswith("{") or '"stream"' not in line:
            continue
        entry = json.loads(line)
        t = _epoch(entry["time"]) - started
        if entry["bytes"] > 0:
            first_bytes = t if first_bytes is None else first_bytes
            seen.add(entry["stream"])
            if all_reading is None and len(seen) == n:
                all_reading = t
        if entry["chunks"] > 0 and first_chunk is None:
            first_chunk = t
    files = [f for f in out.glob("stream=*/date=*/*.parquet") if not f.name.startswith(".")]
    mtimes = sorted(f.stat().st_mtime for f in files)
    r = lambda v: None if v is None else round(v, 2)  # noqa: E731
    return {
        "streams": n, "window_seconds": cfg["window_seconds"], "exit_code": result.exit_code,
        "first_status_with_bytes_s": r(first_bytes), "all_streams_reading_s": r(all_reading),
        "first_chunk_cut_s": r(first_chunk),
        "first_file_s": r(mtimes[0] - started) if mtimes else None,
        "files_by_end": len(files), "streams_in_summary": len(result.streams),
        "peak_rss_mib": round(result.peak_rss_bytes / 2**20, 1),
        "load_average_1m": result.load_average_1m,
    }


def idle_rss(cfg: dict, workdir: Path) -> list[dict]:
    from streamtap.services.process import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.peers.idle_http", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=_env(),
                              cwd=str(workdir))
    rows = []
    try:
        time.sleep(2)
        for n in cfg["idle_streams"]:
            config = {
                "sources": [{"id": f"idle-{i:04d}", "type": "http", "url": f"http://127.0.0.1:{port}/s{i}",
                             "read_timeout": 3600} for i in range(n)],
                "chunk": {"max_bytes": 65536, "max_seconds": cfg["chunk_max_seconds"]},
                "window_seconds": 10.0,
                "sinks": [{"type": "parquet", "path": str(workdir / f"idle-out-{n}"), "compression": "none"}],
            }
            result = run_live_capture(config, workdir / f"idle-run-{n}", cfg["idle_seconds"],
                                      warmup=cfg["idle_seconds"] / 2)
            rows.append({"streams": n, "peak_rss_mib": round(result.peak_rss_bytes / 2**20, 1),
                         "peak_rss_mib_by_process": result.peak_rss_by_process,
                         "cpu_cores_steady": round(result.steady_cpu_cores or 0, 4),
                         "streams_in_summary": len(result.streams), "reconnects": result.reconnects,
                         "exit_code": result.exit_code, "load_average_1m": result.load_average_1m})
    finally:
        server.terminate()
        server.wait(timeout=30)
    return rows


def run(cfg: dict, repeats: int, workdir: Path, log) -> dict:
    raise_open_files()
    log(f"{NAME}: start-up of {cfg['startup_streams']} streams (load {load_average()})")
    first = start_up(cfg, workdir)
    log(f"{NAME}: {first}")
    log(f"{NAME}: idle streams {cfg['idle_streams']} (load {load_average()})")
    idle = idle_rss(cfg, workdir)
    for row in idle:
        log(f"{NAME}: idle {row}")
    per_stream = None
    if len(idle) >= 2 and idle[-1]["streams"] > idle[-2]["streams"]:
        per_stream = round((idle[-1]["peak_rss_mib"] - idle[-2]["peak_rss_mib"]) * 1024
                           / (idle[-1]["streams"] - idle[-2]["streams"]), 1)
    return {"startup": first, "idle": idle, "idle_rss_kib_per_stream": per_stream}
