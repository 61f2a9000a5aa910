"""Which shard a record lands on: hash keys of chunks and the map of a stream's open shards.

Kinesis puts a record on the open shard whose hash key range holds the record's hash key: the
MD5 of its partition key (the stream id) read as a 128-bit big-endian number, or an explicit
hash key. With `shards_per_stream: N` the writer spreads one stream over N shards by giving
chunk `seq` the explicit hash key

    (md5(stream_id) + (seq mod N) * floor(2**128 / N)) mod 2**128

N points evenly spaced around the hash ring: on a stream of N or more equally sized shards they
fall on N different shards, and they stay valid through any reshard (no shard ids are kept).
A stream's chunks then sit in N shards, each in seq order; readers restore the whole order by
seq (`streamtap reassemble` does).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable
from typing import Any

__all__ = ["HASH_SPACE", "ShardMap", "hash_key", "partition_hash", "target"]

HASH_SPACE = 2**128


def partition_hash(partition_key: str) -> int:
    """The hash key Kinesis derives from a partition key."""
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


def target(seq: int, shards_per_stream: int) -> int:
    """Which of a stream's N spread positions chunk `seq` goes to (0 when not spread)."""
    return seq % shards_per_stream if shards_per_stream > 1 else 0


def hash_key(stream_id: str, position: int, shards_per_stream: int) -> int:
    """The hash key of a stream's records at spread `position` (its md5 when not spread)."""
    base = partition_hash(stream_id)
    if shards_per_stream <= 1:
        return base
    return (base + position * (HASH_SPACE // shards_per_stream)) % HASH_SPACE


class ShardMap:
    """The open shards of a stream by hash key range, from a ListShards answer."""

    def __init__(self, shards: Iterable[dict[str, Any]]):
        ranges = sorted(
            (
                int(s["HashKeyRange"]["StartingHashKey"]),
                int(s["HashKeyRange"]["EndingHashKey"]),
                s["ShardId"],
            )
            for s in shards
            if "EndingSequenceNumber" not in s.get("SequenceNumberRange", {})
        )
        self._starts = [start for start, _, _ in ranges]
        self._ranges = ranges

    def __len__(self) -> int:
        return len(self._ranges)

    @property
    def shard_ids(self) -> list[str]:
        return [shard_id for _, _, shard_id in self._ranges]

    def shard_for(self, key: int) -> str:
        """The open shard that takes hash key `key` ('' if the map has no shard for it)."""
        index = bisect.bisect_right(self._starts, key) - 1
        if index < 0:
            return ""
        start, end, shard_id = self._ranges[index]
        return shard_id if start <= key <= end else ""
