"""Scenario 9: 1,000 slow streams to Parquet, per-stream layout against many-streams layout.

1,000 synthetic 128 kbit/s streams (PCM tone, 8,000 int16 samples/s = 16,000 B/s each, generated
in real time in the capture process) run as `streamtap run` on Prism for several 10 s windows,
once with `layout: per_stream`, once with `layout: many_streams` (target_file_size below a
window's 160 MB, so each window makes a few files) and once with `layout: many_streams` and
`files: per_window` (the window gathered by a GroupByKey, as in a capture with other sinks too),
in turn, one right after the other.
Reported per layout: files written, files per hour (files per window x 360), the average file
against the target, CPU of the whole capture tree (generation, cutting and writing alike, so the
difference is the write side's), peak RSS; checked: every stream verifies with no gap.
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

from benchmarks.live import run_live_capture
from benchmarks.measure import load_average

NAME = "parquet_layouts"
# Variant: the sink's layout and files.
VARIANTS = {
    "per_stream": {"layout": "per_stream"},
    "many_streams": {"layout": "many_streams"},
    "many_streams_shuffled": {"layout": "many_streams", "files": "per_window"},
}
LAYOUTS = tuple(VARIANTS)


def _config(streams: int, window: float, out: Path, layout: str, target: int) -> dict:
    return {
        "sources": [
            {"id": f"radio-{i:04d}", "type": "synthetic", "kind": "tone", "rate": 8000,
             "sample_format": "int16", "frequency": 220 + i}
            for i in range(streams)
        ],
        "chunk": {"max_bytes": 65536, "max_seconds": 1.0},
        "window_seconds": window,
        "sinks": [{"type": "parquet", "path": str(out), "compression": "none",
                   "target_file_size": target, **VARIANTS[layout]}],
    }


def _files(out: Path) -> list[Path]:
    return [file for file in out.rglob("*.parquet") if not file.name.startswith(".")]


def _one(cfg: dict, layout: str, workdir: Path, log) -> dict:
    from streamtap.captures import read_capture, verify

    out = workdir / f"capture-{layout}"
    shutil.rmtree(out, ignore_errors=True)
    streams, window, seconds = cfg["streams"], cfg["window_seconds"], cfg["seconds"]
    config = _config(streams, window, out, layout, cfg["target_file_size"])
    log(f"{NAME}: {layout}, {streams} streams for {seconds} s (load {load_average()})")
    result = run_live_capture(config, workdir / f"run-{layout}", seconds, warmup=min(20.0, seconds / 3))
    reports = verify(read_capture(str(out)))
    problems = {sid: r.problems[:2] for sid, r in reports.items() if not r.ok}
    files = _files(out)
    sizes = [file.stat().st_size for file in files]
    # Windows the files cover: distinct window starts (file names start with HHMMSS). The first
    # and last windows are cut short by the start and the stop: "full" figures leave them out.
    by_window: dict[tuple[str, str], list[int]] = {}
    for file, size in zip(files, sizes):
        by_window.setdefault((file.parent.name, file.name[:6]), []).append(size)
    windows = len(by_window) or 1
    full = [by_window[key] for key in sorted(by_window)[1:-1]]
    full_sizes = [size for window_sizes in full for size in window_sizes]
    row = {
        "layout": layout,
        "streams": streams,
        "seconds": round(result.seconds, 1),
        "exit_code": result.exit_code,
        "windows": windows,
        "files": len(files),
        "files_per_window": round(len(files) / windows, 1),
        "files_per_hour": round(len(files) / windows * 3600 / window),
        "average_file_bytes": round(statistics.mean(sizes)) if sizes else 0,
        "largest_file_bytes": max(sizes, default=0),
        "full_windows": len(full),
        "files_per_full_window": round(len(full_sizes) / len(full), 2) if full else None,
        "average_full_window_file_bytes": round(statistics.mean(full_sizes)) if full_sizes else 0,
        "target_file_size": cfg["target_file_size"],
        "landed_bytes": sum(r.bytes for r in reports.values()),
        "streams_verified": len(reports) - len(problems),
        "streams_with_problems": len(problems),
        "problem_examples": dict(list(problems.items())[:3]),
        "cpu_seconds_total": round(result.cpu_seconds, 2),
        "cpu_cores_steady": round(result.steady_cpu_cores, 3) if result.steady_cpu_cores else None,
        "cpu_cores_steady_by_process": result.steady_cpu_by_process,
        "peak_rss_mib": round(result.peak_rss_bytes / 2**20, 1),
        "load_average_1m": result.load_average_1m,
    }
    row["cpu_us_per_kb"] = (
        round(result.cpu_seconds / (row["landed_bytes"] / 1000) * 1e6, 2) if row["landed_bytes"] else None
    )
    log(f"{NAME}: {layout}: {row['files']} files ({row['files_per_hour']}/hour), average "
        f"{row['average_file_bytes'] / 2**20:.1f} MiB, {row['cpu_cores_steady']} cores steady, "
        f"{row['cpu_us_per_kb']} CPU-us/kB, gaps in {len(problems)} streams")
    shutil.rmtree(out, ignore_errors=True)
    return row


def run(cfg: dict, repeats: int, workdir: Path, log) -> dict:
    variants = cfg.get("variants", LAYOUTS)
    runs = {layout: [] for layout in variants}
    for _ in range(repeats):
        for layout in variants:
            runs[layout].append(_one(cfg, layout, workdir, log))

    def median(layout: str, key: str) -> float:
        values = [row[key] for row in runs[layout] if row[key] is not None]
        return statistics.median(values) if values else 0.0

    per_stream, many = "per_stream", "many_streams"
    summary = {
        "runs": runs,
        "files_per_hour": {layout: median(layout, "files_per_hour") for layout in variants},
        "cpu_us_per_kb": {layout: median(layout, "cpu_us_per_kb") for layout in variants},
        "cpu_cores_steady": {layout: median(layout, "cpu_cores_steady") for layout in variants},
        "peak_rss_mib": {layout: median(layout, "peak_rss_mib") for layout in variants},
        "average_file_bytes": {layout: median(layout, "average_file_bytes") for layout in variants},
    }
    summary["files_ratio"] = round(
        summary["files_per_hour"][per_stream] / max(1.0, summary["files_per_hour"][many]), 1
    )
    summary["cpu_ratio_to_per_stream"] = {
        layout: round(summary["cpu_us_per_kb"][layout] / summary["cpu_us_per_kb"][per_stream], 3)
        for layout in variants if summary["cpu_us_per_kb"][per_stream]
    }
    summary["average_file_to_target"] = round(
        median(many, "average_full_window_file_bytes") / cfg["target_file_size"], 3
    )
    summary["pass"] = all(
        row["exit_code"] == 0 and not row["streams_with_problems"]
        and row["streams_verified"] == cfg["streams"]
        for rows in runs.values() for row in rows
    )
    return summary
