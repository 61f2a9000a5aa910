"""`python -m benchmarks` / `benchmarks/run.py`: runs the scenarios, writes results, BENCHMARKS.md.

    .venv/bin/python -m benchmarks                     # every scenario, full mode (~1 h: cost_curve ~25 min)
    .venv/bin/python -m benchmarks --scenario cost_curve --scenario startup   # issue #19
    .venv/bin/python -m benchmarks --quick             # every scenario, short and once (~5 min)
    .venv/bin/python -m benchmarks --scenario parquet_tcp --scenario kafka_producer
    .venv/bin/python -m benchmarks --report-only       # regenerate BENCHMARKS.md and the plot

Full-mode results go to benchmarks/results/<scenario>.json, --quick ones to
benchmarks/results/quick/<scenario>.json; BENCHMARKS.md shows the full result of each scenario
(or the quick one, marked, if there is no full one). Every result records the machine, the
1-minute load average, the configuration (benchmarks/config.py) and every repeat.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import logging
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import config as bench_config  # noqa: E402
from benchmarks import services  # noqa: E402
from benchmarks.measure import load_average, machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ORDER = ["parquet_tcp", "live_icecast", "kafka_producer", "alternatives", "sensors_kafka", "flink_scaling",
         "kinesis_put", "cost_curve", "startup", "parquet_layouts"]


def log(message: str) -> None:
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


def run_scenario(name: str, quick: bool, repeats: int | None, results_dir: Path | None = None,
                 overrides: dict | None = None) -> dict:
    cfg = bench_config.scenario_config(name, quick)
    cfg.update((overrides or {}).get(name, {}))
    # Long live scenarios set their own count ("repeats" in config.py); --repeats overrides all.
    count = 1 if quick else (repeats or cfg.get("repeats") or bench_config.REPEATS)
    module = importlib.import_module(f"benchmarks.scenarios.{name}")
    workdir = services.state_root() / name
    workdir.mkdir(parents=True, exist_ok=True)
    record = {
        "scenario": name,
        "title": cfg.get("title", name),
        "mode": "quick" if quick else "full",
        "repeats": count,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {k: v for k, v in cfg.items() if k != "title"},
    }
    started = time.monotonic()
    log(f"{name}: start ({record['mode']}, {count} repeat(s), load {record['machine']['load_average_1m']})")
    try:
        record["result"] = module.run(cfg, count, workdir, log)
    except Exception as error:  # noqa: BLE001 - one failing scenario must not stop the others
        log(f"{name}: FAILED: {error}")
        record["result"] = {"error": f"{type(error).__name__}: {error}",
                            "traceback": traceback.format_exc()[-4000:], "pass": False}
    record["duration_s"] = round(time.monotonic() - started, 1)
    record["load_average_1m_end"] = load_average()
    import streamtap

    record["streamtap_code"] = str(Path(streamtap.__file__).resolve().parent)
    out = (results_dir or RESULTS / ("quick" if quick else "")) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    log(f"{name}: done in {record['duration_s']} s -> {out}")
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", action="append", choices=ORDER,
                        help="run only this scenario (repeatable); default: all")
    parser.add_argument("--quick", action="store_true",
                        help="short runs, each measured once (~5 min in all)")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"repeats per measurement in full mode (default {bench_config.REPEATS})")
    parser.add_argument("--report-only", action="store_true", help="only regenerate BENCHMARKS.md")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="write the JSON results here instead (e.g. before/after comparisons); "
                        "BENCHMARKS.md is not regenerated then")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--set", action="append", default=[], metavar="SCENARIO.KEY=VALUE",
                        help="override one setting of benchmarks/config.py (VALUE is JSON or text), "
                        "e.g. --set live_icecast.streams=500")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    if args.list:
        for name in ORDER:
            print(f"{name:16} {bench_config.SCENARIOS[name]['title']}")
        return 0
    from benchmarks import report

    overrides: dict[str, dict] = {}
    for item in args.set:
        target, _, raw = item.partition("=")
        scenario, _, key = target.partition(".")
        if scenario not in ORDER or not key or not _:
            parser.error(f"--set {item!r}: expected SCENARIO.KEY=VALUE")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        overrides.setdefault(scenario, {})[key] = value

    if not args.report_only:
        names = args.scenario or ORDER
        started = time.monotonic()
        try:
            for name in names:
                run_scenario(name, args.quick, args.repeats, args.results_dir, overrides)
        finally:
            services.cleanup()
        log(f"all done in {time.monotonic() - started:.0f} s")
    if args.results_dir is None:
        path = report.generate()
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
