"""Regenerates BENCHMARKS.md and benchmarks/results/summary.png from the result JSON files.

The hand-written analysis (profiles, optimisations with before/after numbers, what limits each
missed target and what would lift it) lives in benchmarks/analysis.md and is included verbatim.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import report_issue19, report_layouts

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ANALYSIS = ROOT / "benchmarks" / "analysis.md"
OUTPUT = ROOT / "BENCHMARKS.md"
ORDER = ["parquet_tcp", "live_icecast", "kafka_producer", "alternatives", "sensors_kafka", "flink_scaling",
         "cost_curve", "startup", "parquet_layouts"]


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
            floor_peer, floor_ratio = report_issue19.floor_cells(run)
            rows.append([f"2. {run['streams']} live Icecast streams (Prism, {run['seconds']:.0f} s)",
                         f"CPU {_fmt(run['cpu_cores_steady'], digits=2)} cores, RSS {_fmt(run['peak_rss_mib'], ' MiB', 0)}, "
                         f"p99 latency {_fmt(run.get('latency_steady_p99_s', run.get('latency_p99_s')), ' s', 2)}, "
                         f"unmarked gaps in {run.get('streams_with_problems')} streams",
                         f"< 1 core, < 2048 MiB, < {_fmt(run['latency_limit_s'], ' s')}, 0{floor_peer}",
                         floor_ratio, (f"N = {r['config']['streams']}" if index == 0 else "(smaller N)")
                         + ("; ≤ 1.5× floor" if run.get("floor") else ""),
                         _verdict(run["pass"]) + (_largest(res) if index == 0 else "")
                         + "".join(f" ({k[5:]} ✗)" for k in ("pass_cpu", "pass_rss", "pass_latency", "pass_gaps")
                                   if run.get(k) is False),
                         _loads(r) if index == 0 else f"{run['load_average_1m']}"])
    rows += report_issue19.summary_rows(results)  # 2b, 2c
    rows += report_layouts.summary_rows(results)  # 9
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
        peer = res["contenders"].get("benthos_standin")
        if "benthos_standin" not in res:  # a result from before the Benthos stand-in
            peer_text, ratio, verdict = "; Redpanda Connect not run", "", " vs plain; (b) not run"
        elif peer is None:
            peer_text, ratio, verdict = "; Benthos stand-in failed to build", "", " (b) not run"
        else:
            peer_text = f"; Benthos stand-in for Redpanda Connect {_fmt(peer['cpu_us_per_kb_steady'], digits=2)} CPU-µs/kB"
            ratio, verdict = f" vs plain, {_fmt(res['ratio_vs_benthos_steady'], digits=2)} vs Benthos", ""
        rows.append([f"4. {res['streams']} Icecast streams → Kafka", f"{_fmt(ours['cpu_us_per_kb_steady'], digits=2)} CPU-µs/kB",
                     f"plain script {_fmt(plain['cpu_us_per_kb_steady'], digits=2)} CPU-µs/kB{peer_text}",
                     _fmt(res["ratio_vs_plain_steady"], digits=2) + ratio, "< 1 (fewer than both)",
                     _verdict(res["pass"]) + verdict, _loads(r)])
    r = results.get("sensors_kafka")
    if r and "error" not in r["result"]:
        res = r["result"]
        rows.append([f"5. {res['sensors']} sensors × 1 kHz → Kafka", f"{_fmt(res['cpu_us_per_sample_steady'], digits=2)} CPU-µs/sample, "
                     f"{res['samples_per_s']} samples/s", f"no gap ({res['streams_with_problems']} streams with problems)",
                     "–", "no gap", _verdict(res["pass"]), _loads(r)])
    r = results.get("flink_scaling")
    if r and "error" not in r["result"]:
        rows += _flink_summary_rows(r)
    for name, r in results.items():
        if "error" in r["result"]:
            rows.append([name, "error", r["result"]["error"][:120], "–", "–", "**error**", _loads(r)])
    return rows


_FLINK_SHORT = {"loopback": "LOOPBACK", "worker_pool": "worker pool"}
_FLINK_SETUPS = {
    "loopback": "LOOPBACK workers (default: Python in `streamtap run`)",
    "worker_pool": "worker pool (EXTERNAL: a Python process per slot)",
}


def _flink_summary_rows(record: dict) -> list[list[str]]:
    res = record["result"]
    if "setups" not in res:  # an old stub result
        return [["6. Flink scaling", "–", "–", "–", "–", res.get("note", "not run"), "–"]]
    rows = []
    for setup, data in res["setups"].items():
        one, two = data.get("one_slot"), data.get("two_slots")
        if not one or not two:
            rows.append([f"6. Flink 1 → 2 slots, {_FLINK_SETUPS.get(setup, setup)}", "–", "–",
                         "–", "–", "not measured (see details)", _loads(record)])
            continue
        expected = res.get("expected_scaling") if setup == "worker_pool" else None
        verdict = _verdict(res["pass"]) if expected else "(reported)"
        rows.append([
            f"6. Flink 1 → 2 slots, {_FLINK_SETUPS.get(setup, setup)}",
            f"{_fmt(one['mb_per_s'])} → {_fmt(two['mb_per_s'])} MB/s",
            f"2 cores; machine busy {_fmt(two['machine_busy_cores'], digits=2)} cores in the "
            f"2-slot runs, {_fmt(two['other_processes_cores'], digits=2)} of it other processes",
            f"{_fmt(data['scaling'], digits=2)}× (paired repeats: median "
            f"{_fmt(_median(data['scaling_per_repeat']), digits=2)}×)",
            f"≥ {expected:.1f}× (stated expectation; the issue sets none)" if expected
            else "– (one Python process)",
            verdict, _loads(record)])
    return rows


def _median(values: list) -> float | None:
    import statistics

    return statistics.median(values) if values else None


def _flink_details(record: dict) -> str:
    res = record["result"]
    cfg = record["config"]
    if "setups" not in res:
        return res.get("note", "not run")
    total = res["total_bytes_per_run"]
    topologies = "; ".join(
        f"{_FLINK_SHORT.get(setup, setup)}: {d['topology']['taskmanagers']} TaskManager(s) × "
        f"{d['topology']['slots_per_taskmanager']} slot(s)"
        for setup, d in res["setups"].items() if d.get("topology"))
    parts = [
        f"A Flink 1.19 cluster per setup (JobManager, Beam job server, Beam worker pool, all on "
        f"loopback; {topologies}). LOOPBACK runs on `streamtap services up flink`'s default "
        "topology. The worker pool gets a TaskManager per slot because Beam deals a "
        "TaskManager's stages out to its SDK workers in turn: on one TaskManager with 2 slots "
        "the two reading tasks shared one worker process in 2 of 4 tries while this was "
        "built. LOOPBACK is not run on 2 TaskManagers because that fails now and then: each "
        "TaskManager asks the LOOPBACK pool in `streamtap run` for a worker with the id \"1-1\" "
        "(ids are per TaskManager), Beam's pool keeps one worker per id, and when the first "
        "task ends its StopWorker stops the other TaskManager's worker, whose task then fails "
        "and restarts (seen in a run here: `SDK harness closed connection`; the benchmark's "
        "one-shot feeders cannot serve the restarted readers, so that run hung). streamtap's "
        "worker pool "
        "(`streamtap.services.worker_pool`) handles repeated ids.",
        "",
        f"Each run captures {cfg['streams']} TCP streams of "
        f"{cfg['stream_bytes'] / 2**20:.0f} MiB ({total / 2**30:.2f} GiB in all), each from its "
        f"own feeder process sending as fast as the socket takes it, in {cfg['chunk_bytes'] // 1024} "
        f"KiB chunks to Parquet (`{cfg['compression']}`) "
        + ("on tmpfs (/dev/shm: this disk takes ~230 MB/s of fsync'ed writes, `dd "
           "conv=fdatasync`, which would cap the runs by the disk)"
           if res.get("capture_on_tmpfs") else "on the local disk")
        + "; every source has `max_bytes`, so Flink runs it as a batch job that ends by "
        "itself. `--parallelism` 1 or 2 is the number of task slots the job occupies; the order "
        "of 1 and 2 alternates between repeats, and each run starts once the machine was quiet "
        f"(busy < {cfg.get('quiet_below_cores')} cores for 2 s) or after "
        f"{cfg.get('quiet_max_wait_s')} s. MB/s = bytes / data span, the span running from "
        "the first byte any stream received to the last file written (job submission and worker "
        "start-up are in `wall s`). Every run is verified before it counts: `verify` "
        "(contiguous seqs and offsets, CRCs, one session, no discontinuity, exact byte count) and "
        "every chunk's payload compared with the bytes its feeder sent.",
        "",
    ]
    rows = []
    for setup, data in res["setups"].items():
        for label, key in (("1 slot", "one_slot"), ("2 slots", "two_slots")):
            d = data.get(key)
            if not d:
                continue
            cores = d["cpu_cores"]
            rows.append([
                _FLINK_SETUPS.get(setup, setup), label, d["runs"], _fmt(d["mb_per_s"]),
                ", ".join(_fmt(x) for x in d["mb_per_s_all"]),
                _fmt(cores.get("streamtap_client"), digits=2),
                _fmt(cores.get("python_workers"), digits=2),
                _fmt(max(d["busiest_process_cores"].get("streamtap_client", 0),
                         d["busiest_process_cores"].get("python_workers", 0)), digits=2),
                _fmt(cores.get("taskmanagers"), digits=2),
                _fmt(cores.get("jobmanager", 0) + cores.get("job_server", 0)
                     + cores.get("jobmanager_jobserver", 0), digits=2),
                _fmt(cores.get("feeders"), digits=2),
                _fmt(d["machine_busy_cores"], digits=2), _fmt(d["other_processes_cores"], digits=2),
                _fmt(d["cpu_us_per_kb"], digits=2), _fmt(d["load_average_1m"], digits=2),
                "/".join(str(n) for n in d["streams_per_reader_process"]),
            ])
        if data.get("one_slot") and data.get("two_slots"):
            rows.append([_FLINK_SETUPS.get(setup, setup), "**2 / 1**", "",
                         f"**{_fmt(data['scaling'], digits=2)}×**",
                         "per repeat: " + ", ".join(f"{x:.2f}" for x in data["scaling_per_repeat"])
                         + f" (median {_fmt(_median(data['scaling_per_repeat']), digits=2)})",
                         *[""] * 11])
    parts.append("Medians over the repeats; CPU in cores (CPU seconds / data span) from psutil, "
                 "per process group:\n")
    parts.append(_table(["setup", "slots", "runs", "MB/s", "MB/s each run", "streamtap run (cores)",
                         "worker-pool Pythons", "busiest Python process", "TaskManager JVMs",
                         "JobManager + job server", "feeders", "machine busy (of 2)",
                         "other processes", "CPU-µs/kB (ours)", "load 1m", "streams per reading process"],
                        rows))
    parts.append("\nEvery run (`readers`: streams read per Python process; `others`: cores that "
                 "processes not of this capture took during its data span):\n")
    run_rows = []
    for run in res.get("runs", []):
        c = run["cpu_cores_in_span"]
        run_rows.append([run["repeat"], _FLINK_SHORT.get(run["setup"], run["setup"]), run["slots"],
                         run["load_average_1m"], run.get("waited_s", "–"), run["mb_per_s"],
                         run["span_s"], run["wall_s"],
                         "/".join(map(str, run["streams_per_reader_process"])),
                         run["cpu_cores_total_in_span"],
                         " ".join(f"{k}={v}" for k, v in c.items() if v >= 0.01),
                         run["machine_busy_cores"], run["other_processes_cores"],
                         run["cpu_us_per_kb"], "yes" if run.get("verified") else "no"])
    parts.append(_table(["repeat", "setup", "slots", "load", "waited s", "MB/s", "span s", "wall s",
                         "readers", "our cores", "our cores by group", "machine busy",
                         "others", "CPU-µs/kB", "byte-exact"], run_rows))
    parts.append("")
    parts.append(_flink_limits(res))
    if res.get("failures"):
        parts.append("\nFailed runs (not counted):\n")
        parts += [f"- {f['setup']} {f['slots']} slot(s), repeat {f['repeat']}: `{f['error'][:300]}`"
                  for f in res["failures"]]
    return "\n".join(parts)


def _change(before: float, after: float) -> str:
    if not before:
        return "–"
    change = after / before - 1
    return "about the same" if abs(change) < 0.15 else f"{change:+.0%}"


def _flink_limits(res: dict) -> str:
    """What limits the scaling, from the measured CPU of each process group."""
    lines = ["**What limits the scaling** (from the CPU measured in these runs):", ""]
    runs = res.get("runs", [])
    loop = res["setups"].get("loopback", {})
    if loop.get("one_slot") and loop.get("two_slots"):
        one, two = loop["one_slot"], loop["two_slots"]
        lines.append(
            f"- LOOPBACK (the default): the streams were read in {one['reader_processes']} and "
            f"{two['reader_processes']} process(es) with 1 and 2 slots: `streamtap run` itself, "
            f"which did all the Python work ({_fmt(one['cpu_cores']['streamtap_client'], digits=2)} "
            f"cores with 1 slot, {_fmt(two['cpu_cores']['streamtap_client'], digits=2)} with 2). A "
            "second slot gives Flink a second reading task, but its Python work runs in the same "
            "process under the same GIL, so LOOPBACK cannot use more slots for Python work; its "
            f"ratio {_fmt(loop['scaling'], digits=2)}× (per repeat "
            f"{', '.join(f'{x:.2f}' for x in loop['scaling_per_repeat'])}) moves with what the "
            f"rest of the machine took: other processes {_fmt(one['other_processes_cores'], digits=2)} "
            f"cores during the 1-slot runs, {_fmt(two['other_processes_cores'], digits=2)} during "
            "the 2-slot runs (medians).")
    pool = res["setups"].get("worker_pool", {})
    if pool.get("one_slot") and pool.get("two_slots"):
        one, two = pool["one_slot"], pool["two_slots"]
        c1, c2 = one["cpu_cores"], two["cpu_cores"]
        lines.append(
            f"- Worker pool: with 2 slots the streams were read by {two['reader_processes']} "
            f"Python processes (streams per process "
            f"{'/'.join(map(str, two['streams_per_reader_process']))}), which used "
            f"{_fmt(c2['python_workers'], digits=2)} cores together (busiest "
            f"{_fmt(two['busiest_process_cores']['python_workers'], digits=2)}), against "
            f"{_fmt(c1['python_workers'], digits=2)} for the one process with 1 slot. CPU per "
            f"captured kB (all of streamtap's processes): {_fmt(one['cpu_us_per_kb'], digits=2)} → "
            f"{_fmt(two['cpu_us_per_kb'], digits=2)} µs ({_change(one['cpu_us_per_kb'], two['cpu_us_per_kb'])}). "
            f"The TaskManager JVMs took {_fmt(c2['taskmanagers'], digits=2)} cores, JobManager and "
            f"job server {_fmt(c2.get('jobmanager', 0) + c2.get('job_server', 0) + c2.get('jobmanager_jobserver', 0), digits=2)}, the "
            f"feeders {_fmt(c2['feeders'], digits=2)}.")
        lines.append(
            f"- The machine: busy {_fmt(one['machine_busy_cores'], digits=2)} of 2 cores during the "
            f"1-slot runs and {_fmt(two['machine_busy_cores'], digits=2)} during the 2-slot runs "
            f"(medians; steal {_fmt(two['steal_cores'], digits=2)}), of which other processes on "
            f"this shared machine took {_fmt(one['other_processes_cores'], digits=2)} and "
            f"{_fmt(two['other_processes_cores'], digits=2)} cores (load average "
            f"{_fmt(one['load_average_1m'], digits=2)} / {_fmt(two['load_average_1m'], digits=2)}). "
            + ("With 2 slots the 2 cores were saturated: a second worker process can only turn "
               "idle CPU into throughput, and there was little."
               if two["machine_busy_cores"] >= 1.8 else
               "The 2 cores were not saturated in the 2-slot runs: what held them back is in the "
               "per-process CPU above."))
        ones = [r for r in runs if r["setup"] == "worker_pool" and r["slots"] == 1]
        if ones and two["cpu_us_per_kb"]:
            best = max(ones, key=lambda r: r["mb_per_s"])
            ceiling = 2000.0 / two["cpu_us_per_kb"]  # MB/s that 2 cores carry at that cost
            lines.append(
                f"- Headroom (arithmetic on these measurements, not a run): at the 2-slot runs' "
                f"cost of {_fmt(two['cpu_us_per_kb'], digits=2)} CPU-µs per kB (all of the capture's "
                f"processes; 1 slot: {_fmt(one['cpu_us_per_kb'], digits=2)}), 2 whole cores carry at "
                f"most ~{ceiling:.0f} MB/s, {ceiling / best['mb_per_s']:.2f}× the best 1-slot run "
                f"({best['mb_per_s']} MB/s, when the capture took {best['cpu_cores_total_in_span']} "
                f"cores, the one Python worker {best['cpu_cores_in_span']['python_workers']} of "
                "them). "
                + ("On this 2-core machine a second slot has little idle CPU to turn into "
                   "throughput even with nobody else on it; more cores would lift it."
                   if ceiling / best["mb_per_s"] < 1.5 else
                   "There is room for a second worker process: what kept the 2-slot runs below it "
                   "is in the rows above."))
    return "\n".join(lines)


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
        labels = ["streamtap", "plain script"] + (["Benthos\nstand-in"] if "benthos_standin" in c else [])
        names = ["streamtap", "plain_thread_per_stream", "benthos_standin"][:len(labels)]
        panels.append(("4. CPU-µs per captured kB (steady)", labels,
                       [c[name]["cpu_us_per_kb_steady"] for name in names], None))
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
            def _dec(run, key):
                return run.get("decomposition", {}).get(key, {}).get("mb_per_s", "–")

            rows = [[i + 1, run["load_average_1m"], run["pyarrow"]["mb_per_s"],
                     (run["pyarrow_same_file_size"] or {}).get("mb_per_s", "–"),
                     (run.get("pyarrow_conventional") or {}).get("mb_per_s", "–"),
                     run["streamtap"]["mb_per_s"], run["streamtap"]["files"],
                     round(run["streamtap"]["median_file_bytes"] / 2**20, 1), run["streamtap"]["cpu_seconds"],
                     ", ".join(f"{k} {v}" for k, v in run["streamtap"].get("thread_cpu_seconds", {}).items()) or "–",
                     run["ratio"], run.get("ratio_vs_conventional", "–"),
                     _dec(run, "beam_group_by_key_only"), _dec(run, "streamtap_parquet_sink_only"),
                     _dec(run, "streamtap_parquet_sink_per_window")]
                    for i, run in enumerate(res["runs"])]
            parts.append(_table(["run", "load", "pyarrow MB/s (64 MiB files)", "pyarrow MB/s (streamtap's file size)",
                                 "pyarrow MB/s, from_pydict tables (reference)",
                                 "streamtap MB/s", "files", "median file MiB", "streamtap CPU s",
                                 "CPU s by thread", "ratio", "ratio vs from_pydict",
                                 "Beam GBK alone MB/s", "streamtap sink alone MB/s",
                                 "sink alone, files: per_window MB/s"], rows))
            parts.append("\nThe pyarrow baseline builds its tables the way the sink does, over the payloads' own "
                         "buffers, and writes with the sink's options; the from_pydict column copies the payloads "
                         "into one contiguous column first (pyarrow's conventional way, and this benchmark's "
                         "baseline before the sink stopped copying), for reference. The last three columns feed "
                         "generated 64 KiB chunks (no socket, one bundle) through Beam's WindowInto + GroupByKey "
                         "only, through streamtap's Parquet sink as Parquet-only captures use it (no shuffle), and "
                         "through the sink with `files: per_window` (GroupByKey), on the same runner.")
            profile = res.get("profile")
            if res.get("profile_kind") == "gil" and profile:
                run = res.get("profile_run") or {}
                parts.append("\nGIL profile of a separate capture run (py-spy --gil: samples of whichever thread "
                             f"holds the GIL; {run.get('mb_per_s', '–')} MB/s, CPU by thread "
                             f"{json.dumps(run.get('thread_cpu_seconds', {}))}), all threads:\n\n"
                             + _profile_block(profile, 14))
                main = res.get("profile_main_thread") or {}
                if main.get("samples"):
                    parts.append("\nThe bundles' thread (streamtap-wait, where run_capture runs the FnApiRunner) alone:\n\n" + _profile_block(main, 10))
            else:
                main = res.get("profile_main_thread") or {}
                profile = main if main.get("samples") else profile
                if profile:
                    parts.append("\nProfile of a separate capture run (all threads, wall time):\n\n" + _profile_block(profile, 14))
        elif name == "live_icecast":
            keys = ["streams", "seconds", "drain_seconds", "bytes_per_second", "reconnects", "discontinuities",
                    "cpu_cores_steady", "cpu_ratio_to_floor", "floor", "cpu_cores_steady_by_process", "peak_rss_mib", "peak_rss_mib_by_process",
                    "latency_p50_s", "latency_steady_p99_s", "latency_p99_s", "latency_limit_s",
                    "file_after_window_end_s", "share_written_before_sigint", "streams_with_problems", "load_average_1m", "pass"]
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
            standin = res.get("benthos_standin")
            if standin:
                parts.append(f"\nBenthos stand-in: Benthos {standin.get('benthos')}, franz-go {standin.get('franz_go')}, "
                             f"built with {standin.get('go')}; ratios of streamtap's CPU-µs/kB to it: "
                             f"{res.get('ratio_vs_benthos_steady')} steady, {res.get('ratio_vs_benthos_total')} total"
                             + (f". Not run: `{standin['error'][:300]}`" if standin.get("error") else "."))
        elif name == "sensors_kafka":
            keys = ["sensors", "seconds", "samples_per_s", "expected_samples_per_s", "streams_in_topic", "streams_with_problems",
                    "discontinuities", "cpu_cores_steady", "cpu_cores_steady_by_process", "cpu_us_per_sample_steady",
                    "cpu_us_per_sample_total", "peak_rss_mib", "load_average_1m"]
            parts.append(_table(keys, [[json.dumps(res.get(k)) if isinstance(res.get(k), dict) else res.get(k) for k in keys]]))
        elif name == "flink_scaling":
            parts.append(_flink_details(r))
        elif name in ("cost_curve", "startup"):
            parts.append(report_issue19.details(name, r))
        elif name == "parquet_layouts":
            parts.append(report_layouts.details(r))
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
                peer = f", Benthos {c['benthos_standin']['cpu_us_per_kb_steady']}" if "benthos_standin" in c else ""
                cells.append(f"streamtap {c['streamtap']['cpu_us_per_kb_steady']} CPU-µs/kB "
                             f"(plain {c['plain_thread_per_stream']['cpu_us_per_kb_steady']}{peer}), "
                             f"load {c['streamtap']['load_average_1m']}")
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
    report_issue19.plot(results, RESULTS)
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
