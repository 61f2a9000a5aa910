"""WriteChunksToKafka against a real broker: record timestamps, and the counts the summary shows."""

from __future__ import annotations

import time

import apache_beam as beam

from streamtap.chunk import make_chunk
from streamtap.io.sinks.activity import all_sink_activity
from streamtap.io.sinks.kafka import KafkaSink, WriteChunksToKafka
from tests.fixtures.kafka import create_topic, unique_topic


def test_every_record_carries_its_chunks_event_time_as_timestamp(kafka):
    """Consumers (Kafka Streams, Flink, ksqlDB) take the record timestamp as event time: it is
    the chunk's, in milliseconds, not the time the writer sent it."""
    topic = create_topic(kafka.bootstrap_servers, unique_topic("times"), partitions=2)
    start = time.time() - 7200.0  # two hours before the writer runs
    chunks = [
        make_chunk(f"s{i % 3}", "a", i // 3, i, bytes([i]), start + i * 0.2537)
        for i in range(30)
    ]
    pipeline = beam.Pipeline(runner="FnApiRunner")
    sink = KafkaSink(bootstrap_servers=kafka.bootstrap_servers, topic=topic)
    _ = pipeline | beam.Create(chunks) | WriteChunksToKafka(sink)
    pipeline.run().wait_until_finish()

    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    consumer.assign([TopicPartition(topic, p) for p in range(2)])
    stamps = {
        (record.key.decode(), int(dict(record.headers)["seq"])): (record.timestamp,
                                                                 record.timestamp_type)
        for record in consumer
    }
    consumer.close()
    assert stamps == {
        (chunk.stream_id, chunk.seq): (round(chunk.event_time * 1000), 0)  # 0: CreateTime
        for chunk in chunks
    }
    # The summary's sink line counts what the brokers acknowledged.
    counts = {a.name: a.counts() for a in all_sink_activity()}[f"kafka {topic}"]
    assert counts["records_written"] == 30 and counts["bytes_written"] == 30
