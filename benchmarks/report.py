"""Regenerates BENCHMARKS.md and benchmarks/results/summary.png from the result JSON files.

The hand-written analysis (profiles, optimisations with before/after numbers, what limits each
missed target and what would lift it) lives in benchmarks/analysis.md and is included verbatim.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ANALYSIS = ROOT / "benchmarks" / "analysis.md"
OUTPUT = ROOT / "BENCHMARKS.md"
ORDER = ["parquet_tcp", "live_icecast", "kafka_producer", "alternatives", "sensors_kafka", "flink_scaling"]


def _load() -> dict[str, dict]:
    found = {}
    for name in ORDER:
        for path in (RESULTS / f"{name}.json", RESULTS / "quick" / f"{name}.json"):
            if path.exists():
                found[name] = json.loads(path.read_text())
                break
    return found


def _verdict(value) -> str:
    return {True: "**pass**", False: "**miss**", None: "not run"}.get(value, str(value))


def _fmt(value, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def _largest(res: dict) -> str:
    if res["runs"][0]["pass"]:
        return ""
    tried = ", ".join(str(x["streams"]) for x in res["runs"][:1] + res.get("fallback_runs", []))
    return f"; largest N meeting every target: {res['largest_passing_streams'] or 'none of ' + tried}"


def _summary_rows(results: dict) -> list[list[str]]:
    rows = []
    r = results.get("parquet_tcp")
    if r and "error" not in r["result"]:
        res = r["result"]
        rows.append(["1. TCP → Parquet (bounded)", f"{_fmt(res['streamtap_mb_per_s'])} MB/s",
                     f"pyarrow alone {_fmt(res['pyarrow_mb_per_s'])} MB/s", _fmt(res["ratio"], digits=2),
                     f"≥ {res['target_ratio']:.2f}", _verdict(res["pass"]), _loads(r)])
    r = results.get("live_icecast")
    if r and "error" not in r["result"]:
        res = r["result"]
        for index, run in enumerate(res["runs"] + res.get("fallback_runs", [])):
            rows.append([f"2. {run['streams']} live Icecast streams (Prism, {run['seconds']:.0f} s)",
                         f"CPU {_fmt(run['cpu_cores_steady'], digits=2)} cores, RSS {_fmt(run['peak_rss_mib'], ' MiB', 0)}, "
                         f"p99 latency {_fmt(run.get('latency_steady_p99_s', run.get('latency_p99_s')), ' s', 2)}, "
                         f"unmarked gaps in {run.get('streams_with_problems')} streams",
                         f"< 1 core, < 2048 MiB, < {_fmt(run['latency_limit_s'], ' s')}, 0",
                         "–", f"N = {r['config']['streams']}" if index == 0 else "(smaller N)",
                         _verdict(run["pass"]) + (_largest(res) if index == 0 else "")
                         + "".join(f" ({k[5:]} ✗)" for k in ("pass_cpu", "pass_rss", "pass_latency", "pass_gaps")
                                   if run.get(k) is False),
                         _loads(r) if index == 0 else f"{run['load_average_1m']}"])
    r = results.get("kafka_producer")
    if r and "error" not in r["result"]:
        res = r["result"]
        tuned = res.get("producer_performance_streamtap_batching_mb_per_s")
        rows.append(["3. Kafka sink, 64 KiB records, acks=all", f"{_fmt(res['streamtap_mb_per_s'])} MB/s",
                     f"ProducerPerformance {_fmt(res['producer_performance_mb_per_s'])} MB/s (defaults); "
                     f"{_fmt(tuned)} MB/s with streamtap's 512 KiB batches",
                     f"{_fmt(res['ratio'], digits=2)} ({_fmt(res.get('ratio_vs_streamtap_batching'), digits=2)} vs same batching)",
                     f"≥ {res['target_ratio']:.2f}", _verdict(res["pass"]), _loads(r)])
    r = results.get("alternatives")
    if r and "error" not in r["result"]:
        res = r["result"]
        ours = res["contenders"]["streamtap"]
        plain = res["contenders"]["plain_thread_per_stream"]
        rows.append([f"4. {res['streams']} Icecast streams → Kafka", f"{_fmt(ours['cpu_us_per_kb_steady'], digits=2)} CPU-µs/kB",
                     f"plain script {_fmt(plain['cpu_us_per_kb_steady'], digits=2)} CPU-µs/kB; Redpanda Connect not run",
                     _fmt(res["ratio_vs_plain_steady"], digits=2), "< 1 (fewer than both)",
                     _verdict(res["pass"]) + " vs plain; (b) not run", _loads(r)])
    r = results.get("sensors_kafka")
    if r and "error" not in r["result"]:
        res = r["result"]
        rows.append([f"5. {res['sensors']} sensors × 1 kHz → Kafka", f"{_fmt(res['cpu_us_per_sample_steady'], digits=2)} CPU-µs/sample, "
                     f"{res['samples_per_s']} samples/s", f"no gap ({res['streams_with_problems']} streams with problems)",
                     "–", "no gap", _verdict(res["pass"]), _loads(r)])
    r = results.get("flink_scaling")
    if r:
        rows.append(["6. Flink scaling", "–", "–", "–", "–", r["result"].get("note", "not run"), "–"])
    for name, r in results.items():
        if "error" in r["result"]:
            rows.append([name, "error", r["result"]["error"][:120], "–", "–", "**error**", _loads(r)])
    return rows


def _loads(record: dict) -> str:
    start = record["machine"]["load_average_1m"]
    end = record.get("load_average_1m_end")
    mode = "" if record["mode"] == "full" else " (quick)"
    return f"{start} → {end}{mode}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def plot(results: dict) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = []
    r = results.get("parquet_tcp")
    if r and "error" not in r["result"]:
        res = r["result"]
        panels.append(("1. TCP → Parquet, MB/s", ["pyarrow alone", "Beam GBK alone", "streamtap"],
                       [res["pyarrow_mb_per_s"], res.get("beam_group_by_key_only_mb_per_s"),
                        res["streamtap_mb_per_s"]], None))
    r = results.get("kafka_producer")
    if r and "error" not in r["result"]:
        res = r["result"]
        panels.append(("3. Kafka, 64 KiB records, MB/s",
                       ["ProducerPerf\n(defaults)", "ProducerPerf\n(512 KiB batches)", "streamtap\nsink", "streamtap\nend to end"],
                       [res["producer_performance_mb_per_s"], res.get("producer_performance_streamtap_batching_mb_per_s"),
                        res["streamtap_mb_per_s"], res["streamtap_end_to_end_mb_per_s"]], None))
    r = results.get("alternatives")
    if r and "error" not in r["result"]:
        c = r["result"]["contenders"]
        panels.append(("4. CPU-µs per captured kB (steady)", ["streamtap", "plain script"],
                       [c["streamtap"]["cpu_us_per_kb_steady"], c["plain_thread_per_stream"]["cpu_us_per_kb_steady"]], None))
    r = results.get("live_icecast")
    trend = None
    if r and "error" not in r["result"]:
        runs = r["result"]["runs"] + r["result"].get("fallback_runs", [])
        trend = [(run["streams"], run.get("latency_median_by_10s") or [], run["latency_limit_s"]) for run in runs]
    count = len(panels) + (1 if trend else 0)
    if not count:
        return None
    fig, axes = plt.subplots(1, count, figsize=(4.6 * count, 3.8))
    axes = [axes] if count == 1 else list(axes)
    for ax, (title, labels, values, _) in zip(axes, panels):
        colors = ["#2b7bba" if "streamtap" in label else "#999999" for label in labels]
        bars = ax.bar(labels, [v or 0 for v in values], color=colors)
        for bar, value in zip(bars, values):
            ax.annotate(f"{value:.1f}" if value is not None else "–", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=9)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    if trend:
        ax = axes[-1]
        for streams, points, limit in trend:
            if points:
                # p99 per 10 s of event time (the target is on the p99); older results: median.
                ax.plot([p[0] for p in points], [p[2] if len(p) > 2 else p[1] for p in points],
                        marker=".", label=f"N={streams}")
        ax.axhline(trend[0][2], color="red", linestyle="--", linewidth=1, label="limit")
        ax.set_yscale("log")
        ax.set_title("2. p99 arrival-to-file latency per 10 s, s (log)", fontsize=10)
        ax.set_xlabel("event time into the capture, s", fontsize=8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = RESULTS / "summary.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _profile_block(profile: dict, top: int = 10) -> str:
    if not profile:
        return ""
    lines = [f"py-spy, {profile['samples']} samples; self time (top {top}):", "```"]
    lines += [f"{p:5.1f}%  {name}" for name, p in profile["self"][:top]]
    lines.append("```")
    return "\n".join(lines)


def _details(results: dict) -> str:
    parts = []
    for name in ORDER:
        r = results.get(name)
        if not r:
            continue
        res = r["result"]
        m = r["machine"]
        parts.append(f"### {r['title']} (`{name}`)\n")
        parts.append(f"Mode {r['mode']}, {r['repeats']} repeat(s), {r['duration_s']} s, started {r['started']}, "
                     f"load average (1 min) {m['load_average_1m']} at start, {r.get('load_average_1m_end')} at end.\n")
        if "error" in res:
            parts.append(f"Error: `{res['error']}`\n")
            continue
        if name == "parquet_tcp":
            rows = [[i + 1, run["load_average_1m"], run["pyarrow"]["mb_per_s"],
                     (run["pyarrow_same_file_size"] or {}).get("mb_per_s", "–"),
                     run["streamtap"]["mb_per_s"], run["streamtap"]["files"],
                     round(run["streamtap"]["median_file_bytes"] / 2**20, 1), run["streamtap"]["cpu_seconds"], run["ratio"],
                     run.get("decomposition", {}).get("beam_group_by_key_only", {}).get("mb_per_s", "–"),
                     run.get("decomposition", {}).get("streamtap_parquet_sink_only", {}).get("mb_per_s", "–")]
                    for i, run in enumerate(res["runs"])]
            parts.append(_table(["run", "load", "pyarrow MB/s (64 MiB files)", "pyarrow MB/s (streamtap's file size)",
                                 "streamtap MB/s", "files", "median file MiB", "streamtap CPU s", "ratio",
                                 "Beam GBK alone MB/s", "streamtap sink alone MB/s"], rows))
            parts.append("\nThe last two columns feed generated 64 KiB chunks (no socket) through Beam's WindowInto + "
                         "GroupByKey only, and through streamtap's Parquet sink, on the same runner.")
            main = res.get("profile_main_thread") or {}
            profile = main if main.get("samples") else res.get("profile")
            if profile:
                parts.append("\nProfile of a separate capture run (all threads, wall time):\n\n" + _profile_block(profile, 14))
        elif name == "live_icecast":
            keys = ["streams", "seconds", "drain_seconds", "bytes_per_second", "reconnects", "discontinuities",
                    "cpu_cores_steady", "cpu_cores_steady_by_process", "peak_rss_mib", "peak_rss_mib_by_process",
                    "latency_p50_s", "latency_steady_p99_s", "latency_p99_s", "latency_limit_s",
                    "share_written_before_sigint", "streams_with_problems", "load_average_1m", "pass"]
            runs = res["runs"] + res.get("fallback_runs", [])
            parts.append(_table(["run"] + keys, [[i + 1] + [json.dumps(run.get(k)) if isinstance(run.get(k), dict) else run.get(k) for k in keys]
                                                 for i, run in enumerate(runs)]))
            parts.append(f"\nLargest N that met every target: **{res['largest_passing_streams']}**.")
            if res["runs"][0].get("profile"):
                parts.append("\nProfile of the capture process during the first run:\n\n" + _profile_block(res["runs"][0]["profile"]))
        elif name == "kafka_producer":
            rows = [[i + 1, run["load_average_1m"], run["producer_performance"]["mb_per_s"],
                     run.get("producer_performance_streamtap_batching", {}).get("mb_per_s", "–"),
                     run["streamtap_sink"]["mb_per_s"], run["streamtap_sink"]["cpu_seconds"],
                     run["streamtap_end_to_end"]["mb_per_s"], run["ratio"], run.get("ratio_vs_streamtap_batching", "–")]
                    for i, run in enumerate(res["runs"])]
            parts.append(_table(["run", "load", "ProducerPerformance MB/s (defaults)",
                                 "ProducerPerformance MB/s (batch.size=524288 linger.ms=5)", "streamtap sink MB/s",
                                 "sink CPU s", "streamtap end-to-end MB/s", "ratio (target)", "ratio vs same batching"], rows))
            parts.append("\nEach repeat, in this order, into fresh topics of one broker: ProducerPerformance with the "
                         "command below, the same with streamtap's batching, streamtap's sink alone (generated chunks), "
                         "then a whole capture of a TCP stream of the same bytes (end to end).")
            parts.append(f"\nProducerPerformance command: `{res['runs'][0]['producer_performance']['command']}`")
        elif name == "alternatives":
            keys = ["seconds", "landed_bytes", "streams_in_topic", "cpu_seconds_total", "cpu_cores_steady", "peak_rss_mib",
                    "cpu_us_per_kb_steady", "cpu_us_per_kb_total", "load_average_1m"]
            parts.append(_table(["contender"] + keys, [[n] + [c.get(k) for k in keys] for n, c in res["contenders"].items()]))
            parts.append(f"\n(b) Redpanda Connect: {res['redpanda_connect']['why']}")
        elif name == "sensors_kafka":
            keys = ["sensors", "seconds", "samples_per_s", "expected_samples_per_s", "streams_in_topic", "streams_with_problems",
                    "discontinuities", "cpu_cores_steady", "cpu_cores_steady_by_process", "cpu_us_per_sample_steady",
                    "cpu_us_per_sample_total", "peak_rss_mib", "load_average_1m"]
            parts.append(_table(keys, [[json.dumps(res.get(k)) if isinstance(res.get(k), dict) else res.get(k) for k in keys]]))
        elif name == "flink_scaling":
            parts.append(res.get("note", "not run"))
        parts.append("")
    return "\n".join(parts)


def _before_after() -> str:
    """Table of the before/after runs in results/before and results/after (same settings)."""
    rows = []
    for name in ORDER:
        pair = []
        for side in ("before", "after"):
            path = RESULTS / side / f"{name}.json"
            pair.append(json.loads(path.read_text()) if path.exists() else None)
        if None in pair:
            continue
        cells = []
        for record in pair:
            res = record["result"]
            load = record["machine"]["load_average_1m"]
            if name == "parquet_tcp":
                cells.append(f"{res['streamtap_mb_per_s']} MB/s (ratio {res['ratio']}), load {load}")
            elif name == "live_icecast":
                run = res["runs"][0]
                cells.append(f"{run['streams']} streams: {run['cpu_cores_steady']} cores "
                             f"{json.dumps(run['cpu_cores_steady_by_process'])}, RSS {run['peak_rss_mib']} MiB, "
                             f"p99 {run['latency_p99_s']} s, load {run['load_average_1m']}")
            elif name == "alternatives":
                c = res["contenders"]
                cells.append(f"streamtap {c['streamtap']['cpu_us_per_kb_steady']} CPU-µs/kB "
                             f"(plain {c['plain_thread_per_stream']['cpu_us_per_kb_steady']}), load {c['streamtap']['load_average_1m']}")
            elif name == "sensors_kafka":
                cells.append(f"{res['cpu_us_per_sample_steady']} CPU-µs/sample "
                             f"{json.dumps(res['cpu_cores_steady_by_process'])}, load {res['load_average_1m']}")
            else:
                cells.append("–")
        rows.append([f"{name} ({pair[0]['mode']})", *cells])
    if not rows:
        return ""
    return ("Generated from `benchmarks/results/before/` and `after/` (same settings, run one after "
            "the other):\n\n" + _table(["scenario", "before (committed code)", "after (timer cuts, parallel fsync, coder)"], rows) + "\n")


def generate() -> Path:
    results = _load()
    image = plot(results)
    machine = next(iter(results.values()))["machine"] if results else {}
    lines = [
        "# Benchmarks",
        "",
        "How close streamtap gets to the machine's limits, and how it compares with the alternatives.",
        "Generated by `.venv/bin/python -m benchmarks` (`--quick` for a ~5 minute pass, `--scenario NAME`",
        "for one scenario) from `benchmarks/results/*.json`; the configuration of every scenario is",
        "`benchmarks/config.py`. Every number is a ratio or comparison measured in the same run, on the machine",
        "below, which was shared with other engineers' builds and tests while these ran: the 1-minute load",
        "average is recorded with every result (a 2-core machine at load 4 gives each runnable process about",
        "half a core).",
        "",
    ]
    if machine:
        lines += [
            f"**Machine:** {machine['cores']} cores ({machine['cpu_model']}), {machine['memory_gib']} GiB, kernel "
            f"{machine['kernel']}; Python {machine['python']}, Apache Beam {machine['apache_beam']}, pyarrow "
            f"{machine['pyarrow']}, kafka-python {machine['kafka_python']}, Kafka broker {machine['kafka_broker']}, "
            f"{machine.get('java')}.",
            "",
        ]
    lines += ["## Summary", "", _table(["scenario", "streamtap", "limit / peer", "ratio", "target", "result", "load 1m (start → end)"],
                                       _summary_rows(results)), ""]
    if image:
        lines += [f"![summary](benchmarks/results/{image.name})", ""]
    if ANALYSIS.exists():
        text = ANALYSIS.read_text().rstrip()
        text = text.replace("<!-- before-after -->", _before_after())
        lines += [text, ""]
    lines += ["## Details per scenario", "", _details(results)]
    OUTPUT.write_text("\n".join(lines).rstrip() + "\n")
    return OUTPUT
