"""Per-shard rate limiter: keeps the writer under a shard's 1 MB/s and 1,000 records/s.

Kinesis throttles a shard that takes more (ProvisionedThroughputExceeded), and a producer that
runs into the limit and retries wastes calls and time. Each shard gets two token buckets, bytes
and records, each holding one second of its rate and refilled continuously. A record is admitted
when both buckets hold enough for it; a record larger than a whole second's bytes (a 1 MiB record
on a 1 MB/s shard) is admitted from a full bucket and leaves it in debt, so the average rate still
holds. A throttle from the service (other producers share the shard) empties the shard's buckets.

One limiter serves every writer of a stream in a process (`shared_limiter`), so several DoFn
instances do not each take a shard's whole rate. Writers in other processes are not seen: the
service's throttling and the writer's retries cover them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["ShardRateLimiter", "shared_limiter"]


class _Buckets:
    __slots__ = ("bytes", "records", "updated")

    def __init__(self, bytes_: float, records: float, now: float):
        self.bytes = bytes_
        self.records = records
        self.updated = now


class ShardRateLimiter:
    """Token buckets per shard id. Thread-safe."""

    def __init__(
        self,
        bytes_per_second: float = 1_000_000,
        records_per_second: float = 1_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        if bytes_per_second <= 0 or records_per_second <= 0:
            raise ValueError(
                f"rates must be > 0, got {bytes_per_second} bytes/s, {records_per_second} records/s"
            )
        self.bytes_per_second = float(bytes_per_second)
        self.records_per_second = float(records_per_second)
        self._clock = clock
        self._shards: dict[str, _Buckets] = {}
        self._lock = threading.Lock()

    def _refill(self, shard_id: str, now: float) -> _Buckets:
        buckets = self._shards.get(shard_id)
        if buckets is None:
            buckets = self._shards[shard_id] = _Buckets(
                self.bytes_per_second, self.records_per_second, now
            )
            return buckets
        elapsed = max(0.0, now - buckets.updated)
        buckets.bytes = min(self.bytes_per_second, buckets.bytes + elapsed * self.bytes_per_second)
        buckets.records = min(
            self.records_per_second, buckets.records + elapsed * self.records_per_second
        )
        buckets.updated = now
        return buckets

    def try_acquire(self, shard_id: str, size: int) -> float:
        """Takes `size` bytes and one record of `shard_id`'s rate if it has them now: returns 0.

        Otherwise takes nothing and returns the seconds until it would have them.
        """
        with self._lock:
            now = self._clock()
            buckets = self._refill(shard_id, now)
            needed = min(float(size), self.bytes_per_second)
            if buckets.bytes >= needed and buckets.records >= 1:
                buckets.bytes -= size
                buckets.records -= 1
                return 0.0
            wait_bytes = (needed - buckets.bytes) / self.bytes_per_second
            wait_records = (1 - buckets.records) / self.records_per_second
            return max(wait_bytes, wait_records, 0.0005)

    def give_back(self, shard_id: str, size: int) -> None:
        """Returns what try_acquire took for a record that was not sent after all."""
        with self._lock:
            buckets = self._refill(shard_id, self._clock())
            buckets.bytes = min(self.bytes_per_second, buckets.bytes + size)
            buckets.records = min(self.records_per_second, buckets.records + 1)

    def throttled(self, shard_id: str) -> None:
        """The service said the shard is over its rate: spend the next second's allowance."""
        with self._lock:
            buckets = self._refill(shard_id, self._clock())
            buckets.bytes = min(buckets.bytes, 0.0)
            buckets.records = min(buckets.records, 0.0)


_SHARED: dict[tuple, ShardRateLimiter] = {}
_SHARED_LOCK = threading.Lock()


def shared_limiter(
    key: tuple, bytes_per_second: float, records_per_second: float
) -> ShardRateLimiter:
    """The one limiter of this process for `key` (endpoint, region, stream) and these rates."""
    with _SHARED_LOCK:
        full_key = (*key, bytes_per_second, records_per_second)
        limiter = _SHARED.get(full_key)
        if limiter is None:
            limiter = _SHARED[full_key] = ShardRateLimiter(bytes_per_second, records_per_second)
        return limiter
