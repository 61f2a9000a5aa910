"""BENCHMARKS.md rows and details of scenario 9, `parquet_layouts` (issue #18): files per hour and
write CPU of the per-stream and many-streams Parquet layouts at 1,000 slow streams."""

from __future__ import annotations

import json

__all__ = ["details", "summary_rows"]

NAME = "parquet_layouts"


def _loads(record: dict) -> str:
    return f"{record['machine']['load_average_1m']} → {record.get('load_average_1m_end')}"


def summary_rows(results: dict) -> list[list[str]]:
    record = results.get(NAME)
    if not record or "error" in record["result"]:
        return []
    res = record["result"]
    per_hour = res["files_per_hour"]
    ratio = res["cpu_ratio_to_per_stream"].get("many_streams")
    return [[
        "9. 1,000 slow streams → Parquet, many_streams vs per_stream layout",
        f"{per_hour['many_streams']:,.0f} files/h, {res['cpu_us_per_kb']['many_streams']:.1f} CPU-µs/kB",
        f"per_stream {per_hour['per_stream']:,.0f} files/h, "
        f"{res['cpu_us_per_kb']['per_stream']:.1f} CPU-µs/kB",
        f"{ratio:.2f} (CPU); files ÷{res['files_ratio']:,.0f}",
        f"fewer files, CPU ≤ 1; files ~ target ({res['average_file_to_target']:.2f} of it)",
        "PASS" if res["pass"] else "FAIL",
        _loads(record),
    ]]


def details(record: dict) -> str:
    res = record["result"]
    keys = ["layout", "seconds", "windows", "files", "files_per_hour", "full_windows",
            "files_per_full_window", "average_full_window_file_bytes", "target_file_size",
            "landed_bytes", "streams_verified", "streams_with_problems", "cpu_cores_steady",
            "cpu_cores_steady_by_process", "cpu_us_per_kb", "peak_rss_mib", "load_average_1m"]
    rows = [
        [json.dumps(run.get(k)) if isinstance(run.get(k), dict) else run.get(k) for k in keys]
        for layout_runs in res["runs"].values() for run in layout_runs
    ]
    cells = lambda row: "| " + " | ".join("–" if c is None else str(c) for c in row) + " |"  # noqa: E731
    table = "\n".join([cells(keys), "|" + "---|" * len(keys), *map(cells, rows)])
    medians = {k: res[k] for k in ("files_per_hour", "cpu_us_per_kb", "cpu_cores_steady",
                                   "peak_rss_mib", "cpu_ratio_to_per_stream")}
    return (
        table + "\n\nMedians per variant: `" + json.dumps(medians) + "`. `many_streams_shuffled` is "
        "`layout: many_streams` with `files: per_window`: the window gathered by a GroupByKey, as "
        "in a capture that has other sinks too.\n"
    )
