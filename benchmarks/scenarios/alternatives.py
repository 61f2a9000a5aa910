"""Scenario 4: the same 100 Icecast streams into the same Kafka broker for the same time.

Contenders, one after the other against one Icecast station and one broker, each into its own
topic, each stopped by SIGINT after `seconds`:
- streamtap: `streamtap run` (Prism, unbounded) with the Kafka sink (acks=all, idempotent);
- plain: benchmarks/plain_capture.py, a thread per stream with urllib + one kafka-python producer
  (acks=all), ~1 s of audio (16 KiB) per record like streamtap's 1 s chunks;
- Benthos stand-in for Redpanda Connect (benchmarks/peers/benthos): Benthos' http_client input in
  stream mode, one per stream under a `broker` input, cut into the same 16 KiB records, and a
  franz-go output modelled on Redpanda Connect's kafka_franz (acks=all, idempotent); Redpanda
  Connect itself cannot be built here (REDPANDA_NOTE, `redpanda_connect` in the result).

Metric: CPU-seconds per captured byte = user+sys of every process of the contender's tree
(psutil), divided by the value bytes that landed in its topic (counted with kcat). Reported
both for the whole run (start-up and drain included) and in steady state (CPU rate between the
warm-up and SIGINT over the average byte rate); the target uses steady state.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from benchmarks import services
from benchmarks.live import run_live_capture, run_monitored
from benchmarks.measure import load_average
from benchmarks.peers import benthos
from benchmarks.profiling import summarize

NAME = "alternatives"

_VERSIONS = benthos.versions()
REDPANDA_NOTE = (
    "Redpanda Connect (github.com/redpanda-data/connect/v4) is marked 'not-to-use: not an "
    "open-source licence' in this environment's Go module listing, so it was not built. Run "
    "instead as (b): the closest buildable stand-in (benchmarks/peers/benthos). Its engine and "
    f"input are Redpanda Connect's own code: Benthos {_VERSIONS['benthos']} "
    "(github.com/redpanda-data/benthos/v4, MIT), the stream engine Redpanda Connect is built on, "
    "with its http_client input in stream mode (one per stream under a broker input, reconnect "
    "on, a chunker scanner cutting the plain script's records, 16 KiB). Its Kafka output is "
    "not: kafka_franz lives only in the connect module, so a stand-in for it was written here "
    f"with the same client library, franz-go {_VERSIONS['franz_go']}, and kafka_franz's "
    "defaults (acks=all, idempotent producer, max_in_flight 10, no batching, each batch waited "
    "for before it is acked); compression none, as in the other two contenders (kafka_franz "
    "would try snappy)."
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


def _go_version() -> str | None:
    try:
        return subprocess.run(["go", "version"], check=False, capture_output=True, text=True,
                              timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return round(ours / theirs, 3) if ours and theirs else None


def run(cfg: dict, repeats: int, workdir: Path, log) -> dict:
    streams, seconds = cfg["streams"], cfg["seconds"]
    warmup = min(30.0, seconds / 3)
    # Built before anything is measured: the first build compiles Benthos (~2 min of 2 cores).
    standin = {"run": False, **_VERSIONS, "go": _go_version(), "output": "kafka_franz_standin",
               "source": "benchmarks/peers/benthos"}
    try:
        binary = benthos.build()
    except (benthos.BuildError, OSError) as error:
        binary = None
        standin["error"] = f"{type(error).__name__}: {error}"
        log(f"{NAME}: Benthos stand-in not built, (b) will be skipped: {error}")
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
        # profile_seconds > 0: py-spy samples streamtap from the warm-up on (left out of the
        # steady CPU rate) and its summary goes into the result.
        result = run_live_capture(config, workdir / "streamtap", seconds, warmup=warmup,
                                  profile_seconds=cfg.get("profile_seconds", 0),
                                  profile_after=warmup)
        ours = _row(result, services.topic_bytes(bootstrap, topic), seconds)
        ours["reconnects"] = result.reconnects
        ours["error_examples"] = result.error_examples()
        if result.profile is not None:
            ours["profile"] = summarize(result.profile, top=25)
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

        peer = None
        if binary is not None:
            topic = services.create_topic(bootstrap, f"benthos-{uuid.uuid4().hex[:8]}")
            log(f"{NAME}: Benthos stand-in, {streams} streams for {seconds} s "
                f"(load {load_average()})")
            config_path = workdir / "benthos" / "benthos.yaml"
            config_path.parent.mkdir(parents=True, exist_ok=True)
            config_path.write_text(
                benthos.config_yaml(urls, bootstrap, topic, cfg["plain_read_bytes"]))
            result = run_monitored(benthos.command(binary, config_path), workdir / "benthos",
                                   seconds, warmup=warmup)
            peer = _row(result, services.topic_bytes(bootstrap, topic), seconds)
            if result.exit_code != 0:
                peer["output_tail"] = result.output_tail
            standin["run"] = True
            log(f"{NAME}: Benthos stand-in {peer['cpu_us_per_kb_steady']} CPU-us/kB steady, "
                f"{peer['cpu_us_per_kb_total']} total")

    contenders = {"streamtap": ours, "plain_thread_per_stream": plain}
    if peer is not None:
        contenders["benthos_standin"] = peer
    ratio = _ratio(ours["cpu_us_per_kb_steady"], plain["cpu_us_per_kb_steady"])
    ratio_benthos = _ratio(ours["cpu_us_per_kb_steady"], peer and peer["cpu_us_per_kb_steady"])
    return {
        "streams": streams,
        "seconds": seconds,
        "contenders": contenders,
        "ratio_vs_plain_steady": ratio,
        "ratio_vs_plain_total": _ratio(ours["cpu_us_per_kb_total"], plain["cpu_us_per_kb_total"]),
        "ratio_vs_benthos_steady": ratio_benthos,
        "ratio_vs_benthos_total": _ratio(ours["cpu_us_per_kb_total"],
                                         peer and peer["cpu_us_per_kb_total"]),
        "redpanda_connect": {"run": False, "why": REDPANDA_NOTE},
        "benthos_standin": standin,
        "pass": bool(ratio is not None and ratio < 1.0
                     and ratio_benthos is not None and ratio_benthos < 1.0),
        "pass_note": "streamtap's steady CPU per landed kB below both the plain script's and the "
                     "Benthos stand-in's"
                     + ("" if peer else " (the stand-in did not run, so not met)"),
    }
