"""Scenario 4: the same 100 Icecast streams into the same Kafka broker for the same time.

Contenders, one after the other against one Icecast station and one broker, each into its own
topic, each stopped by SIGINT after `seconds`:
- streamtap: `streamtap run` (Prism, unbounded) with the Kafka sink (acks=all, idempotent);
- plain: benchmarks/plain_capture.py, a thread per stream with urllib + one kafka-python producer
  (acks=all), ~1 s of audio (16 KiB) per record like streamtap's 1 s chunks;
- Benthos/Redpanda Connect: not run (see BENCHMARKS.md and `redpanda` in the result).

Metric: CPU-seconds per captured byte = user+sys of every process of the contender's tree
(psutil), divided by the value bytes that landed in its topic (counted with kcat). Reported
both for the whole run (start-up and drain included) and in steady state (CPU rate between the
warm-up and SIGINT over the average byte rate); the target uses steady state.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from benchmarks import services
from benchmarks.live import run_live_capture, run_monitored
from benchmarks.measure import load_average

NAME = "alternatives"

REDPANDA_NOTE = (
    "Redpanda Connect (github.com/redpanda-data/connect/v4) is marked 'not-to-use: not an "
    "open-source licence' in this environment's Go module listing, so it was not built. Its "
    "MIT-licensed core, github.com/redpanda-data/benthos/v4 v4.60.0, was fetched and checked: "
    "its core components (public/components/io and pure) have an http_client input but no "
    "kafka output (Kafka lives only in the non-open-source connect module), so (b) was skipped."
)


def _row(result, landed: dict, seconds: float) -> dict:
    landed_bytes = landed["bytes"]
    rate = landed_bytes / result.seconds if result.seconds else 0
    row = {
        "exit_code": result.exit_code,
        "seconds": round(result.seconds, 1),
        "landed_records": landed["records"],
        "landed_bytes": landed_bytes,
        "streams_in_topic": landed["keys"],
        "cpu_seconds_total": round(result.cpu_seconds, 2),
        "cpu_by_process": result.cpu_by_process,
        "cpu_cores_steady": round(result.steady_cpu_cores, 3) if result.steady_cpu_cores else None,
        "peak_rss_mib": round(result.peak_rss_bytes / 2**20, 1),
        "load_average_1m": result.load_average_1m,
        "cpu_us_per_kb_total": round(result.cpu_seconds / landed_bytes * 1e9, 2) if landed_bytes else None,
        "cpu_us_per_kb_steady": round(result.steady_cpu_cores / rate * 1e9, 2) if rate and result.steady_cpu_cores else None,
    }
    return row


def run(cfg: dict, repeats: int, workdir: Path, log) -> dict:
    streams, seconds = cfg["streams"], cfg["seconds"]
    warmup = min(30.0, seconds / 3)
    with services.icecast(cfg["mounts"], streams, cfg["bitrate"]) as station, services.kafka() as broker:
        bootstrap = broker.bootstrap_servers
        mounts = station.mounts
        urls = [station.mount_url(mounts[i % len(mounts)]) for i in range(streams)]

        topic = services.create_topic(bootstrap, f"streamtap-{uuid.uuid4().hex[:8]}")
        log(f"{NAME}: streamtap, {streams} streams for {seconds} s (load {load_average()})")
        config = {
            "sources": [{"id": f"radio-{i:04d}", "type": "http", "url": url} for i, url in enumerate(urls)],
            "chunk": {"max_bytes": 65536, "max_seconds": 1.0},
            "window_seconds": 10.0,
            "read": cfg.get("read", {}),
            "sinks": [{"type": "kafka", "bootstrap_servers": bootstrap, "topic": topic}],
        }
        result = run_live_capture(config, workdir / "streamtap", seconds, warmup=warmup)
        ours = _row(result, services.topic_bytes(bootstrap, topic), seconds)
        ours["reconnects"] = result.reconnects
        log(f"{NAME}: streamtap {ours['cpu_us_per_kb_steady']} CPU-us/kB steady, "
            f"{ours['cpu_us_per_kb_total']} total")

        topic = services.create_topic(bootstrap, f"plain-{uuid.uuid4().hex[:8]}")
        log(f"{NAME}: plain script (thread per stream), {streams} streams for {seconds} s (load {load_average()})")
        command = [sys.executable, str(Path(__file__).resolve().parents[1] / "plain_capture.py"),
                   "--bootstrap", bootstrap, "--topic", topic, "--seconds", str(seconds + 60),
                   "--read-bytes", str(cfg["plain_read_bytes"]), *urls]
        result = run_monitored(command, workdir / "plain", seconds, warmup=warmup)
        plain = _row(result, services.topic_bytes(bootstrap, topic), seconds)
        log(f"{NAME}: plain {plain['cpu_us_per_kb_steady']} CPU-us/kB steady, {plain['cpu_us_per_kb_total']} total")

    contenders = {"streamtap": ours, "plain_thread_per_stream": plain}
    ratio = (round(ours["cpu_us_per_kb_steady"] / plain["cpu_us_per_kb_steady"], 3)
             if ours["cpu_us_per_kb_steady"] and plain["cpu_us_per_kb_steady"] else None)
    ratio_total = (round(ours["cpu_us_per_kb_total"] / plain["cpu_us_per_kb_total"], 3)
                   if ours["cpu_us_per_kb_total"] and plain["cpu_us_per_kb_total"] else None)
    return {
        "streams": streams,
        "seconds": seconds,
        "contenders": contenders,
        "ratio_vs_plain_steady": ratio,
        "ratio_vs_plain_total": ratio_total,
        "redpanda_connect": {"run": False, "why": REDPANDA_NOTE},
        "pass": bool(ratio is not None and ratio < 1.0),
        "pass_note": "beats the plain script; Redpanda Connect/Benthos could not be run",
    }
