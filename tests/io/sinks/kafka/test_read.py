"""Reading a topic back against a real broker: resume from the partitions' tails, and lazy reads
for verify and reassemble in bounded memory."""

from __future__ import annotations

import hashlib
import os
import time
import tracemalloc

import pytest

from streamtap.captures import read_capture, reassemble, verify
from streamtap.chunk import Chunk, make_chunk
from streamtap.io.sinks.kafka.read import read_location, stream_ends
from streamtap.io.sinks.kafka.record import chunk_headers, partition_for, record_timestamp_ms
from streamtap.io.sources.synthetic import synthetic_bytes
from streamtap.plugins import parse_config
from tests.fixtures.kafka import create_topic, unique_topic
from tests.helpers import capture, stream_bytes

SENSORS = ("sensor0", "sensor1", "sensor2", "sensor3", "sensor4")


def _chunks(stream_id: str, count: int, size: int = 100, first_seq: int = 0) -> list[Chunk]:
    start = time.time() - 3600
    return [
        make_chunk(stream_id, "s1", seq, seq * size, os.urandom(size), start + seq / 100)
        for seq in range(first_seq, first_seq + count)
    ]


def _produce(servers: str, topic: str, records: list) -> None:
    """Sends chunks (as the sink does: key, headers, timestamp) or raw (key, value) pairs."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5,
                             max_request_size=2 * 2**20)
    try:
        for item in records:
            if isinstance(item, Chunk):
                producer.send(topic, key=item.stream_id.encode(), value=item.payload,
                              headers=chunk_headers(item), timestamp_ms=record_timestamp_ms(item))
            else:
                producer.send(topic, key=item[0], value=item[1])
        producer.flush()
    finally:
        producer.close()


def _add_partitions(servers: str, topic: str, total: int) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewPartitions

    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        admin.create_partitions({topic: NewPartitions(total_count=total)})
    finally:
        admin.close()
    time.sleep(1)  # metadata reaches every client


def test_records_land_in_the_partition_their_stream_id_hashes_to(kafka):
    """What resume relies on: the producer's partitioner is `partition_for`."""
    topic = create_topic(kafka.bootstrap_servers, unique_topic("hash"), partitions=5)
    _produce(kafka.bootstrap_servers, topic, [c for s in SENSORS for c in _chunks(s, 3)])
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, consumer_timeout_ms=5000,
                             auto_offset_reset="earliest")
    partitions = [TopicPartition(topic, p) for p in range(5)]
    consumer.assign(partitions)
    seen = {(record.key.decode(), record.partition) for record in consumer}
    consumer.close()
    assert seen == {(s, partition_for(s, 5)) for s in SENSORS}
    assert len({p for _, p in seen}) >= 3  # the streams are spread


def test_a_second_run_into_the_topic_continues_every_stream(kafka):
    """Two `streamtap run`s into one topic of 3 partitions are one capture: seq and offset go
    on, verify passes over both runs, the bytes are the sources' own, start to end."""
    topic = create_topic(kafka.bootstrap_servers, unique_topic("resume"), partitions=3)
    config = {
        "sources": [
            {"id": s, "type": "synthetic", "rate": 2000, "sample_format": "int16", "seed": i}
            for i, s in enumerate(SENSORS)
        ],
        "chunk": {"max_bytes": 65536, "max_seconds": 0.5},
        "window_seconds": 1,
        "sinks": [{"type": "kafka", "bootstrap_servers": kafka.bootstrap_servers,
                   "topic": topic}],
    }
    assert len({partition_for(s, 3) for s in SENSORS}) >= 2
    location = f"kafka://{kafka.bootstrap_servers}/{topic}"

    first = capture(config, duration=3)
    assert "continuing the capture" not in first
    after_first = verify(read_capture(location))
    second = capture(config, duration=3)

    reports = verify(read_capture(location), expected=SENSORS)
    assert {s: r.problems for s, r in reports.items() if not r.ok} == {}
    sources = {source.id: source for source in parse_config(config).sources}
    for stream_id in SENSORS:
        earlier = after_first[stream_id].chunks
        assert f"{stream_id}: continuing the capture at seq {earlier}, " in second
        assert reports[stream_id].chunks > earlier  # the second run's chunks follow on
        data = stream_bytes(location, stream_id)
        assert data == synthetic_bytes(sources[stream_id], 0, len(data) // 2)
    # and a third start would continue after the second run
    ends = stream_ends(kafka.bootstrap_servers, topic, list(SENSORS))
    assert {s: seq for s, (seq, _) in ends.items()} == {s: reports[s].chunks for s in SENSORS}


def test_resume_reads_only_the_tails_of_the_partitions(kafka):
    """A record at the start of the partition that is not a chunk would fail any read that
    reaches it: resume never does while every stream's last record is near the end."""
    topic = create_topic(kafka.bootstrap_servers, unique_topic("tails"), partitions=1)
    poison = (b"old", b"not a chunk record: reading it is an error")
    _produce(kafka.bootstrap_servers, topic,
             [poison] + _chunks("old", 3) + _chunks("busy", 3000) + _chunks("quiet", 5)
             + _chunks("busy", 10, first_seq=3000))
    ends = stream_ends(kafka.bootstrap_servers, topic, ["busy", "quiet"])
    assert ends == {"busy": (3010, 3010 * 100), "quiet": (5, 500)}
    # The cost model: a stream that is further back is read back to, and a stream id that
    # never wrote to the topic costs a read of its whole partition (here: up to the poison).
    with pytest.raises(ValueError, match=rf"{topic}\[0\] offset 0: not a streamtap chunk"):
        stream_ends(kafka.bootstrap_servers, topic, ["busy", "old"])


def test_resume_finds_a_stream_after_partitions_were_added(kafka):
    """Adding partitions moves keys: a stream that has not written since is not where its key
    hashes now; the keys outside their partitions give it away and the rest is read."""
    topic = create_topic(kafka.bootstrap_servers, unique_topic("grown"), partitions=1)
    moved = [s for s in SENSORS if partition_for(s, 4) != 0][:2]
    _produce(kafka.bootstrap_servers, topic, [c for s in moved for c in _chunks(s, 700)])
    _add_partitions(kafka.bootstrap_servers, topic, 4)
    assert stream_ends(kafka.bootstrap_servers, topic, moved) == {
        s: (700, 700 * 100) for s in moved
    }


class _Digest:
    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return len(data)


def test_reassemble_streams_a_topic_in_bounded_memory(kafka):
    """48 MiB of one stream in a topic of 2 partitions: reassemble with a reorder buffer of
    256 KiB succeeds (the chunks come in seq order) and never holds more than a fraction of the
    stream (read lazily, not sorted in memory)."""
    topic = create_topic(kafka.bootstrap_servers, unique_topic("lazy"), partitions=2)
    big = _chunks("big", 768, size=65536)
    _produce(kafka.bootstrap_servers, topic, big + _chunks("small", 50))
    want = hashlib.sha256(b"".join(c.payload for c in big)).hexdigest()

    out = _Digest()
    tracemalloc.start()
    try:
        counts = reassemble(read_location(f"kafka://{kafka.bootstrap_servers}/{topic}", "big"),
                            out, max_held_bytes=256 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert counts["chunks"] == 768 and out.size == 768 * 65536
    assert out.hash.hexdigest() == want
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB"
