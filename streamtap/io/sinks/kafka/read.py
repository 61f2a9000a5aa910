"""Reading a capture back from Kafka: every chunk record of a topic, up to its current end.

What `streamtap verify` and `reassemble` use for `kafka://host:port[,host:port]/topic`
(`read_location`), and tests and library users for a topic (`read_kafka_chunks`). Each call reads
every partition from the beginning with its own consumer (no consumer group, nothing committed).
"""

from __future__ import annotations

import time
from typing import Any, Iterator, Mapping
from urllib.parse import urlparse

from streamtap.chunk import Chunk
from streamtap.io.sinks.kafka.client import open_client, unreachable
from streamtap.io.sinks.kafka.record import chunk_from_record

__all__ = ["read_kafka_chunks", "read_location"]


def read_location(location: str, stream_id: str | None = None) -> Iterator[Chunk]:
    """Reads `kafka://host:port[,host:port]/topic` (KafkaSink.read_location)."""
    parsed = urlparse(location)
    topic = parsed.path.strip("/")
    if not parsed.netloc or not topic:
        raise ValueError(f"{location!r}: expected kafka://host:port[,host:port]/topic")
    return read_kafka_chunks(parsed.netloc, topic, stream_id=stream_id)


def read_kafka_chunks(
    bootstrap_servers: str,
    topic: str,
    stream_id: str | None = None,
    *,
    sort: bool = True,
    timeout: float = 30.0,
    **security: Any,
) -> Iterator[Chunk]:
    """Reads a topic from the beginning to its current end offsets and yields the chunks.

    Args:
      stream_id: only this stream's chunks (the record key).
      sort: yield sorted by (stream_id, seq), duplicates kept (this holds every chunk in memory);
        with False, chunks come in partition/offset order, which is per-stream seq order except
        for chunks a retried write sent again.
      timeout: seconds without progress before TimeoutError.
      security: security_protocol, sasl_mechanism, sasl_username, sasl_password, ssl_* as in
        KafkaSink (KafkaSink.security() gives them).
    """
    chunks = _read(bootstrap_servers, topic, stream_id, timeout, security)
    if sort:
        yield from sorted(chunks, key=lambda c: (c.stream_id, c.seq))
    else:
        yield from chunks


def _read(
    bootstrap_servers: str,
    topic: str,
    stream_id: str | None,
    timeout: float,
    security: Mapping[str, Any],
) -> Iterator[Chunk]:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    wanted_key = stream_id.encode("utf-8") if stream_id is not None else None
    try:
        consumer = open_client(
            KafkaConsumer,
            bootstrap_servers,
            security,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="streamtap-reader",
            bootstrap_timeout_ms=int(timeout * 1000),
        )
    except KafkaError as error:
        raise ConnectionError(unreachable(bootstrap_servers, error)) from error
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"topic {topic!r} does not exist at {bootstrap_servers}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        remaining = {tp for tp in tps if consumer.position(tp) < end[tp]}
        last_progress = time.monotonic()
        while remaining:
            batches = consumer.poll(timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= end[tp]:
                        break
                    if wanted_key is not None and record.key != wanted_key:
                        continue
                    try:
                        yield chunk_from_record(record.key, record.value, record.headers)
                    except ValueError as error:
                        raise ValueError(
                            f"{topic}[{tp.partition}] offset {record.offset}: {error}"
                        ) from None
                last_progress = time.monotonic()
            for tp in list(remaining):
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
            if remaining and time.monotonic() - last_progress > timeout:
                raise TimeoutError(
                    f"reading {topic} at {bootstrap_servers}: no progress for {timeout:.0f} s on "
                    f"partition(s) {sorted(tp.partition for tp in remaining)}"
                )
    finally:
        consumer.close()
