"""Reading a capture back from Kafka: the chunks of a topic, and where each stream's capture ended.

What `streamtap verify` and `reassemble` use for `kafka://host:port[,host:port]/topic`
(`read_location`), resume uses to continue a capture (`stream_ends`), and tests and library users
use for a topic (`read_kafka_chunks`). Each call reads with its own consumer (no consumer group,
nothing committed), up to the end offsets the partitions had when it started.

Reading is lazy: chunks are handed over as the consumer fetches them, partitions side by side,
each in offset order, which is each stream's seq order (a stream's key puts it in one partition)
apart from chunks a retried write sent again; `reassemble` restores the order of those.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterator, Mapping
from urllib.parse import urlparse

from streamtap.chunk import Chunk
from streamtap.io.sinks.kafka.client import open_client, unreachable
from streamtap.io.sinks.kafka.record import chunk_from_record, partition_for, record_position

__all__ = ["TopicNotFound", "read_kafka_chunks", "read_location", "stream_ends"]

log = logging.getLogger(__name__)

# stream_ends reads each partition backwards in blocks of records, from this many up to the
# largest, doubling: the last record of every stream of a partition is usually in the first.
_FIRST_TAIL_RECORDS = 256
_LARGEST_TAIL_RECORDS = 65536


class TopicNotFound(ValueError):
    """The topic does not exist at these brokers."""


def read_location(location: str, stream_id: str | None = None) -> Iterator[Chunk]:
    """Reads `kafka://host:port[,host:port]/topic` lazily, in partition/offset order
    (KafkaSink.read_location)."""
    parsed = urlparse(location)
    topic = parsed.path.strip("/")
    if not parsed.netloc or not topic:
        raise ValueError(f"{location!r}: expected kafka://host:port[,host:port]/topic")
    return read_kafka_chunks(parsed.netloc, topic, stream_id=stream_id, sort=False)


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
      stream_id: only this stream's chunks (the record key, compared exactly).
      sort: yield sorted by (stream_id, seq), duplicates kept (this holds every chunk in memory);
        with False, chunks come as they are fetched, each partition in offset order, which is
        per-stream seq order except for chunks a retried write sent again.
      timeout: seconds without progress before TimeoutError.
      security: security_protocol, sasl_mechanism, sasl_username, sasl_password, ssl_* as in
        KafkaSink (KafkaSink.security() gives them).
    """
    chunks = _read_all(bootstrap_servers, topic, stream_id, timeout, security)
    if sort:
        yield from sorted(chunks, key=lambda c: (c.stream_id, c.seq))
    else:
        yield from chunks


def stream_ends(
    bootstrap_servers: str,
    topic: str,
    stream_ids: list[str],
    *,
    timeout: float = 30.0,
    **security: Any,
) -> dict[str, tuple[int, int]]:
    """{stream id: (next seq, next offset)} after each stream's highest seq in the topic.

    Reads only the tails of the partitions. Every stream's records are in the partition its key
    hashes to (`partition_for`), in seq order, so its last record there holds its highest seq (a
    retried bundle sends its chunks again from where the failed attempt began, no further
    on). Each partition is read backwards from its end offset, in blocks of 256 records
    doubling up to 65,536, until every stream id that hashes to it has been seen, or its
    beginning is reached (a stream that never wrote to the topic: a new one). The cost is the
    records written since the least recent of the partition's streams last wrote, not the topic.

    Kafka only ever adds partitions, which moves keys. When a stream id is not found where its
    key hashes, the last block of every partition not read yet is read too, and if any record
    read sits outside the partition its key hashes to (partitions were added, or another
    partitioner wrote), the rest of every partition is read for the missing streams. Streams
    with no record are left out. Raises ConnectionError when the brokers cannot be reached,
    TopicNotFound (a ValueError) for a missing topic, ValueError for a record of a stream that
    is not a chunk.
    """
    with _Reader(bootstrap_servers, topic, timeout, security) as reader:
        scan = _TailScan(reader, set(stream_ids))
        scan.tails()
        if scan.missing():
            scan.evidence()
        if scan.missing() and scan.moved:
            log.warning(
                "topic %s: records sit outside the partition their key hashes to (partitions "
                "added?); reading all of it for %d stream(s) not found where expected: %s",
                topic, len(scan.missing()), ", ".join(sorted(scan.missing())[:10]),
            )
            scan.rest()
        return scan.ends


