"""The vocabulary of capacity planning: what each stream brings, and a planned figure.

`streamtap plan` (streamtap.planning) turns each source's rate into a `StreamLoad`; every sink
plug-in turns the loads into `Figure`s in its `plan()` (Kafka partitions, Kinesis shards, Parquet
files a day). A figure always names the limit or measurement it came from (`basis`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Figure", "StreamLoad", "ceil_div", "chunk_rate"]


@dataclass(frozen=True)
class StreamLoad:
    """One stream as the capture will see it.

    rate: bytes per second; rate_basis: where that number came from ("declared expected_rate",
    "probed for 30 s", ...); chunk_bytes and chunks_per_second: how the chunk settings cut it.
    """

    stream_id: str
    rate: float
    rate_basis: str
    chunk_bytes: float
    chunks_per_second: float


@dataclass(frozen=True)
class Figure:
    """One planned number: `value` `unit` of `what`, for `scope` (a sink, the runner), because
    of `basis`. `problem`: the figure breaks a limit (the capture cannot work as configured);
    `warning`: it works, but at a cost worth changing (small files)."""

    scope: str
    what: str
    value: float
    unit: str
    basis: str
    problem: str = ""
    warning: str = ""


def chunk_rate(rate: float, max_bytes: int, max_seconds: float) -> tuple[float, float]:
    """(bytes per chunk, chunks per second) of a stream of `rate` bytes/s under the chunk rules:
    a chunk is cut at max_bytes or max_seconds after its first byte, whichever comes first."""
    if rate <= 0:
        return 0.0, 0.0
    chunk_bytes = min(float(max_bytes), rate * max_seconds)
    return chunk_bytes, rate / chunk_bytes


def ceil_div(amount: float, per_unit: float) -> int:
    """Units of `per_unit` needed for `amount` (at least 1 when there is anything)."""
    return max(1, math.ceil(amount / per_unit - 1e-9)) if amount > 0 else 0
