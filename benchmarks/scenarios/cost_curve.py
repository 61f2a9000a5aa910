"""Scenario 2's cost curve (issue #19): one capture per N, the floor beside each, fitted lines.

For every N of `streams_list` (100 ... 3,000): scenario 2's measurement (live_icecast.run_one:
the asyncio floor first, then `streamtap run` on Prism, same Icecast, same duration), recording
CPU cores, peak RSS of the whole tree (Python + Prism), p99 arrival-to-file latency and unmarked
gaps. For N >= `parallel_from` the capture is run once more with `parallel_args` (worker
parallelism 2). Least-squares fits over the one-process runs: cores = fixed + per_stream x N,
RSS = fixed + per_stream x N (and the floor's cores the same way). `plot()` draws CPU, RSS and
p99 against N (benchmarks/results/cost_curve.png; the report calls it).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.measure import load_average
from benchmarks.scenarios import live_icecast

NAME = "cost_curve"


def fit(ns: list[float], values: list[float]) -> dict | None:
    """Least squares value = fixed + per_stream * N; with R^2."""
    pairs = [(n, v) for n, v in zip(ns, values) if v is not None]
    if len(pairs) < 2:
        return None
    x = np.array([p[0] for p in pairs], dtype=float)
    y = np.array([p[1] for p in pairs], dtype=float)
    design = np.vstack([np.ones_like(x), x]).T
    (fixed, per_stream), *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - (fixed + per_stream * x)
    total = float(((y - y.mean()) ** 2).sum())
    return {"fixed": round(float(fixed), 4), "per_stream": float(f"{per_stream:.4g}"),
            "r2": round(1 - float((residual ** 2).sum()) / total, 3) if total else None,
            "points": len(pairs)}


def fits(runs: list[dict]) -> dict:
    ns = [r["streams"] for r in runs]
    return {
        "cpu_cores": fit(ns, [r.get("cpu_cores_steady") for r in runs]),
        "rss_mib": fit(ns, [r.get("peak_rss_mib") for r in runs]),
        "floor_cpu_cores": fit(ns, [(r.get("floor") or {}).get("cpu_cores_steady") for r in runs]),
        "floor_rss_mib": fit(ns, [(r.get("floor") or {}).get("peak_rss_mib") for r in runs]),
    }


def run(cfg: dict, repeats: int, workdir: Path, log) -> dict:
    runs, parallel, skipped = [], [], []
    started = time.monotonic()
    for n in cfg["streams_list"]:
        if cfg.get("budget_seconds") and time.monotonic() - started > cfg["budget_seconds"]:
            skipped.append(n)  # out of benchmark time (budget_seconds)
            continue
        log(f"{NAME}: N={n} for {cfg['seconds']} s, floor first (load {load_average()})")
        row = live_icecast.run_one(cfg, n, cfg["seconds"], profile=n == cfg.get("profile_at"),
                                   workdir=workdir)
        log(f"{NAME}: {live_icecast._brief(row)}")
        runs.append(row)
        if cfg.get("parallel_from") and n >= cfg["parallel_from"]:
            other = {**cfg, "beam_args": cfg["parallel_args"], "floor": False}
            log(f"{NAME}: N={n} with {cfg['parallel_args']} (load {load_average()})")
            row = live_icecast.run_one(other, n, cfg["seconds"], profile=False, workdir=workdir,
                                       label="-parallel")
            log(f"{NAME}: {live_icecast._brief(row)}")
            parallel.append(row)
    return {"runs": runs, "parallel_runs": parallel, "skipped_streams": skipped,
            "fits": fits(runs)}


def plot(record: dict, out: Path) -> Path | None:
    """CPU, RSS and p99 latency against N, three panels, one PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    res = record["result"]
    runs, parallel = res.get("runs", []), res.get("parallel_runs", [])
    if not runs:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ns = [r["streams"] for r in runs]

    def series(ax, rows, key, label, style, floor=False):
        pts = [(r["streams"], ((r.get("floor") or {}) if floor else r).get(key)) for r in rows]
        pts = [p for p in pts if p[1] is not None]
        if pts:
            ax.plot(*zip(*pts), style, label=label)

    def line(ax, fitted, label):
        if fitted:
            x = np.array([0, max(ns)])
            ax.plot(x, fitted["fixed"] + fitted["per_stream"] * x, ":", color="grey", label=label)

    f = res.get("fits", {})
    series(axes[0], runs, "cpu_cores_steady", "streamtap (1 process)", "o-")
    series(axes[0], parallel, "cpu_cores_steady", "streamtap, worker parallelism 2", "s--")
    series(axes[0], runs, "cpu_cores_steady", "asyncio floor", "^-", floor=True)
    line(axes[0], f.get("cpu_cores"), "fit")
    axes[0].set_ylabel("CPU cores (steady)")
    series(axes[1], runs, "peak_rss_mib", "streamtap + Prism", "o-")
    series(axes[1], parallel, "peak_rss_mib", "worker parallelism 2", "s--")
    series(axes[1], runs, "peak_rss_mib", "asyncio floor", "^-", floor=True)
    line(axes[1], f.get("rss_mib"), "fit")
    axes[1].set_ylabel("peak RSS (MiB)")
    series(axes[2], runs, "latency_steady_p99_s", "p99 (steady)", "o-")
    series(axes[2], parallel, "latency_steady_p99_s", "worker parallelism 2", "s--")
    if runs[0].get("latency_limit_s"):
        axes[2].axhline(runs[0]["latency_limit_s"], color="red", ls=":", label="target")
    axes[2].set_ylabel("arrival-to-file latency p99 (s)")
    for ax in axes:
        ax.set_xlabel("streams (N)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Cost curve, 128 kbit/s Icecast streams on Prism ({record['config']['seconds']} s "
                 f"per capture, {record['machine']['cores']} cores)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
