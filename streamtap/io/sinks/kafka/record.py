"""One Kafka record per chunk: the layout the writer produces and the read-back parses.

- key: the stream id (UTF-8), so one stream's chunks land in one partition, in order;
- value: the payload bytes, unchanged;
- headers, all UTF-8 text: `session`, `seq`, `offset`, `event_time` (repr of the float epoch
  seconds), `crc32c` (decimal), `discontinuity` (`true`/`false`) and `tag.<name>` per tag;
- timestamp: the chunk's event time in milliseconds (CreateTime), which consumers, Kafka Streams
  and Flink take as the record's event time;
- partition: Kafka's default partitioner, murmur2 of the key modulo the partition count
  (`partition_for`), so a stream stays in one partition, in seq order.

Readable by any Kafka client, e.g. `kcat -f '%k %h %S'`.
"""

from __future__ import annotations

from streamtap.chunk import Chunk

__all__ = [
    "RECORD_OVERHEAD", "chunk_from_record", "chunk_headers", "partition_for", "record_position",
    "record_timestamp_ms",
]

# Key, headers and batch framing of one record, on top of its payload. Generous: a session id,
# six numbers and a few tags take ~200 bytes; ICY titles and user tags make up the rest.
RECORD_OVERHEAD = 1024

_FIELDS = ("session", "seq", "offset", "event_time", "crc32c", "discontinuity")


def chunk_headers(chunk: Chunk) -> list[tuple[str, bytes]]:
    """The Kafka headers of a chunk: every field but stream_id and payload, as UTF-8 text."""
    headers = [
        ("session", chunk.session.encode()),
        ("seq", str(chunk.seq).encode()),
        ("offset", str(chunk.offset).encode()),
        ("event_time", repr(float(chunk.event_time)).encode()),
        ("crc32c", str(chunk.crc32c).encode()),
        ("discontinuity", b"true" if chunk.discontinuity else b"false"),
    ]
    headers += [(f"tag.{name}", value.encode("utf-8")) for name, value in chunk.tags.items()]
    return headers


def record_timestamp_ms(chunk: Chunk) -> int:
    """The record timestamp of a chunk: its event time in whole milliseconds since the epoch."""
    return round(chunk.event_time * 1000)


def partition_for(stream_id: str, partitions: int) -> int:
    """The partition the records of `stream_id` go to in a topic of `partitions` partitions.

    Kafka's default partitioner (kafka-python's DefaultPartitioner, the Java client's
    BuiltInPartitioner for keyed records): murmur2 of the UTF-8 key, made positive, modulo the
    partition count.
    """
    from kafka.partitioner.default import murmur2

    return (murmur2(stream_id.encode("utf-8")) & 0x7FFFFFFF) % partitions


def record_position(value: bytes | None, headers) -> tuple[int, int]:
    """(seq, offset after the payload) of a chunk record, from its headers and value length only.

    ValueError if it is not a streamtap chunk record.
    """
    fields = {name: raw for name, raw in headers or () if name in ("seq", "offset")}
    try:
        return int(fields["seq"]), int(fields["offset"]) + len(value or b"")
    except (KeyError, ValueError):
        raise ValueError(
            f"not a streamtap chunk record (headers seq and offset: {fields or 'missing'})"
        ) from None


def chunk_from_record(key: bytes | None, value: bytes | None, headers) -> Chunk:
    """Rebuilds a Chunk from a record the Kafka sink wrote; ValueError if it is not one."""
    fields: dict[str, str] = {}
    tags: dict[str, str] = {}
    for name, raw in headers or ():
        text = (raw or b"").decode("utf-8")
        if name.startswith("tag."):
            tags[name[4:]] = text
        else:
            fields[name] = text
    missing = [name for name in _FIELDS if name not in fields]
    if key is None or missing:
        raise ValueError(
            f"not a streamtap chunk record (key {key!r}, missing headers: "
            f"{', '.join(missing) or 'none'})"
        )
    return Chunk(
        stream_id=key.decode("utf-8"),
        session=fields["session"],
        seq=int(fields["seq"]),
        offset=int(fields["offset"]),
        payload=bytes(value or b""),
        event_time=float(fields["event_time"]),
        crc32c=int(fields["crc32c"]),
        discontinuity=fields["discontinuity"] == "true",
        tags=tags,
    )
