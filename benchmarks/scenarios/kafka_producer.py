"""Scenario 3: streamtap's Kafka sink vs Kafka's own ProducerPerformance on the same broker.

Per repeat, each into a fresh topic (1 partition) of the same single broker:
1. `org.apache.kafka.tools.ProducerPerformance --num-records N --record-size 65536
   --throughput -1 --producer-props acks=all` (Java client). Its own throughput figure is used
   (measured from its first send, JVM start-up excluded).
2. streamtap's sink alone: `Impulse | FlatMap(make N chunks of 64 KiB) | WriteChunksToKafka` on
   the FnApiRunner in this process, acks=all, idempotent (the sink's defaults). Timed from the
   first generated chunk to the end of the pipeline (the last bundle's records acknowledged);
   pipeline construction and start-up excluded, like the JVM's.
3. End to end, for information: `run_capture` of one TCP stream of the same bytes with the Kafka
   sink (reader, chunking, SDF, sink), timed like scenario 1.
"""

from __future__ import annotations

import io
import resource
import time
import uuid
from pathlib import Path

import apache_beam as beam
import numpy as np

from benchmarks import services
from benchmarks.kafka_tools import producer_performance
from benchmarks.measure import load_average, median

NAME = "kafka_producer"
_FIRST: dict[str, float] = {}


def _generate(_, records: int, size: int):
    from streamtap.chunk import make_chunk

    distinct = 16
    block = np.random.default_rng(3).bytes(size * distinct)
    _FIRST.setdefault("t", time.perf_counter())
    for seq in range(records):
        start = (seq % distinct) * size
        yield make_chunk("bench", "0123456789abcdef", seq, seq * size, block[start : start + size],
                         time.time())


def streamtap_sink(bootstrap: str, topic: str, records: int, size: int) -> dict:
    from streamtap.io.sinks.kafka import KafkaSink, WriteChunksToKafka

    _FIRST.clear()
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        (pipeline
         | "Impulse" >> beam.Impulse()
         | "MakeChunks" >> beam.FlatMap(_generate, records, size)
         | "WriteToKafka" >> WriteChunksToKafka(
             KafkaSink(bootstrap_servers=bootstrap, topic=topic)))
    ended = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    seconds = ended - _FIRST["t"]
    cpu = (usage.ru_utime - usage_before.ru_utime) + (usage.ru_stime - usage_before.ru_stime)
    return {"records": records, "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 2),
            "records_per_s": round(records / seconds, 1),
            "mb_per_s": round(records * size / seconds / 1e6, 1)}


def streamtap_end_to_end(bootstrap: str, topic: str, records: int, size: int) -> dict:
    from streamtap.plugins import parse_config
    from streamtap.pipelines.run import run_capture

    from benchmarks.scenarios.parquet_tcp import _start_feeder

    total = records * size
    feeder, port = _start_feeder(total)
    config = parse_config({
        "sources": [{"id": "fast", "type": "tcp", "address": f"127.0.0.1:{port}", "max_bytes": total}],
        "chunk": {"max_bytes": size, "max_seconds": 1.0},
        "window_seconds": 10,
        "sinks": [{"type": "kafka", "bootstrap_servers": bootstrap, "topic": topic}],
    })
    out = io.StringIO()
    started = time.perf_counter()
    try:
        code = run_capture(config, ["--runner=FnApiRunner"], status_interval=0, out=out)
    finally:
        seconds = time.perf_counter() - started
        feeder.kill()
        feeder.wait()
    if code != 0:
        raise RuntimeError(out.getvalue()[-2000:])
    return {"bytes": total, "seconds": round(seconds, 3), "mb_per_s": round(total / seconds / 1e6, 1)}


def run(cfg: dict, repeats: int, workdir: Path, log) -> dict:
    records, size = cfg["records"], cfg["record_bytes"]
    runs = []
    with services.kafka() as broker:
        bootstrap = broker.bootstrap_servers
        for index in range(repeats):
            load = load_average()
            topic = services.create_topic(bootstrap, f"perf-{uuid.uuid4().hex[:8]}")
            java = producer_performance(bootstrap, topic, records, size)
            # The same tool with streamtap's producer batching (its defaults: 16 KiB batches,
            # so every 64 KiB record is a batch of its own), for a like-for-like reference.
            topic = services.create_topic(bootstrap, f"perf-tuned-{uuid.uuid4().hex[:8]}")
            java_tuned = producer_performance(bootstrap, topic, records, size,
                                              ("batch.size=524288", "linger.ms=5"))
            topic = services.create_topic(bootstrap, f"sink-{uuid.uuid4().hex[:8]}")
            ours = streamtap_sink(bootstrap, topic, records, size)
            landed = services.topic_bytes(bootstrap, topic)
            topic = services.create_topic(bootstrap, f"e2e-{uuid.uuid4().hex[:8]}")
            e2e = streamtap_end_to_end(bootstrap, topic, records, size)
            row = {"load_average_1m": load, "producer_performance": java,
                   "producer_performance_streamtap_batching": java_tuned, "streamtap_sink": ours,
                   "streamtap_sink_topic": landed, "streamtap_end_to_end": e2e,
                   "ratio": round(ours["mb_per_s"] / java["mb_per_s"], 3),
                   "ratio_vs_streamtap_batching": round(ours["mb_per_s"] / java_tuned["mb_per_s"], 3),
                   "ratio_end_to_end": round(e2e["mb_per_s"] / java["mb_per_s"], 3)}
            log(f"{NAME} #{index + 1}: ProducerPerformance {java['mb_per_s']} MB/s "
                f"({java_tuned['mb_per_s']} MB/s with 512 KiB batches), streamtap sink "
                f"{ours['mb_per_s']} MB/s (ratio {row['ratio']}), end to end {e2e['mb_per_s']} MB/s "
                f"(load {load})")
            runs.append(row)
    result = {
        "runs": runs,
        "producer_performance_mb_per_s": median([r["producer_performance"]["mb_per_s"] for r in runs]),
        "streamtap_mb_per_s": median([r["streamtap_sink"]["mb_per_s"] for r in runs]),
        "streamtap_end_to_end_mb_per_s": median([r["streamtap_end_to_end"]["mb_per_s"] for r in runs]),
        "producer_performance_streamtap_batching_mb_per_s": median(
            [r["producer_performance_streamtap_batching"]["mb_per_s"] for r in runs]),
        "ratio": median([r["ratio"] for r in runs]),
        "ratio_vs_streamtap_batching": median([r["ratio_vs_streamtap_batching"] for r in runs]),
        "ratio_end_to_end": median([r["ratio_end_to_end"] for r in runs]),
        "target_ratio": cfg["target_ratio"],
    }
    result["pass"] = result["ratio"] >= cfg["target_ratio"]
    return result
