"""BENCHMARKS.md's parts for issue #19: scenario 2's floor, the cost curve, start-up (report.py
calls these; benchmarks/results/cost_curve.png is drawn by benchmarks.scenarios.cost_curve.plot)."""

from __future__ import annotations

import json
from pathlib import Path


def _f(value, digits: int = 2, unit: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def _loads(record: dict) -> str:
    return f"{record['machine']['load_average_1m']} → {record.get('load_average_1m_end')}"


def floor_cells(run: dict) -> tuple[str, str]:
    """(peer cell, ratio cell) of a scenario 2 run measured with the asyncio floor."""
    floor = run.get("floor")
    if not floor:
        return "", "–"
    return (f"; asyncio floor {_f(floor['cpu_cores_steady'], 3)} cores, {_f(floor['peak_rss_mib'], 0)} MiB",
            f"{_f(run.get('cpu_ratio_to_floor'))}× floor CPU (target ≤ {run.get('target_ratio_to_floor', 1.5)}: "
            f"{'pass' if run.get('pass_floor') else 'miss'})")


def _per_1000(fitted: dict) -> str:
    return _f(fitted["per_stream"] * 1000, 3) if fitted.get("per_stream") is not None else "–"


def summary_rows(results: dict) -> list[list[str]]:
    rows = []
    r = results.get("cost_curve")
    if r and "error" not in r["result"]:
        res = r["result"]
        cpu, rss = res["fits"].get("cpu_cores") or {}, res["fits"].get("rss_mib") or {}
        floor = res["fits"].get("floor_cpu_cores") or {}
        top = res["runs"][-1]
        ratios = ", ".join(f"{x['streams']}: {_f(x.get('cpu_ratio_to_floor'))}" for x in res["runs"])
        layout = (r["config"].get("sink") or {}).get("layout", "per_stream")
        at_1000 = [x for x in res["runs"] if x["streams"] == 1000]
        passing = [x["streams"] for x in res["runs"] if x.get("pass")]
        verdict = ("**pass**" if at_1000 and at_1000[0].get("pass_floor") else "**miss**") + (
            " at N=1,000; largest N meeting every target: " + (f"{max(passing):,}" if passing else "none"))
        rows.append([
            f"2b. cost curve ({layout} layout), N = {', '.join(str(x['streams']) for x in res['runs'])} ({r['config']['seconds']} s each)",
            f"{_f(cpu.get('fixed'), 3)} cores + {_per_1000(cpu)} cores per 1,000 streams; "
            f"{_f(rss.get('fixed'), 0)} MiB + {_f(rss.get('per_stream'), 3)} MiB per stream; "
            f"N={top['streams']}: p99 {_f(top.get('latency_steady_p99_s'))} s, {_f(top['peak_rss_mib'], 0)} MiB",
            f"asyncio floor {_f(floor.get('fixed'), 3)} + {_per_1000(floor)} cores per 1,000",
            f"× floor by N: {ratios}", "≤ 1.5× floor at N=1,000; p99 < window + 2 s, < 2 GiB, no gap",
            verdict, _loads(r)])
    r = results.get("startup")
    if r and "error" not in r["result"]:
        res = r["result"]
        s = res["startup"]
        rows.append([f"2c. start-up ({s['streams']} streams), idle streams",
                     f"first file {_f(s['first_file_s'], 1)} s after `streamtap run` (window {s['window_seconds']:g} s); "
                     f"all streams reading by {_f(s['all_streams_reading_s'], 1)} s; "
                     f"{_f(res['idle_rss_kib_per_stream'], 0)} KiB RSS per idle stream",
                     "–", "–", "–", "(reported)", _loads(r)])
    return rows


def _table(header: list, rows: list[list]) -> str:
    cells = lambda row: "| " + " | ".join("–" if c is None else str(c) for c in row) + " |"  # noqa: E731
    return "\n".join([cells(header), "|" + "---|" * len(header), *map(cells, rows)])


def details(name: str, record: dict) -> str:
    res = record["result"]
    parts = []
    if name == "cost_curve":
        keys = ["streams", "beam_args", "seconds", "bytes_per_second", "cpu_cores_steady", "cpu_cores_steady_by_process",
                "peak_rss_mib", "peak_rss_mib_by_process", "processes_by_name", "latency_p50_s", "latency_steady_p99_s",
                "latency_max_s", "drain_seconds", "streams_with_problems", "reconnects", "load_average_1m"]
        rows = []
        for run in res["runs"] + res.get("parallel_runs", []):
            floor = run.get("floor") or {}
            rows.append([json.dumps(run.get(k)) if isinstance(run.get(k), (dict, list)) else run.get(k) for k in keys]
                        + [floor.get("cpu_cores_steady"), floor.get("peak_rss_mib"), floor.get("load_average_1m"),
                           run.get("cpu_ratio_to_floor")])
        parts.append(_table(keys + ["floor cores", "floor RSS MiB", "floor load", "× floor"], rows))
        parts.append("\nLeast-squares fits over the one-process runs (value = fixed + per_stream × N):\n")
        parts.append(_table(["quantity", "fixed", "per stream", "per 1,000 streams", "R²", "points"],
                            [[k, v["fixed"], v["per_stream"], round(v["per_stream"] * 1000, 3), v["r2"], v["points"]]
                             for k, v in res["fits"].items() if v]))
        if res.get("skipped_streams"):
            parts.append(f"\nSkipped (out of the time budget): N = {res['skipped_streams']}.")
        profiled = [x for x in res["runs"] if x.get("profile")]
        if profiled:
            p = profiled[0]["profile"]
            parts.append(f"\npy-spy (--gil, {p['samples']} samples) of the capture at N={profiled[0]['streams']}, "
                         "self time:\n\n```\n" + "\n".join(f"{v:5.1f}%  {k}" for k, v in p["self"][:15])
                         + "\n```\n\ninclusive:\n\n```\n" + "\n".join(f"{v:5.1f}%  {k}" for k, v in p["inclusive"][:25])
                         + "\n```")
        parts.append("\n![cost curve](benchmarks/results/cost_curve.png)")
    elif name == "startup":
        s = res["startup"]
        parts.append(_table(list(s), [list(s.values())]))
        parts.append("\nIdle streams (an HTTP server that sends a response head, then nothing):\n")
        keys = ["streams", "peak_rss_mib", "peak_rss_mib_by_process", "cpu_cores_steady", "streams_in_summary",
                "reconnects", "load_average_1m"]
        parts.append(_table(keys, [[json.dumps(x[k]) if isinstance(x[k], dict) else x[k] for k in keys]
                                   for x in res["idle"]]))
        parts.append(f"\nRSS per idle stream: **{res['idle_rss_kib_per_stream']} KiB** "
                     "(the difference of the two largest N, divided by their difference).")
    return "\n".join(parts) + "\n"


def plot(results: dict, out_dir: Path) -> Path | None:
    record = results.get("cost_curve")
    if not record or "error" in record["result"]:
        return None
    from benchmarks.scenarios.cost_curve import plot as draw

    return draw(record, out_dir / "cost_curve.png")
