"""What streamtap knows of one stream besides its bytes: how far its capture has got
(StreamPosition, the SDF restriction's part per stream) and its counters (StreamStats).

Plain data, shared by the reader (streamtap.io.reader), the group restriction, status lines
and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from streamtap.io.ratewatch import OK, Shortfall

__all__ = ["StreamPosition", "StreamStats"]


class StreamPosition(NamedTuple):
    """How far the capture of one stream has got: the SDF restriction.

    A NamedTuple, not a dataclass: a group's restriction holds one per stream and is rebuilt,
    encoded and decoded at every poll (1,000 of them at 1,000 streams), and tuples are the
    cheapest to make and to pickle.

    Attributes:
      next_seq: sequence number of the next chunk to emit.
      next_offset: byte offset of the next byte to emit.
      deadline: wall-clock time (epoch seconds) at which the capture of this stream ends, or None.
      stop_seq: set on a checkpointed primary: it owns seqs [next_seq, stop_seq).
      end_offset: byte offset at which the capture of this stream ends (its byte limit), or None.
    """

    next_seq: int = 0
    next_offset: int = 0
    deadline: float | None = None
    stop_seq: int | None = None
    end_offset: int | None = None


@dataclass
class StreamStats:
    """Counters of one stream in this worker process, for status lines and metrics."""

    bytes: int = 0
    chunks: int = 0
    sessions: int = 0
    reconnects: int = 0
    discontinuities: int = 0
    errors: int = 0
    last_error: str = ""
    state: str = "starting"
    # Chunks and bytes the runner committed (handed on to the sinks).
    committed_chunks: int = 0
    committed_bytes: int = 0
    # The rate watch (streamtap.io.ratewatch): OK, LOW or STALLED, the shortfall while flagged,
    # how often the stream was flagged, and its declared rate (bytes/s) if any.
    rate_state: str = OK
    shortfall: Shortfall | None = None
    rate_flags: int = 0
    expected_rate: float | None = None
