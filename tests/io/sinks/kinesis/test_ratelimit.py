"""The per-shard rate limiter, on a clock the test moves (no sleeping)."""

from __future__ import annotations

from streamtap.io.sinks.kinesis.ratelimit import ShardRateLimiter, shared_limiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def admitted_in(
    limiter: ShardRateLimiter,
    clock: Clock,
    shard: str,
    size: int,
    seconds: float,
    step: float = 0.001,
) -> int:
    """How many records of `size` the limiter lets through in `seconds` of trying all the time."""
    count, end = 0, clock.now + seconds
    while clock.now < end:
        if limiter.try_acquire(shard, size) == 0:
            count += 1
        else:
            clock.now += step
    return count


def test_bytes_per_second_hold_over_time():
    clock = Clock()
    limiter = ShardRateLimiter(1_000_000, 1000, clock=clock)
    # 64 KiB records: one second's bucket to start with, then 1 MB/s.
    count = admitted_in(limiter, clock, "shard-0", 65536, 10.0)
    assert 10 * 1_000_000 / 65536 <= count <= 11 * 1_000_000 / 65536 + 1


def test_records_per_second_hold_over_time():
    clock = Clock()
    limiter = ShardRateLimiter(1_000_000, 1000, clock=clock)
    count = admitted_in(limiter, clock, "shard-0", 10, 5.0)
    assert 5000 <= count <= 6001


def test_shards_are_independent_and_a_record_over_a_second_still_goes():
    clock = Clock()
    limiter = ShardRateLimiter(1_000_000, 1000, clock=clock)
    assert limiter.try_acquire("a", 1_048_576) == 0  # from a full bucket, into debt
    wait = limiter.try_acquire("a", 1000)
    assert 0.04 < wait < 0.06  # the debt of 48,576 bytes, plus the record, at 1 MB/s
    assert limiter.try_acquire("b", 1000) == 0


def test_a_throttle_from_the_service_spends_the_next_second():
    clock = Clock()
    limiter = ShardRateLimiter(1_000_000, 1000, clock=clock)
    limiter.throttled("a")
    assert limiter.try_acquire("a", 100) > 0
    clock.now += 0.01
    assert limiter.try_acquire("a", 100) == 0


def test_writers_of_one_stream_share_a_limiter():
    one = shared_limiter(("http://127.0.0.1:1", "us-east-1", "s"), 1_000_000, 1000)
    assert shared_limiter(("http://127.0.0.1:1", "us-east-1", "s"), 1_000_000, 1000) is one
    assert shared_limiter(("http://127.0.0.1:1", "us-east-1", "t"), 1_000_000, 1000) is not one
