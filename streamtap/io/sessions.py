"""Concurrent sessions of one stream: several connections read at once (`tcp_listen`).

Most sources have one session at a time: a connection, reopened when it fails. A source that
serves several peers at once (`tcp_listen`: one device per connection) opens a
`ConcurrentSession` per connection (`ByteSink.open_session`). Each has a chunk being filled of its
own (a `ChunkCutter` spawned from the stream's, same size, time and window rules), a session id
of its own and its tags (the peer), so a chunk never mixes the bytes of two connections and
says which one it came from. The chunks of every session share the stream's seq numbers and
offsets, in the order they are cut: the stream is the sessions' chunks interleaved whole, and
one connection's bytes are its session's chunks in seq order. The first chunk of every session
is marked as a discontinuity, except the very first chunk of a fresh capture.

Event times then no longer follow seq order (a chunk cut from one connection may have arrived
before one cut earlier from another), so the stream's watermark is the earliest event time of
every chunk not yet emitted and every chunk being filled (`concurrent_watermark`), not just the next one's.

Part of the reader (`streamtap.io.reader`), split off to keep each module to one job: it works on
the reader's internals on the reader's event loop, under the reader's rules. Sources that open
no session pay nothing for it: the reader's own write path is unchanged.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

# The reader (streamtap.io.reader.StreamReader) imports this module, so it is not imported here:
# the layout test forbids the cycle even for type checking.
StreamReader = Any

__all__ = ["ConcurrentSession", "concurrent_watermark"]

_LOGGER = logging.getLogger(__name__)


class ConcurrentSession:
    """One of the sessions a stream runs at once: a ByteSink of its own (see the module).

    Created by `StreamReader.open_session(tags)`; `close(error)` when the connection ends.
    """

    def __init__(self, reader: StreamReader, tags: Mapping[str, str]):
        self._reader = reader
        self.session = uuid.uuid4().hex[:16]
        self._fixed_tags = dict(tags)
        self._cutter = reader._cutter.spawn(self._keep)
        self._cutter.set_tags(self._fixed_tags)
        self._first = True
        self._timer = None
        self._closed = False
        with reader._lock:
            reader._sessions.append(self)
            reader._concurrent = True

    # --- ByteSink ---

    def write(self, data: bytes, whole: bool = False) -> None:
        reader = self._reader
        if not data or reader._finished or self._closed:
            return
        reader._writing = True  # as in StreamReader.write: the watermark waits for these bytes
        try:
            limit_reached = False
            end_offset = reader._cutter.end_offset
            if end_offset is not None:
                taken = reader._next_offset + sum(len(s._cutter.pending) for s in reader._sessions)
                if len(data) >= end_offset - taken:
                    data, limit_reached = data[: max(end_offset - taken, 0)], True
            now = time.time()
            cutter = self._cutter
            reader.stats.bytes += cutter.write(data, now, whole)
            if cutter.pending and self._timer is None and reader._loop is not None:
                self._timer = reader._loop.call_later(cutter.due_at() - now, self._on_timer)
            if limit_reached:
                reader._finish()
        finally:
            reader._writing = False

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._cutter.set_tags({**self._fixed_tags, **tags})

    def room(self) -> int:
        return self._cutter.room()

    async def wait_for_room(self) -> None:
        await self._reader.wait_for_room()

    # --- the session's end ---

    def close(self, error: str | None = None) -> None:
        """Cuts what the session holds and ends it; `error`: why it failed (counted and logged
        as an error of the stream), None for a clean end."""
        if self._closed:
            return
        self._closed = True
        self.cut()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        reader = self._reader
        with reader._lock:
            reader._sessions.remove(self)
        if error:
            peer = self._fixed_tags.get("peer", self.session)
            reader.stats.errors += 1
            reader.stats.last_error = f"{peer}: {error}"
            _LOGGER.warning("%s: the connection from %s failed: %s", reader.stream_id, peer, error)

    def cut(self) -> None:
        """Cuts the pending bytes, if any, into a chunk now (the stream is ending)."""
        self._cutter.cut()

    @property
    def first_byte_time(self) -> float | None:
        """Arrival time of the first byte being filled into a chunk, None if there is none."""
        return self._cutter.first_byte_time if self._cutter.pending else None

    def _on_timer(self) -> None:
        self._timer = None
        cutter = self._cutter
        if not cutter.pending or self._reader._finished:
            return
        now = time.time()
        if not cutter.cut_if_due(now):
            self._timer = self._reader._loop.call_later(cutter.due_at() - now, self._on_timer)

    def _keep(self, payload: bytes, offset: int, first_byte_time: float, tags) -> None:
        """The cutter's emit: the chunk goes into the stream at the stream's next offset."""
        reader = self._reader
        discontinuity = self._first and reader._next_seq > 0
        self._first = False
        reader._retain(payload, reader._next_offset, first_byte_time, tags,
                       session=self.session, discontinuity=discontinuity)


def concurrent_watermark(reader: StreamReader, next_seq: int, now: float) -> float:
    """No chunk from `next_seq` on has an event time before this, for a stream whose sessions
    ran at once: the earliest of every chunk not yet emitted and every chunk being filled (the
    reader's lock is held). With nothing anywhere, the clock, as in StreamReader.watermark."""
    if reader._writing:
        earliest = reader._idle_watermark
    else:
        earliest = reader._idle_watermark = now
    retained = reader._retained
    if retained:
        start = max(0, next_seq - retained[0].seq)
        for chunk in itertools.islice(retained, start, None):
            earliest = min(earliest, chunk.event_time)
    for session in reader._sessions:
        first = session.first_byte_time
        if first is not None:
            earliest = min(earliest, first)
    if reader._cutter.pending:
        earliest = min(earliest, reader._cutter.first_byte_time)
    return earliest
