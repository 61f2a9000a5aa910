"""The Kafka sink against real brokers: round trip, record layout, size limits, failures."""

from __future__ import annotations

import random
import subprocess
import threading
import time
import uuid

import apache_beam as beam
import pytest
from apache_beam.transforms import window

from streamtap.chunk import Chunk, make_chunk
from streamtap.config import ChunkSettings, PipelineConfig
from streamtap.io.sinks.kafka import KafkaSink, WriteChunksToKafka, read_kafka_chunks
from streamtap.io.sinks.kafka.record import chunk_headers
from streamtap.services.process import free_port
from tests.fixtures.kafka import create_topic, unique_topic

STREAMS = ("radio1", "radio2", "sensor.7")


def make_test_chunk(index: int) -> Chunk:
    """Deterministic chunk `index`: three interleaved streams, sizes from 1 byte to 64 KiB."""
    stream = STREAMS[index % len(STREAMS)]
    seq = index // len(STREAMS)
    rng = random.Random(index)
    size = (1, 7, 65536, 4096, 0x8000 + 3)[seq % 5]
    tags = {"content-type": "audio/mpeg", "user.site": "Zürich"}
    if seq % 4 == 1:
        tags["icy.title"] = "Ünïcode — a, b=c;d"
    return make_chunk(
        stream,
        f"session-{stream}-1",
        seq,
        seq * 70000,
        rng.randbytes(size),
        1_796_000_000.0 + index / 7,
        discontinuity=(seq == 0),
        tags=tags,
    )


# Test code to run while a pipeline writes: id -> {chunk index: callable}. Pipelines run in this
# process (FnApiRunner), and the DoFn reaches the hooks through this module instead of pickling
# them (timers and services hold locks).
_HOOKS: dict[str, dict] = {}


def _build(index: int, throttle: float, hooks_id: str) -> Chunk:
    hook = _HOOKS.get(hooks_id, {}).get(index)
    if hook is not None:
        hook()
    if throttle:
        time.sleep(throttle)
    return make_test_chunk(index)


def write(
    bootstrap_servers: str,
    topic: str,
    count: int,
    throttle: float = 0.0,
    hooks=None,
    windowed: bool = False,
    **options,
):
    """Runs a bounded pipeline writing chunks 0..count-1; returns the pipeline result.

    `throttle` seconds pass between chunks; `hooks[i]()` runs just before chunk i is built
    (building and writing are fused into one stage, so chunks < i have been sent by then).
    """
    hooks_id = uuid.uuid4().hex
    _HOOKS[hooks_id] = dict(hooks or {})
    pipeline = beam.Pipeline(runner="FnApiRunner")
    chunks = (
        pipeline
        | "Indexes" >> beam.Create(list(range(count)))
        | "Chunks" >> beam.Map(_build, throttle, hooks_id)
    )
    if windowed:  # as the capture pipelines hand chunks to sinks: event time, fixed windows
        chunks = (
            chunks
            | "Stamp" >> beam.Map(lambda c: window.TimestampedValue(c, c.event_time))
            | "Window" >> beam.WindowInto(window.FixedWindows(2))
        )
    sink = KafkaSink(bootstrap_servers=bootstrap_servers, topic=topic, **options)
    _ = chunks | "Write" >> WriteChunksToKafka(sink)
    try:
        result = pipeline.run()
        result.wait_until_finish()
    finally:
        del _HOOKS[hooks_id]
    return result


def expected(count: int) -> list[Chunk]:
    return sorted((make_test_chunk(i) for i in range(count)), key=lambda c: (c.stream_id, c.seq))


def dedup(chunks: list[Chunk]) -> list[Chunk]:
    seen: dict[tuple, Chunk] = {}
    for chunk in chunks:
        assert seen.setdefault(chunk.key, chunk) == chunk, f"{chunk.key} differs between copies"
    return sorted(seen.values(), key=lambda c: (c.stream_id, c.seq))


def config_with(sink: KafkaSink, max_bytes: int = 65536) -> PipelineConfig:
    return PipelineConfig(sinks=[sink], chunk=ChunkSettings(max_bytes=max_bytes))


# --- round trip --------------------------------------------------------------------------------