class _TailScan:
    """stream_ends' reading: which offsets of which partitions were read, and what was found."""

    def __init__(self, reader: "_Reader", wanted: set[str]):
        self._reader = reader
        self._wanted = wanted
        self._count = len(reader.partitions)
        self._home = {stream_id: partition_for(stream_id, self._count) for stream_id in wanted}
        self._unseen: dict[int, set[str]] = {p: set() for p in reader.partitions}
        for stream_id, partition in self._home.items():
            self._unseen[partition].add(stream_id)
        self._first, self._end = reader.offsets()
        self._low = dict(self._end)  # per partition: the lowest offset read so far
        self.moved = False  # a record outside the partition its key hashes to was read
        self.ends: dict[str, tuple[int, int]] = {}

    def missing(self) -> set[str]:
        return self._wanted - set(self.ends)

    def tails(self) -> None:
        """Reads each partition backwards until all its streams were seen, or to its start."""
        block = _FIRST_TAIL_RECORDS
        pending = {p for p, ids in self._unseen.items() if ids and self._more(p)}
        while pending:
            self._read({p: (max(self._first[p], self._low[p] - block), self._low[p])
                        for p in pending})
            pending = {p for p in pending if self._unseen[p] and self._more(p)}
            block = min(block * 2, _LARGEST_TAIL_RECORDS)

    def evidence(self) -> None:
        """Reads the last block of every partition not read yet, for keys that moved."""
        self._read({p: (max(self._first[p], self._end[p] - _FIRST_TAIL_RECORDS), self._end[p])
                    for p in self._reader.partitions if self._low[p] == self._end[p]})

    def rest(self) -> None:
        """Reads everything not read yet."""
        self._read({p: (self._first[p], self._low[p]) for p in self._reader.partitions})

    def _more(self, partition: int) -> bool:
        return self._low[partition] > self._first[partition]

    def _read(self, ranges: dict[int, tuple[int, int]]) -> None:
        for partition, record in self._reader.records(ranges):
            if record.key is None:
                continue
            key = record.key.decode("utf-8", "replace")
            home = self._home.get(key)
            if home is None:  # another stream's key: where it is tells of moved keys too
                home = self._home[key] = partition_for(key, self._count)
            if home != partition:
                self.moved = True
            if key in self._wanted:
                self._unseen[partition].discard(key)
                seq, after = self._reader.position(partition, record)
                if key not in self.ends or seq >= self.ends[key][0]:
                    self.ends[key] = (seq + 1, after)
        for partition, (start, _) in ranges.items():
            self._low[partition] = min(self._low[partition], start)


def _read_all(
    bootstrap_servers: str,
    topic: str,
    stream_id: str | None,
    timeout: float,
    security: Mapping[str, Any],
) -> Iterator[Chunk]:
    wanted_key = stream_id.encode("utf-8") if stream_id is not None else None
    with _Reader(bootstrap_servers, topic, timeout, security) as reader:
        first, end = reader.offsets()
        ranges = {p: (first[p], end[p]) for p in reader.partitions}
        for partition, record in reader.records(ranges):
            if wanted_key is not None and record.key != wanted_key:
                continue
            try:
                yield chunk_from_record(record.key, record.value, record.headers)
            except ValueError as error:
                raise ValueError(f"{topic}[{partition}] offset {record.offset}: {error}") from None


class _Reader:
    """One consumer assigned to a topic's partitions, reading offset ranges of them."""

    def __init__(
        self, bootstrap_servers: str, topic: str, timeout: float, security: Mapping[str, Any]
    ):
        self._servers = bootstrap_servers
        self._topic = topic
        self._timeout = timeout
        self._security = security
        self._consumer = None
        self.partitions: list[int] = []

    def __enter__(self) -> "_Reader":
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        try:
            self._consumer = open_client(
                KafkaConsumer,
                self._servers,
                self._security,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                client_id="streamtap-reader",
                bootstrap_timeout_ms=int(self._timeout * 1000),
                # What one poll hands over and one fetch holds: with 64 KiB chunks, 4 MiB and
                # 16 MiB, however many partitions the topic has (the defaults: 500 records, 50 MiB).
                max_poll_records=64,
                fetch_max_bytes=16 * 2**20,
            )
        except KafkaError as error:
            raise ConnectionError(unreachable(self._servers, error)) from error
        try:
            partitions = self._consumer.partitions_for_topic(self._topic)
            if not partitions:
                raise TopicNotFound(f"topic {self._topic!r} does not exist at {self._servers}")
            self.partitions = sorted(partitions)
        except BaseException:
            self._consumer.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self._consumer.close()

    def _tp(self, partition: int):
        from kafka import TopicPartition

        return TopicPartition(self._topic, partition)

    def offsets(self) -> tuple[dict[int, int], dict[int, int]]:
        """({partition: first offset}, {partition: end offset}) as of now."""
        tps = [self._tp(p) for p in self.partitions]
        first = self._consumer.beginning_offsets(tps)
        end = self._consumer.end_offsets(tps)
        return (
            {tp.partition: offset for tp, offset in first.items()},
            {tp.partition: offset for tp, offset in end.items()},
        )

    def position(self, partition: int, record) -> tuple[int, int]:
        """(seq, next offset) of a chunk record; ValueError naming the record if not one."""
        try:
            return record_position(record.value, record.headers)
        except ValueError as error:
            where = f"{self._topic}[{partition}] offset {record.offset}"
            raise ValueError(f"{where}: {error}") from None

    def records(self, ranges: Mapping[int, tuple[int, int]]) -> Iterator[tuple[int, Any]]:
        """(partition, record) of every record with start <= offset < stop of each partition's
        (start, stop), the partitions side by side, each in offset order."""
        tps = {p: self._tp(p) for p, (start, stop) in ranges.items() if start < stop}
        if not tps:
            return
        consumer = self._consumer
        consumer.assign(list(tps.values()))
        consumer.resume(*tps.values())
        for partition, tp in tps.items():
            consumer.seek(tp, ranges[partition][0])
        remaining = set(tps)
        last_progress = time.monotonic()
        while remaining:
            batches = consumer.poll(timeout_ms=500)
            for tp, records in batches.items():
                stop = ranges[tp.partition][1]
                for record in records:
                    if record.offset >= stop:
                        break
                    yield tp.partition, record
                last_progress = time.monotonic()
            for partition in list(remaining):
                if consumer.position(tps[partition]) >= ranges[partition][1]:
                    remaining.discard(partition)
                    consumer.pause(tps[partition])
            if remaining and time.monotonic() - last_progress > self._timeout:
                raise TimeoutError(
                    f"reading {self._topic} at {self._servers}: no progress for "
                    f"{self._timeout:.0f} s on partition(s) {sorted(remaining)}"
                )
