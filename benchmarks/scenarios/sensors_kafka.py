"""Scenario 5: 100 synthetic sensors at 1,000 float32 samples/s each, chunked, to Kafka.

`streamtap run` on Prism (unbounded, stopped by SIGINT) with `type: synthetic` sources (generated
in real time in the capture process itself, so their generation counts as capture CPU), 1 s chunks
(4 KB each), the Kafka sink. Checked: no gap (`verify kafka://...`); reported: CPU-seconds per
sample (whole tree: Python + Prism), in steady state and for the whole run.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from benchmarks import services
from benchmarks.live import run_live_capture
from benchmarks.measure import load_average

NAME = "sensors_kafka"


def run(cfg: dict, repeats: int, workdir: Path, log) -> dict:
    from streamtap.captures import read_capture, verify

    sensors, seconds = cfg["sensors"], cfg["seconds"]
    size = {"int16": 2, "int32": 4, "float32": 4, "float64": 8}[cfg["sample_format"]]
    with services.kafka() as broker:
        bootstrap = broker.bootstrap_servers
        topic = services.create_topic(bootstrap, f"sensors-{uuid.uuid4().hex[:8]}")
        config = {
            "sources": [
                {"id": f"sensor-{i:03d}", "type": "synthetic", "kind": "sensor", "rate": cfg["rate"],
                 "sample_format": cfg["sample_format"], "seed": i}
                for i in range(sensors)
            ],
            "chunk": {"max_bytes": 65536, "max_seconds": cfg["chunk_max_seconds"]},
            "window_seconds": cfg["window_seconds"],
            "sinks": [{"type": "kafka", "bootstrap_servers": bootstrap, "topic": topic}],
        }
        log(f"{NAME}: {sensors} sensors x {cfg['rate']:g} samples/s for {seconds} s (load {load_average()})")
        result = run_live_capture(config, workdir / "sensors", seconds, warmup=min(20.0, seconds / 3))
        reports = verify(read_capture(f"kafka://{bootstrap}/{topic}"))
    problems = {sid: r.problems[:3] for sid, r in reports.items() if not r.ok}
    landed_bytes = sum(r.bytes for r in reports.values())
    # Samples that landed in Kafka (what the capture delivered), not what the readers received.
    captured = landed_bytes
    samples = captured // size
    rate = samples / result.seconds if result.seconds else 0
    row = {
        "sensors": sensors,
        "seconds": round(result.seconds, 1),
        "exit_code": result.exit_code,
        "samples": samples,
        "received_bytes": result.total_bytes,
        "sessions": sum(r.sessions for r in reports.values()),
        "discontinuities": sum(r.discontinuities for r in reports.values()),
        "samples_per_s": round(rate),
        "expected_samples_per_s": round(sensors * cfg["rate"]),
        "streams_in_topic": len(reports),
        "streams_with_problems": len(problems),
        "problem_examples": dict(list(problems.items())[:3]),
        "landed_bytes": landed_bytes,
        "cpu_seconds_total": round(result.cpu_seconds, 2),
        "cpu_cores_steady": round(result.steady_cpu_cores, 3) if result.steady_cpu_cores else None,
        "cpu_cores_steady_by_process": result.steady_cpu_by_process,
        "peak_rss_mib": round(result.peak_rss_bytes / 2**20, 1),
        "load_average_1m": result.load_average_1m,
        "cpu_us_per_sample_total": round(result.cpu_seconds / samples * 1e6, 3) if samples else None,
        "cpu_us_per_sample_steady": round(result.steady_cpu_cores / rate * 1e6, 3) if rate and result.steady_cpu_cores else None,
    }
    row["pass"] = (result.exit_code == 0 and not problems and len(reports) == sensors)
    log(f"{NAME}: {row['samples_per_s']} samples/s, {row['cpu_us_per_sample_steady']} CPU-us/sample "
        f"steady, gaps: {len(problems)} streams, pass={row['pass']}")
    return row