def test_round_trip_is_byte_exact(kafka):
    topic = create_topic(kafka.bootstrap_servers, unique_topic(), partitions=3)
    result = write(kafka.bootstrap_servers, topic, 60, windowed=True)

    back = list(read_kafka_chunks(kafka.bootstrap_servers, topic))
    want = expected(60)
    assert len(back) == len(want)
    for got, chunk in zip(back, want):
        assert got == chunk  # every field: stream_id ... tags, payload byte for byte
        assert got.checksum_ok()
    assert any(c.discontinuity for c in back) and not all(c.discontinuity for c in back)

    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query()["counters"]
        if c.key.metric.namespace == "streamtap"
    }
    assert counters["radio1.kafka_records"] == 20
    assert counters["radio1.kafka_bytes"] == sum(
        len(c.payload) for c in want if c.stream_id == "radio1"
    )

    only = list(read_kafka_chunks(kafka.bootstrap_servers, topic, stream_id="sensor.7"))
    assert only == [c for c in want if c.stream_id == "sensor.7"]


def test_kcat_sees_key_value_and_headers(kafka):
    topic = create_topic(kafka.bootstrap_servers, unique_topic())
    chunk = make_chunk(
        "radio1",
        "s-1",
        5,
        1234,
        b"plain text payload",
        1796000000.25,
        discontinuity=True,
        tags={"title": "hello"},
    )
    pipeline = beam.Pipeline(runner="FnApiRunner")
    sink = KafkaSink(bootstrap_servers=kafka.bootstrap_servers, topic=topic)
    _ = pipeline | beam.Create([chunk]) | WriteChunksToKafka(sink)
    pipeline.run().wait_until_finish()

    out = subprocess.run(
        [
            "kcat",
            "-b",
            kafka.bootstrap_servers,
            "-t",
            topic,
            "-C",
            "-e",
            "-q",
            "-f",
            "%k|%h|%S|%s\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    key, headers, size, value = out.rstrip("\n").split("|")
    assert key == "radio1"
    assert value == "plain text payload" and int(size) == len(chunk.payload)
    assert dict(h.split("=", 1) for h in headers.split(",")) == {
        "session": "s-1",
        "seq": "5",
        "offset": "1234",
        "event_time": "1796000000.25",
        "crc32c": str(chunk.crc32c),
        "discontinuity": "true",
        "tag.title": "hello",
    }


def test_headers_are_utf8_text():
    chunk = make_chunk("a", "s", 1, 2, b"x", 0.1 + 0.2, tags={"t": "é"})
    assert dict(chunk_headers(chunk)) == {
        "session": b"s",
        "seq": b"1",
        "offset": b"2",
        "event_time": b"0.30000000000000004",
        "crc32c": str(chunk.crc32c).encode(),
        "discontinuity": b"false",
        "tag.t": "é".encode(),
    }


# --- config checks without I/O -----------------------------------------------------------------


def test_check_chunk_size_names_both_numbers_and_the_fix():
    sink = KafkaSink(bootstrap_servers="127.0.0.1:9092", topic="t")
    assert sink.check_chunk_size(65536, "sinks[0]") == []
    (error,) = sink.check_chunk_size(1048576, "sinks[0]")
    assert "1048576" in error and "max_request_size=1048576" in error
    assert "chunk.max_bytes" in error and "sinks[0].max_request_size" in error
    bigger = KafkaSink(bootstrap_servers="127.0.0.1:9092", topic="t", max_request_size=2 << 20)
    assert bigger.check_chunk_size(1048576, "sinks[0]") == []


def test_validate_rejects_bad_values_and_hides_the_password():
    sink = KafkaSink(
        bootstrap_servers="127.0.0.1",
        topic="bad topic",
        compression="brotli",
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password="s3cret-value",
        partitions=3,
    )
    errors = "\n".join(sink.validate("sinks[1]"))
    assert "sinks[1].bootstrap_servers: '127.0.0.1' is not host:port" in errors
    assert "sinks[1].topic:" in errors
    assert "sinks[1].compression: must be one of" in errors
    assert "sinks[1].partitions: only used when the sink creates the topic" in errors
    assert "s3cret-value" not in repr(sink) and "s3cret-value" not in errors

    sasl = KafkaSink(bootstrap_servers="h:1", topic="t", security_protocol="SASL_PLAINTEXT")
    errors = "\n".join(sasl.validate("sinks[0]"))
    assert "sinks[0].sasl_mechanism" in errors and "sinks[0].sasl_password: required" in errors
    assert KafkaSink(bootstrap_servers="h:1,h:2", topic="t").validate("sinks[0]") == []

    with pytest.raises(ValueError, match="WriteChunksToKafka.linger_ms: must be >= 0"):
        WriteChunksToKafka(KafkaSink(bootstrap_servers="127.0.0.1:9092", topic="t", linger_ms=-1))


# --- no import-time side effects ---------------------------------------------------------------

# Run in a fresh interpreter: this test process has opened Kafka clients in other tests already.
_SIDE_EFFECTS = """
import json, logging, sys
from kafka.record import default_records, util

original = default_records.calc_crc32c
loggers = ("kafka.admin.client", "kafka.net.connection", "kafka.protocol.parser")

def state():
    return {
        "crc32c_patched": default_records.calc_crc32c is not original,
        "filters": sum(len(logging.getLogger(name).filters) for name in loggers),
    }

from streamtap.plugins import parse_config
from streamtap.io.sinks.kafka.write import _WriteChunksFn

config = parse_config({
    "sources": [{"id": "s", "type": "synthetic"}],
    "sinks": [{"type": "kafka", "bootstrap_servers": sys.argv[1], "topic": "t"}],
})
(sink,) = config.sinks
sink.transform(config)  # building the pipeline's write step changes nothing either
parsed = state()
writer = _WriteChunksFn(sink)
writer.setup()  # what a worker does before the first bundle: opens the producer
writer.teardown()
print(json.dumps({"parsed": parsed, "writer": state(), "pure_python_crc": util.crc32c_c is None}))
"""


def test_parsing_a_config_leaves_kafka_python_alone_and_a_writer_changes_it(kafka):
    import json
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _SIDE_EFFECTS, kafka.bootstrap_servers],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["parsed"] == {"crc32c_patched": False, "filters": 0}
    # The C checksum replaces kafka-python's pure-Python one only where the latter is in use.
    assert result["writer"] == {"crc32c_patched": result["pure_python_crc"], "filters": 3}


# --- preflight ---------------------------------------------------------------------------------


def test_preflight_unreachable_brokers(monkeypatch):
    monkeypatch.setattr(KafkaSink, "preflight_timeout", 2.0)
    address = f"127.0.0.1:{free_port()}"
    sink = KafkaSink(bootstrap_servers=address, topic="t")
    (error,) = sink.preflight(config_with(sink))
    assert error.startswith(
        f"sinks[0]: cannot reach Kafka at {address}: is it running? (streamtap services up kafka)"
    )


def test_preflight_creates_topic_and_checks_limits(kafka):
    topic = unique_topic()
    missing = KafkaSink(bootstrap_servers=kafka.bootstrap_servers, topic=topic)
    (error,) = missing.preflight(config_with(missing))
    assert f"topic {topic!r} does not exist" in error and "create_topic: true" in error

    sink = KafkaSink(
        bootstrap_servers=kafka.bootstrap_servers, topic=topic, create_topic=True, partitions=2
    )
    assert sink.preflight(config_with(sink)) == []
    assert sink.preflight(config_with(sink)) == []  # exists now: fine as well
    assert len(list(read_kafka_chunks(kafka.bootstrap_servers, topic))) == 0

    small = create_topic(
        kafka.bootstrap_servers, unique_topic(), configs={"max.message.bytes": "50000"}
    )
    sink = KafkaSink(bootstrap_servers=kafka.bootstrap_servers, topic=small)
    (error,) = sink.preflight(config_with(sink, max_bytes=65536))
    assert "65536" in error and "max.message.bytes=50000" in error
    assert "chunk.max_bytes" in error
    # Small chunks fit, but the producer's default 512 KiB batches would not.
    (error,) = sink.preflight(config_with(sink, max_bytes=32768))
    assert "sinks[0].batch_size: producer batches of 524288 bytes" in error
    sink.batch_size = 40000
    assert sink.preflight(config_with(sink, max_bytes=32768)) == []


# --- failures ----------------------------------------------------------------------------------


def test_rejected_record_fails_the_bundle_with_the_reason(kafka):
    topic = create_topic(
        kafka.bootstrap_servers, unique_topic(), configs={"max.message.bytes": "50000"}
    )
    started = time.monotonic()
    with pytest.raises(Exception, match="Kafka rejected chunk .* seq 2 .*max.message.bytes"):
        write(kafka.bootstrap_servers, topic, 9)  # chunks 6..8 (seq 2) are 64 KiB
    assert time.monotonic() - started < 60

    # A record over the producer's own limit fails before it is sent.
    with pytest.raises(Exception, match="does not fit the producer's max_request_size=40000"):
        write(kafka.bootstrap_servers, topic, 9, max_request_size=40000, batch_size=16384)


def test_brokers_down_at_start_then_back(kafka, caplog, monkeypatch):
    import streamtap.io.sinks.kafka.write

    # Give up each connection attempt after 1.5 s (10 s in production) so that the writer
    # reports the outage before the broker is back.
    monkeypatch.setattr(streamtap.io.sinks.kafka.write, "_CONNECT_ATTEMPT_MS", 1500)
    topic = create_topic(kafka.bootstrap_servers, unique_topic())
    kafka.stop_all_brokers()
    restarter = threading.Timer(4.0, kafka.start_all_brokers)
    restarter.start()
    try:
        with caplog.at_level("ERROR", logger="streamtap.io.sinks.kafka.write"):
            write(kafka.bootstrap_servers, topic, 12)
    finally:
        restarter.join()
        kafka.start_all_brokers()  # no-op unless the timer failed
    assert f"cannot reach Kafka at {kafka.bootstrap_servers}" in caplog.text
    assert dedup(list(read_kafka_chunks(kafka.bootstrap_servers, topic))) == expected(12)


def test_all_brokers_down_mid_write_then_back(kafka, caplog, monkeypatch):
    import streamtap.io.sinks.kafka.write

    # Fail undelivered records after 3 s instead of 120 s, so the writer's resend loop runs.
    monkeypatch.setattr(streamtap.io.sinks.kafka.write, "_REQUEST_TIMEOUT_MS", 2000)
    monkeypatch.setattr(streamtap.io.sinks.kafka.write, "_DELIVERY_TIMEOUT_MS", 3000)
    topic = create_topic(kafka.bootstrap_servers, unique_topic())
    restarter = threading.Timer(5.0, kafka.start_all_brokers)

    def crash() -> None:
        kafka.stop_all_brokers(kill=True)
        restarter.start()

    try:
        with caplog.at_level("ERROR", logger="streamtap.io.sinks.kafka.write"):
            write(kafka.bootstrap_servers, topic, 40, throttle=0.02, hooks={15: crash})
    finally:
        restarter.join()
        kafka.start_all_brokers()
    assert "still retrying sending" in caplog.text
    assert dedup(list(read_kafka_chunks(kafka.bootstrap_servers, topic))) == expected(40)


def test_cluster_keeps_writing_when_a_broker_is_killed(kafka_cluster_healed):
    cluster = kafka_cluster_healed
    topic = create_topic(
        cluster.bootstrap_servers, unique_topic(), partitions=3, replication_factor=3
    )
    victim = partition_leaders(cluster.bootstrap_servers, topic)[0]  # node id, 1-based

    count = 150
    # SIGKILL the leader of partition 0 after 50 chunks; 100 more follow over ~3 s, while the
    # controller notices (broker.session.timeout.ms=6000) and elects new leaders.
    write(
        cluster.bootstrap_servers,
        topic,
        count,
        throttle=0.03,
        hooks={50: lambda: cluster.kill_broker(victim - 1)},
    )

    assert not cluster.broker_running(victim - 1)
    assert victim not in partition_leaders(cluster.bootstrap_servers, topic)
    back = list(read_kafka_chunks(cluster.bootstrap_servers, topic))
    assert dedup(back) == expected(count)


def partition_leaders(bootstrap_servers: str, topic: str) -> list[int]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers)
    try:
        (described,) = admin.describe_topics([topic])
    finally:
        admin.close()
    return [
        p["leader_id"] for p in sorted(described["partitions"], key=lambda p: p["partition_index"])
    ]


