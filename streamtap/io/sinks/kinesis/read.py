"""Reading a Kinesis stream back: every chunk (verify, reassemble) and where each stream ended.

A stream is read shard by shard from its oldest record (TRIM_HORIZON), every shard that
ListShards returns: the open ones and the parents a SplitShard or MergeShards closed, which
still hold the records written before the reshard (until the retention period drops them). A
shard is read to its end (a closed shard) or to its newest record (an open one). Records are
decoded with the envelope (`envelope.py`); one that is not a streamtap record is an error naming
its shard and sequence number.

Locations: `kinesis://STREAM?region=us-east-1&endpoint_url=http://127.0.0.1:4566` (both
parameters optional: the standard AWS chain supplies the region, and AWS is the endpoint).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

from streamtap.chunk import Chunk
from streamtap.errors import EnvelopeError
from streamtap.io.sinks.kinesis import envelope
from streamtap.io.sinks.kinesis.client import (
    describe_error,
    error_code,
    is_retriable,
    list_shards,
    make_client,
)

__all__ = ["parse_location", "read_kinesis_chunks", "stream_ends"]

log = logging.getLogger(__name__)

# GetRecords takes at most 10,000 records or 10 MiB per call and 5 calls/s per shard.
_GET_LIMIT = 10_000
# A read that keeps failing (throttled, unreachable) gives up after this long without progress.
_READ_PATIENCE_SECONDS = 120.0
# resume: first look at the records of the last this many seconds; most streams end in there.
_RECENT_SECONDS = 900.0


def parse_location(location: str) -> tuple[str, str | None, str | None]:
    """`kinesis://STREAM?region=R&endpoint_url=U` -> (stream, region, endpoint_url)."""
    parsed = urlparse(location)
    query = parse_qs(parsed.query)
    unknown = sorted(set(query) - {"region", "endpoint_url"})
    if parsed.scheme != "kinesis" or not parsed.netloc or parsed.path.strip("/") or unknown:
        raise ValueError(
            f"{location!r}: expected kinesis://STREAM[?region=REGION&endpoint_url=URL]"
            + (f" (unknown parameter(s): {', '.join(unknown)})" if unknown else "")
        )
    region = query.get("region", [None])[-1]
    endpoint_url = query.get("endpoint_url", [None])[-1]
    return parsed.netloc, region, endpoint_url


def read_kinesis_chunks(
    stream: str,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    stream_id: str | None = None,
    sort: bool = True,
    client=None,
) -> Iterator[Chunk]:
    """Every chunk in a Kinesis stream, optionally of one stream id only.

    sort: yield sorted by (stream_id, seq), duplicates kept (holds every chunk in memory); with
      False, shard by shard in each shard's order.
    Raises ValueError for a stream that does not exist or a record that is not a chunk,
    ConnectionError when the endpoint cannot be read.
    """
    client = client or _client(region, endpoint_url)
    where = endpoint_url or "AWS"
    chunks = (
        _decode(record, shard_id)
        for shard_id, record in _records(client, stream, where)
        if stream_id is None or record.get("PartitionKey") == stream_id
    )
    if sort:
        yield from sorted(chunks, key=lambda chunk: (chunk.stream_id, chunk.seq))
    else:
        yield from chunks


def stream_ends(
    stream: str,
    stream_ids: list[str],
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    client=None,
) -> dict[str, tuple[int, int]]:
    """{stream id: (next seq, next offset)} after each stream's highest seq in the Kinesis stream.

    Reads only the records' fixed headers. First the last _RECENT_SECONDS of every shard (a
    capture that ran lately ends there), then, for streams not found, everything. Streams with
    no record are left out. Raises ConnectionError / ValueError as read_kinesis_chunks.
    """
    client = client or _client(region, endpoint_url)
    where = endpoint_url or "AWS"
    wanted = set(stream_ids)
    ends: dict[str, tuple[int, int]] = {}
    for since in (time.time() - _RECENT_SECONDS, None):
        for shard_id, record in _records(client, stream, where, since=since):
            key = record.get("PartitionKey")
            if key not in wanted:
                continue
            try:
                seq, end = envelope.decode_position(record["Data"])
            except EnvelopeError as error:
                raise EnvelopeError(f"{_where(stream, shard_id, record)}: {error}") from None
            if key not in ends or seq >= ends[key][0]:
                ends[key] = (seq + 1, end)
        if wanted <= set(ends):
            break
    return ends


def _client(region: str | None, endpoint_url: str | None):
    return make_client(region, endpoint_url)


def _decode(record: dict[str, Any], shard_id: str) -> Chunk:
    try:
        return envelope.decode(record["Data"])
    except EnvelopeError as error:
        raise EnvelopeError(f"{_where('', shard_id, record)}: {error}") from None


def _where(stream: str, shard_id: str, record: dict[str, Any]) -> str:
    prefix = f"{stream} " if stream else ""
    return f"{prefix}{shard_id} sequence number {record.get('SequenceNumber')}"


def _records(
    client, stream: str, where: str, since: float | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(shard id, record) of every shard, parents first, each shard in its own order."""
    shards = _call(stream, where, list_shards, client, stream)
    for shard in _parents_first(shards):
        yield from _shard_records(client, stream, where, shard["ShardId"], since)


