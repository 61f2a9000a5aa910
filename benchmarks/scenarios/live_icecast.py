"""Scenario 2: N concurrent 128 kbit/s HTTP streams from a real Icecast server on Prism.

Each stream is its own Icecast listener and stream id (N/mounts listeners per mount). The capture
runs as `streamtap run` (Prism, unbounded) and is stopped by SIGINT. Checked:
- no unmarked gap (`verify` over the Parquet output; a reconnect is a marked discontinuity);
- CPU of the whole capture tree (Python + Prism) in steady state < 1 core, peak RSS < 2 GiB;
- p99 arrival-to-file latency < window + 2 s: file mtime (the rename happens right after the
  last write) minus the chunk's event_time (arrival of its first byte), in steady state: over every
  chunk that arrived at least window + 2 s before the SIGINT (the last, cut-short window is
  written while draining; p99 over all chunks is reported too).
With `floor` (default on), the same N streams are first received for the same time by a bare
asyncio client (benchmarks/peers/asyncio_floor.py, its own process, measured the same way), and
`cpu_ratio_to_floor` = streamtap's cores / the floor's (issue #19's target: <= 1.5).
`beam_args` (a list) is passed to `streamtap run`, e.g. ["--sdk_worker_parallelism=2"].
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks import services
from benchmarks.live import run_live_capture
from benchmarks.measure import load_average

NAME = "live_icecast"


def _config(service, streams: int, window: float, max_seconds: float, out: Path,
            read: dict | None = None, source: dict | None = None, align: str = "none",
            sink: dict | None = None) -> dict:
    mounts = service.mounts
    return {
        "sources": [
            {"id": f"radio-{i:04d}", "type": "http", "url": service.mount_url(mounts[i % len(mounts)]),
             **(source or {})}
            for i in range(streams)
        ],
        "chunk": {"max_bytes": 65536, "max_seconds": max_seconds, "align": align},
        "window_seconds": window,
        "read": read or {},
        "sinks": [{"type": "parquet", "path": str(out), "compression": "none", **(sink or {})}],
    }


def latency_and_verify(out: Path, stopped_epoch: float | None = None,
                       limit: float | None = None,
                       profiled: tuple[float, float] | None = None,
                       window: float | None = None) -> dict:
    """Verifies the capture and computes arrival-to-file latency percentiles (seconds).

    Also: the share of chunks whose file was complete before the SIGINT, and the median latency
    per 10 s of event time (a latency that grows over the run means the capture falls behind).
    window: the window length; then also how long after its window's end each file was complete
    (what the latency is made of beyond the window itself).
    profiled: wall-clock (start, end) of a py-spy profile; the steady figures leave out chunks
    whose files were written then (sampling slows the capture down).
    """
    from streamtap.captures import read_capture, verify

    latencies = []
    event_times = []
    after_window_end = []
    files = 0
    windows = set()
    # Both layouts: stream=<id>/date=<day>/ files, and date=<day>/ files of many streams.
    many_streams = any(out.glob("date=*/*.parquet"))
    for file in sorted([*out.glob("stream=*/date=*/*.parquet"), *out.glob("date=*/*.parquet")]):
        if file.name.startswith("."):
            continue
        files += 1
        windows.add((file.parent, file.name.split("-", 1)[0]))
        mtime = os.stat(file).st_mtime
        times = pq.read_table(file, columns=["event_time"]).column("event_time")
        micros = times.cast(pa.int64()).to_numpy()
        latencies.append(mtime - micros / 1e6)
        event_times.append(micros / 1e6)
        if window and len(micros):
            after_window_end.append(mtime - (micros.min() / 1e6 // window + 1) * window)
    reports = verify(read_capture(str(out)))
    unmarked = {sid: r.problems[:3] for sid, r in reports.items() if not r.ok}
    all_lat = np.concatenate(latencies) if latencies else np.array([])
    all_ev = np.concatenate(event_times) if event_times else np.array([])
    trend = []
    if len(all_ev):
        start = all_ev.min()
        buckets = ((all_ev - start) // 10).astype(int)
        for b in range(int(buckets.max()) + 1):
            sel = all_lat[buckets == b]
            if len(sel):
                trend.append([b * 10, round(float(np.median(sel)), 2),
                              round(float(np.percentile(sel, 99)), 2), int(len(sel))])
    before_stop = None
    if stopped_epoch is not None and len(all_lat):
        before_stop = round(float(np.mean((all_ev + all_lat) <= stopped_epoch)), 3)
    # Steady state: chunks that arrived at least `limit` seconds before the SIGINT, i.e. that a
    # capture meeting the target has written before the stop. Late ones still count (their file
    # came late); the last window, cut short and written while draining, does not.
    steady = all_lat
    if stopped_epoch is not None and limit is not None and len(all_lat):
        keep = all_ev <= stopped_epoch - limit
        if profiled is not None:
            written = all_ev + all_lat
            keep &= (written < profiled[0]) | (written > profiled[1])
        steady = all_lat[keep]
    pct = (lambda q: round(float(np.percentile(all_lat, q)), 3)) if len(all_lat) else (lambda q: None)
    return {
        "files": files,
        # More than one file for a stream's window: chunks that came after the window had been
        # written (late for the watermark) were written as extra files.
        # (A window of many streams has several files by design: not counted then.)
        "extra_files_for_late_chunks": None if many_streams else files - len(windows),
        "chunks": int(len(all_lat)),
        "streams_with_data": len(reports),
        "streams_with_problems": len(unmarked),
        "problem_examples": dict(list(unmarked.items())[:3]),
        "latency_p50_s": pct(50),
        "latency_p99_s": pct(99),
        "latency_max_s": round(float(all_lat.max()), 3) if len(all_lat) else None,
        "latency_steady_chunks": int(len(steady)),
        "latency_steady_p50_s": round(float(np.percentile(steady, 50)), 3) if len(steady) else None,
        "latency_steady_p99_s": round(float(np.percentile(steady, 99)), 3) if len(steady) else None,
        "latency_median_by_10s": trend,  # [seconds into the capture, median, p99, chunks]
        "share_written_before_sigint": before_stop,
        # Seconds from a window's end until its file was complete, per file: p50, p90, p99.
        "file_after_window_end_s": [
            round(float(np.percentile(after_window_end, q)), 3) for q in (50, 90, 99)
        ] if after_window_end else None,
    }


def run_one(cfg: dict, streams: int, seconds: float, profile: bool, workdir: Path,
            label: str = "") -> dict:
    from benchmarks.peers.asyncio_floor import measure_floor, raise_open_files

    raise_open_files()  # the capture (a child) inherits it: a socket per stream
    beam_args = tuple(cfg.get("beam_args") or ())
    floor = None
    with services.icecast(cfg["mounts"], streams, cfg["bitrate"]) as station:
        if cfg.get("floor", True):
            floor = measure_floor(station, streams, seconds, workdir / f"floor-{streams}{label}",
                                  warmup=min(30.0, seconds / 3))
        out = workdir / f"capture-{streams}{label}"
        config = _config(station, streams, cfg["window_seconds"], cfg["chunk_max_seconds"], out,
                         cfg.get("read"), cfg.get("source"), cfg.get("chunk_align", "none"),
                         cfg.get("sink"))
        result = run_live_capture(
            config, workdir / f"run-{streams}{label}", seconds,
            profile_seconds=cfg["profile_seconds"] if profile else 0,
            profile_after=min(30.0, seconds / 3),
            warmup=min(30.0, seconds / 3),
            drain_timeout=300.0, extra_args=beam_args,
        )
    limit_latency = cfg["window_seconds"] + cfg["latency_margin_seconds"]
    checked = (latency_and_verify(out, result.stopped_epoch, limit_latency, result.profiled_epochs,
                                  cfg["window_seconds"])
               if out.exists() else {})
    expected_streams = streams
    row = {
        "streams": streams,
        "beam_args": list(beam_args),
        "chunk_align": cfg.get("chunk_align", "none"),
        "sink_options": cfg.get("sink") or {},
        "seconds": round(result.seconds, 1),
        "drain_seconds": round(result.wall_seconds - result.seconds, 1),
        "exit_code": result.exit_code,
        "bytes": result.total_bytes,
        "bytes_per_second": round(result.total_bytes / result.seconds) if result.seconds else None,
        "streams_reported": len(result.streams),
        "reconnects": result.reconnects,
        "error_examples": result.error_examples(),
        "discontinuities": sum(s["discontinuities"] for s in result.streams.values()),
        "errors": sum(s["errors"] for s in result.streams.values()),
        "cpu_cores_steady": round(result.steady_cpu_cores, 3) if result.steady_cpu_cores else None,
        "cpu_cores_steady_by_process": result.steady_cpu_by_process,
        "cpu_seconds_total": round(result.cpu_seconds, 1),
        "peak_rss_mib": round(result.peak_rss_bytes / 2**20, 1),
        "peak_rss_mib_by_process": result.peak_rss_by_process,
        "processes_by_name": result.processes_by_name,
        "load_average_1m": result.load_average_1m,
        **checked,
        "latency_limit_s": limit_latency,
    }
    if floor is not None:
        row["floor"] = floor
        if floor["cpu_cores_steady"] and row["cpu_cores_steady"]:
            row["cpu_ratio_to_floor"] = round(row["cpu_cores_steady"] / floor["cpu_cores_steady"], 2)
            row["target_ratio_to_floor"] = cfg.get("target_ratio_to_floor", 1.5)
            row["pass_floor"] = row["cpu_ratio_to_floor"] <= row["target_ratio_to_floor"]
    ok_gaps = (result.exit_code == 0 and checked.get("streams_with_problems", 1) == 0
               and checked.get("streams_with_data", 0) == expected_streams)
    row["pass_gaps"] = ok_gaps
    row["pass_cpu"] = bool(row["cpu_cores_steady"] is not None and row["cpu_cores_steady"] < cfg["target_cpu_cores"])
    row["pass_rss"] = result.peak_rss_bytes < cfg["target_rss_bytes"]
    row["pass_latency"] = bool(row.get("latency_steady_p99_s") is not None
                               and row["latency_steady_p99_s"] < limit_latency)
    row["pass"] = all(row[k] for k in ("pass_gaps", "pass_cpu", "pass_rss", "pass_latency"))
    if result.profile is not None:
        from benchmarks.profiling import summarize

        row["profile"] = summarize(result.profile, top=20)
        row["profile_file"] = str(result.profile)
    if result.exit_code != 0:
        row["output_tail"] = result.output_tail
    shutil.rmtree(out, ignore_errors=True)
    return row


def run(cfg: dict, repeats: int, workdir: Path, log) -> dict:
    runs = []
    target_n = cfg["streams"]
    for attempt in range(max(1, repeats)):
        log(f"{NAME}: {target_n} streams for {cfg['seconds']} s (load {load_average()})")
        row = run_one(cfg, target_n, cfg["seconds"], profile=attempt == 0 and cfg["profile_seconds"] > 0,
                      workdir=workdir)
        log(f"{NAME}: {_brief(row)}")
        runs.append(row)
    largest = target_n if all(r["pass"] for r in runs) else None
    steps = []
    if largest is None:
        for n in cfg.get("fallback_streams", []):
            log(f"{NAME}: trying {n} streams for {cfg['step_seconds']} s (load {load_average()})")
            row = run_one(cfg, n, cfg["step_seconds"], profile=False, workdir=workdir)
            log(f"{NAME}: {_brief(row)}")
            steps.append(row)
            if row["pass"]:
                largest = n
                break
    return {"runs": runs, "fallback_runs": steps, "largest_passing_streams": largest}


def _brief(row: dict) -> str:
    keys = ("streams", "beam_args", "cpu_ratio_to_floor", "bytes_per_second", "reconnects",
            "cpu_cores_steady", "peak_rss_mib", "latency_p50_s", "latency_steady_p99_s", "latency_p99_s", "drain_seconds",
            "streams_with_problems", "pass", "load_average_1m")
    floor = row.get("floor") or {}
    return ", ".join(f"{k}={row.get(k)}" for k in keys) + (
        f", floor cores={floor.get('cpu_cores_steady')} rss={floor.get('peak_rss_mib')}" if floor else "")
