"""The chunking rules: where one stream's bytes are cut into chunks. Pure: no socket, no event
loop, no thread, no clock (the caller passes the time).

A `ChunkCutter` holds the chunk being filled and cuts it
- when it holds `max_bytes` (a read is split where that falls, so chunks are exactly that long),
- `max_seconds` after its first byte arrived (the caller asks `due_at()` and calls `cut_if_due()`),
- where its fixed event-time window ends (with `window_seconds`), so every byte of a chunk arrived
  within the window its event time names,
- before a whole record (a UDP datagram) that would not fit; a record larger than `max_bytes` is a
  chunk of its own, never split,
- when the tags change, so a chunk's tags are true for every one of its bytes,
- at the stream's byte limit (`end_offset`): the bytes beyond it are dropped, `limit_reached` is
  set, and the stream must end,
- when asked (`cut()`: the end of a session, a stop).

With an aligner (`aligner_for`, `chunk.align`; the rules are `streamtap.io.framing`), these cuts
fall on the last frame (or whole sample) boundary within them instead, and the rest of the frame
stays pending as the start of the next chunk, with the time of the cut as its first-byte time (it
arrived no later): so an aligned chunk's time is the arrival of its first byte, or the moment the
previous chunk was cut when it starts with a frame carried over (a time or window cut then never
holds bytes across a window end). Bytes that are not frames are cut as chunks of their own; every
chunk is tagged `frames` and `audio_ms`, or `unaligned` with the reason. A time cut with less than
two whole frames pending waits for more. Without an aligner none of this runs.

Each cut hands (payload, offset, first byte time, tags) to the `emit` callback, which numbers it
and keeps it (`streamtap.io.reader`). This is the hot path of a capture (one call per read of every
stream: 1,000 streams per process; 300+ MB/s for one TCP stream), so there is no per-byte Python
work: reads are sliced through memoryviews, and a whole chunk within a read is cut straight from it
rather than through the pending buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["ChunkCutter", "Emit", "event_micros"]

#: emit(payload, offset, first_byte_time, tags): one cut chunk. `payload` is a new `bytes` object
#: (or the caller's own `bytes` read, when it was exactly one chunk); `tags` must not be changed.
Emit = Callable[[bytes, int, float, Mapping[str, str]], None]

#: aligner_for(tags): the aligner for bytes with these tags (`streamtap.io.framing`), or None.
AlignerFor = Callable[[Mapping[str, str]], Any]


def event_micros(epoch_seconds: float) -> int:
    """An event time in µs, truncated as Beam's Timestamp.of() does when it windows the chunks.

    Computed here rather than through Timestamp.of(), which cost ~6% of a fast reader's time
    (tests/io/test_cutting.py checks that the two agree).
    """
    return int(epoch_seconds * 1_000_000)


class ChunkCutter:
    """The chunk being filled of one stream, and the rules that cut it (see the module).

    Attributes:
      pending: the bytes received and not cut yet (read it, never change it).
      first_byte_time: arrival time (epoch seconds) of the first pending byte.
      offset: stream offset of the first pending byte: where the next chunk starts.
      tags: the tags of the pending bytes (set_tags).
      limit_reached: True once `end_offset` bytes were taken: the stream must end.
    """

    def __init__(
        self,
        max_bytes: int,
        max_seconds: float,
        emit: Emit,
        *,
        offset: int = 0,
        window_seconds: float | None = None,
        end_offset: int | None = None,
        aligner_for: AlignerFor | None = None,
    ):
        """
        Args:
          max_bytes: most bytes in a chunk (a single whole record may be larger).
          max_seconds: a chunk is due this many seconds after its first byte arrived.
          emit: called with each chunk cut, in order.
          offset: stream offset of the first byte to come.
          window_seconds: length of the fixed event-time windows a chunk must not straddle;
            None or 0: no window cuts.
          end_offset: stream offset at which the stream ends (its byte limit), or None.
          aligner_for: picks the frame rule from the tags (`streamtap.io.framing.aligner_choice`);
            None: cuts fall where the limits say.
        """
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.pending = bytearray()
        self.first_byte_time = 0.0
        self.offset = offset
        self.tags: Mapping[str, str] = {}
        self.limit_reached = False
        self._emit = emit
        self._window_micros = int(window_seconds * 1e6) if window_seconds else 0
        self._window_seconds = window_seconds
        self._window_end = 0  # the end of the pending chunk's window, in µs (with windows)
        self._end_offset = end_offset
        self._aligner_for = aligner_for
        self.aligner = aligner_for({}) if aligner_for is not None else None
        self._last_write = 0.0  # arrival of the last write (aligned cutting only)

    def spawn(self, emit: Emit) -> ChunkCutter:
        """A cutter with the same size, time and window rules, emitting to `emit`, with no byte
        limit of its own: the chunk being filled of one more session of the same stream
        (`streamtap.io.sessions`, which keeps the stream's byte limit itself)."""
        return ChunkCutter(
            self.max_bytes,
            self.max_seconds,
            emit,
            window_seconds=self._window_seconds,
            aligner_for=self._aligner_for,
        )

    def restart(self, origin: int) -> None:
        """A new session starts at stream offset `origin`: alignment starts again (its samples
        count from `origin`; frames are searched for afresh)."""
        if self.aligner is not None:
            self._cut()
            self.aligner.reset(origin)

    @property
    def end_offset(self) -> int | None:
        """Stream offset at which the stream ends (its byte limit), or None."""
        return self._end_offset

    @property
    def next_byte_offset(self) -> int:
        """Stream offset of the next byte to come (a seekable session resumes there)."""
        return self.offset + len(self.pending)

    def room(self) -> int:
        """Bytes the chunk being filled can still take."""
        return self.max_bytes - len(self.pending)

    def write(self, data: bytes, now: float, whole: bool = False) -> int:
        """Takes bytes that arrived at `now` (epoch seconds); cuts every chunk they complete.

        `data` may be a memoryview of the caller's reused buffer: it is read during the call only.
        whole=True keeps `data` inside one chunk (a UDP datagram). Returns how many bytes were
        taken: all of them, unless the byte limit came first (then `limit_reached` is set).
        """
        if self.aligner is not None:
            return self._write_aligned(data, now, whole)
        pending = self.pending
        if self._end_offset is not None:
            room = self._end_offset - self.offset - len(pending)
            if len(data) >= room:
                data = data[: max(room, 0)]
                self.limit_reached = True
        max_bytes = self.max_bytes
        if whole and pending and len(pending) + len(data) > max_bytes:
            self._cut()
        if pending and self._window_micros and event_micros(now) >= self._window_end:
            self._cut()  # its window ended before these bytes came (the caller's timer was late)
        if not pending:
            self._start(now)
        view = memoryview(data)
        while view:
            room = max_bytes - len(pending)
            if whole and len(view) > room and not pending:
                room = len(view)  # a single record larger than max_bytes stays whole
            if not pending and len(view) >= room:
                # A whole chunk within this read: cut straight from it, not through the pending
                # buffer (one copy fewer; none when the read is exactly one chunk of bytes).
                exact = len(view) == len(data) == room and type(data) is bytes
                self._cut(data if exact else bytes(view[:room]))
                self._start(now)
            else:
                pending += view[:room]
                if len(pending) >= max_bytes:
                    self._cut()
                    self._start(now)
            view = view[room:]
        return len(data)

    def cut(self) -> None:
        """Cuts the pending bytes, if any, into a chunk now."""
        self._cut()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Sets the tags of the bytes written from now on; a change cuts the pending chunk."""
        tags = dict(tags)
        if tags != self.tags:
            if self._aligner_for is None:
                self._cut()
                self.tags = tags
                return
            aligner = self._aligner_for(tags)
            if getattr(aligner, "kind", None) != getattr(self.aligner, "kind", None):
                self._cut()  # every byte so far, by the old rule
                if aligner is not None:
                    aligner.reset(self.offset)
                self.aligner = aligner
            elif self.aligner is not None:
                # A title change mid-frame: the frame goes with the new tags (a chunk's tags hold
                # for every whole frame in it).
                self._cut_aligned(self._last_write, soft=True)
            self.tags = tags

    def due_at(self) -> float:
        """When the pending chunk is due (epoch seconds): max_seconds old, or its window's end."""
        due = self.first_byte_time + self.max_seconds
        if self._window_micros:
            due = min(due, self._window_end / 1e6)
        return due

    def cut_if_due(self, now: float) -> bool:
        """Cuts the pending chunk if it is due at `now`; False if it is not due yet (or empty)."""
        if not self.pending or self.due_at() > now:
            return False
        if self.aligner is not None:
            self._cut_aligned(now, soft=True)
        else:
            self._cut()
        return True

    def _start(self, now: float) -> None:
        """The next byte taken starts a chunk at `now`."""
        self.first_byte_time = now
        if self._window_micros:
            start = event_micros(now)
            self._window_end = start - start % self._window_micros + self._window_micros

    def _cut(self, payload: bytes | None = None) -> None:
        """Emits the pending bytes as a chunk (or `payload`, a whole chunk taken straight from a
        read while nothing is pending).

        The pending bytes are cleared only after emit() returned: a reader on another thread
        then always finds them pending or emitted (or both), never neither.
        """
        pending = self.pending
        if payload is None:
            if not pending:
                return
            if self.aligner is not None:
                self._cut_aligned(self._last_write, soft=False)
                return
            payload = bytes(pending)
        self._emit(payload, self.offset, self.first_byte_time, self.tags)
        pending.clear()
        self.offset += len(payload)

    # --- aligned cutting (only with an aligner) --------------------------------------------------

    def _write_aligned(self, data: bytes, now: float, whole: bool) -> int:
        """write() with an aligner: the bytes go through the pending buffer, and each cut falls
        on the last boundary the aligner confirms within the limits."""
        pending = self.pending
        if self._end_offset is not None:
            room = self._end_offset - self.offset - len(pending)
            if len(data) >= room:
                data = data[: max(room, 0)]
                self.limit_reached = True
        max_bytes = self.max_bytes
        if whole and pending and len(pending) + len(data) > max_bytes:
            self._cut_aligned(now, soft=False)  # a datagram is never split: it comes first
        if pending and self._window_micros and event_micros(now) >= self._window_end:
            self._cut_aligned(now, soft=True)
        if not pending:
            self._start(now)
        self._last_write = now
        view = memoryview(data)
        # Pieces of at most max_bytes, so pending stays under 2 * max_bytes (cheap to shift).
        for start in range(0, len(view), max_bytes):
            pending += view[start : start + max_bytes]
            self._cut_to_limit(now, whole)
        return len(data)

    def _cut_to_limit(self, now: float, whole: bool = False) -> None:
        """Cuts what the aligner says must be cut now, and at the last boundary within
        max_bytes while the pending bytes reach it."""
        pending, aligner, max_bytes = self.pending, self.aligner, self.max_bytes
        while pending:
            aligner.feed(pending, self.offset)
            end = aligner.forced()
            if not (0 < end <= max_bytes and end <= len(pending)):
                if len(pending) < max_bytes or whole:
                    break
                end = aligner.last_bound(max_bytes) or max_bytes
            self._emit_head(end, aligner.take(end))
            if pending:
                self._start(now)  # carried over: the time of the cut

    def _cut_aligned(self, now: float, soft: bool) -> None:
        """Cuts on time, a window end or a tag change (soft: at the last confirmed boundary; a
        frame still arriving is held) or at a session's end (every byte, the complete frames
        first)."""
        pending, aligner = self.pending, self.aligner
        while pending:
            aligner.feed(pending, self.offset)
            end = aligner.forced()
            if not 0 < end <= len(pending):
                if soft:
                    end = aligner.soft_bound(pending)
                    if not end:
                        break
                else:
                    end = aligner.final_bound(pending) or len(pending)
            self._emit_head(end, aligner.take(end))
            if pending:
                self._start(now)  # carried over: the time of the cut
            if soft:
                break
        if pending:
            self._start(now)

    def _emit_head(self, end: int, extra_tags: Mapping[str, str]) -> None:
        """Emits the first `end` pending bytes as a chunk, with the aligner's tags."""
        pending = self.pending
        payload = bytes(pending) if end == len(pending) else bytes(pending[:end])
        self._emit(payload, self.offset, self.first_byte_time, {**self.tags, **extra_tags})
        del pending[:end]
        self.offset += end