def _parents_first(shards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Shards ordered so that a parent comes before its children (the order data was written)."""
    by_id = {shard["ShardId"]: shard for shard in shards}
    ordered: list[dict[str, Any]] = []
    seen: set[str] = set()

    def visit(shard: dict[str, Any]) -> None:
        if shard["ShardId"] in seen:
            return
        seen.add(shard["ShardId"])
        for parent in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")):
            if parent in by_id:
                visit(by_id[parent])
        ordered.append(shard)

    for shard in shards:
        visit(shard)
    return ordered


def _shard_records(
    client, stream: str, where: str, shard_id: str, since: float | None
) -> Iterator[tuple[str, dict[str, Any]]]:
    request: dict[str, Any] = {"StreamName": stream, "ShardId": shard_id}
    if since is None:
        request["ShardIteratorType"] = "TRIM_HORIZON"
    else:
        request["ShardIteratorType"] = "AT_TIMESTAMP"
        request["Timestamp"] = since
    iterator = _call(stream, where, client.get_shard_iterator, **request)["ShardIterator"]
    last_sequence: str | None = None
    while iterator:
        try:
            response = _call(
                stream, where, client.get_records, ShardIterator=iterator, Limit=_GET_LIMIT
            )
        except _ExpiredIterator:
            # An iterator lives 5 minutes; continue after the last record read.
            again = dict(request)
            if last_sequence is not None:
                again.update(
                    ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=last_sequence
                )
                again.pop("Timestamp", None)
            iterator = _call(stream, where, client.get_shard_iterator, **again)["ShardIterator"]
            continue
        records = response.get("Records", [])
        for record in records:
            last_sequence = record.get("SequenceNumber")
            yield shard_id, record
        iterator = response.get("NextShardIterator")
        if not records and response.get("MillisBehindLatest", 0) == 0:
            return  # an open shard read up to its newest record


class _ExpiredIterator(Exception):
    pass


def _call(stream: str, where: str, function, *args, **kwargs):
    """Calls boto3, retrying throttles and transient failures for up to _READ_PATIENCE_SECONDS.

    GetRecords allows 5 calls/s per shard, so reading a large stream meets throttling.
    """
    from botocore.exceptions import ClientError

    started = time.monotonic()
    delay = 0.2
    while True:
        try:
            return function(*args, **kwargs)
        except Exception as error:
            if error_code(error) == "ExpiredIteratorException":
                raise _ExpiredIterator() from error
            text = describe_error(error, stream, where)
            if not is_retriable(error):
                if isinstance(error, ClientError) or not isinstance(error, OSError):
                    raise ValueError(text) from None
                raise ConnectionError(text) from None
            # An endpoint that does not answer at all is most likely a wrong address or down.
            patience = _READ_PATIENCE_SECONDS if isinstance(error, ClientError) else 15.0
            if time.monotonic() - started > patience:
                raise ConnectionError(
                    f"{text}; gave up after {patience:.0f} s of retries"
                ) from None
            log.info("reading Kinesis: %s; retrying in %.1f s", text, delay)
            time.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 5.0)