def test_example_config_loads():
    from pathlib import Path

    from streamtap.plugins import load_config

    example = Path(__file__).parents[3] / "examples" / "kafka.yaml"
    config = load_config(example)
    (sink,) = config.sinks
    assert isinstance(sink, KafkaSink)
    assert (sink.bootstrap_servers, sink.topic, sink.create_topic) == (
        "127.0.0.1:9092",
        "raw-streams",
        True,
    )
    assert isinstance(sink.transform(config), WriteChunksToKafka)


def test_per_stream_counters_follow_read_per_stream_metrics(kafka):
    from streamtap.config import ReadSettings

    topic = create_topic(kafka.bootstrap_servers, unique_topic(), partitions=1)
    for per_stream in (False, True):
        sink = KafkaSink(bootstrap_servers=kafka.bootstrap_servers, topic=topic)
        config = PipelineConfig(sinks=[sink], read=ReadSettings(per_stream_metrics=per_stream))
        pipeline = beam.Pipeline(runner="FnApiRunner")
        _ = pipeline | beam.Create([make_test_chunk(i) for i in range(6)]) | sink.transform(config)
        result = pipeline.run()
        result.wait_until_finish()
        counters = {
            c.key.metric.name: c.committed
            for c in result.metrics().query()["counters"]
            if c.key.metric.namespace == "streamtap"
        }
        assert counters["kafka_records"] == 6  # the totals always
        per_stream_names = [name for name in counters if name.endswith(".kafka_records")]
        assert bool(per_stream_names) == per_stream, counters
        if per_stream:
            assert sum(counters[name] for name in per_stream_names) == 6
