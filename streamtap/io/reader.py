"""StreamReader: keeps one stream flowing into chunks, and holds them until the runner commits them.

A reader lives on the hub's event loop (`streamtap.io.hub`): it keeps a session of its connector
open, reconnects with backoff, marks discontinuities, and feeds what it receives to its
`ChunkCutter` (`streamtap.io.cutting`, the rules of where chunks are cut), numbering every chunk
cut. The source SDF (`streamtap.io.streams`) drains those chunks on each `process()` call and
claims them in its restriction.

Chunks stay in the reader until the runner commits them: the restriction's next sequence number
at the next `process()` call is the commit point. A bundle that failed is retried with the old
restriction, and the reader hands out the very same chunks again (same seq, same bytes), so a
retry never loses or renumbers live data. Only the death of the worker process loses what it held
in memory; the stream then restarts from the restriction on another worker and the first chunk is
marked as a discontinuity.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping

from streamtap.chunk import Chunk, make_chunk
from streamtap.config import ChunkSettings, SourceConfig
from streamtap.errors import PermanentSourceError, SourceError, describe_error
from streamtap.io import alarms
from streamtap.io.connector import Connector
from streamtap.io.cutting import ChunkCutter, event_micros
from streamtap.io.framing import aligner_choice
from streamtap.io.ratewatch import OK, RateWatch, log_rate_change
from streamtap.io.sessions import ConcurrentSession, concurrent_watermark
from streamtap.io.stream_state import StreamPosition, StreamStats
from streamtap.io.ticking import TICK_SECONDS, ticker

__all__ = ["StreamReader"]

_LOGGER = logging.getLogger(__name__)

# A reader stops reading while this many received bytes wait to be handed over to the runner
# (backpressure). Chunks handed over and not yet committed (their bundle is still writing them)
# do not count: a fast stream reads on while its last bundle finishes its files, instead of the
# two taking turns (scenario 1 in BENCHMARKS.md); it then holds up to about twice this.
_BUFFER_LIMIT_BYTES = 64 * 1024 * 1024
# Readers are checked for their deadline and stop requests every TICK_SECONDS, all of a loop at
# once (streamtap.io.ticking). Cuts on time do not wait for it: each chunk being filled has a
# timer for when it is due (see write(); streamtap.io.alarms).


class StreamReader:
    """Keeps one stream flowing into chunks: sessions, reconnects, numbering, buffering.

    Producer side (the hub's event loop): the ByteSink methods `write`, `set_tags`, `room`,
    `wait_for_room`. Consumer side (the SDF, another thread): `sync`, `chunk`, `finished`,
    `watermark`. A lock guards what both sides touch.

    With `window_seconds`, a chunk is also cut where its fixed event-time window ends, so every
    byte of a chunk arrived within the window its event time names, and a window's last chunk
    is complete the moment the window ends instead of up to max_seconds later.

    `stop_requested`, if given, is asked every tick whether the stream must end now (Ctrl-C, a
    stop file: the hub's stop requests).
    """

    def __init__(
        self,
        source: SourceConfig,
        chunking: ChunkSettings,
        position: StreamPosition,
        window_seconds: float | None = None,
        stop_requested: Callable[[], bool] | None = None,
    ):
        self.source = source
        self.stream_id = source.id
        expected_rate = float(source.expected_rate) if source.expected_rate else None
        self.stats = StreamStats(expected_rate=expected_rate)
        self.rate_watch = RateWatch(chunking.max_seconds, expected_rate, start=time.time())
        self._connector: Connector = source.connector()
        self._deadline = position.deadline
        self._stop_requested = stop_requested
        self._on_eof = source.on_eof or ("stop" if self._connector.ends_at_eof else "reconnect")
        self._user_tags = dict(source.tags)
        self._lock = threading.Lock()
        self._new_data = threading.Condition(self._lock)
        # Chunks cut but not yet committed, in seq order, and the seq the next cut chunk gets.
        self._retained: collections.deque[Chunk] = collections.deque()
        self._retained_bytes = 0
        # Of those, the bytes the SDF has handed over (seq < _emitted_seq).
        self._handed_bytes = 0
        self._next_seq = position.next_seq
        self._cutter = ChunkCutter(
            chunking.max_bytes,
            chunking.max_seconds,
            self._retain,
            offset=position.next_offset,
            window_seconds=window_seconds,
            end_offset=position.end_offset,
            aligner_for=aligner_choice(chunking.align, source),
        )
        self._session = ""
        self._next_offset = position.next_offset  # of the next chunk cut
        # Sessions run at once (open_session; streamtap.io.sessions), and whether there were any.
        self._sessions: list[ConcurrentSession] = []
        self._concurrent = False
        # A resumed restriction (seq > 0) means an earlier reader's session is gone.
        self._mark_discontinuity = position.next_seq > 0
        self._awaiting_first_byte = False
        self._finished = False
        self._stopping = False
        self._task: asyncio.Task | None = None
        self._session_task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cut_armed = False  # a cut timer is set (streamtap.io.alarms)
        self._writing = False
        self._idle_watermark = 0.0
        # The next seq the SDF emits (set by watermark()); the hub's min_watermark() uses it.
        self._emitted_seq = position.next_seq
        self.last_used = time.monotonic()

    # --- consumer side: called by the SDF ------------------------------------------------------

    def sync(self, position: StreamPosition) -> bool:
        """Commits chunks before `position.next_seq`; returns False if the reader cannot serve it.

        False means the restriction is not where this reader is (the stream was read elsewhere
        in between): the caller replaces the reader with a fresh one at `position`.
        """
        with self._lock:
            self.last_used = time.monotonic()
            oldest = self._retained[0].seq if self._retained else self._next_seq
            if not oldest <= position.next_seq <= self._next_seq:
                return False
            stats = self.stats
            while self._retained and self._retained[0].seq < position.next_seq:
                chunk = self._retained.popleft()
                size = len(chunk.payload)
                self._retained_bytes -= size
                if chunk.seq < self._emitted_seq:
                    self._handed_bytes -= size
                stats.committed_chunks += 1
                stats.committed_bytes += size
            return True

    def chunk(self, seq: int) -> Chunk | None:
        """The chunk with sequence number `seq` if it has been cut, else None."""
        with self._lock:
            return self.chunk_unlocked(seq)

    def chunk_unlocked(self, seq: int) -> Chunk | None:
        if not self._retained:
            return None
        index = seq - self._retained[0].seq
        if 0 <= index < len(self._retained):
            return self._retained[index]
        return None

    def releasable(self, seq: int, before_micros: int | None) -> list[Chunk]:
        """The chunks cut from `seq` on, in order, up to the first whose event time (µs) is
        `before_micros` or later (None: every chunk cut)."""
        with self._lock:
            if not self._retained:
                return []
            first = seq - self._retained[0].seq
            if first < 0 or first >= len(self._retained):
                return []
            chunks = list(itertools.islice(self._retained, first, None))
        if before_micros is None:
            return chunks
        for index, chunk in enumerate(chunks):
            if event_micros(chunk.event_time) >= before_micros:
                return chunks[:index]
        return chunks

    def finished(self, seq: int) -> bool:
        """True when no chunk with sequence number >= seq will ever come."""
        with self._lock:
            return self._finished and seq >= self._next_seq

    def watermark(self, next_seq: int) -> float:
        """No chunk from `next_seq` on has an event time before this (epoch seconds).

        With nothing received, that is the clock, read before looking at the reader's state: a
        write() that starts later reads a later clock for its bytes. A write() already under way
        may have read an earlier one, so then the last idle watermark is repeated instead.
        (Returning the clock there, and between a cut and the chunk being retained, made ~1% of
        chunks late for their window: they were only written when the capture ended.)
        """
        self._set_emitted(next_seq)
        return self._watermark(next_seq)

    def _set_emitted(self, next_seq: int) -> None:
        """The SDF has handed over every chunk before `next_seq` (see _BUFFER_LIMIT_BYTES)."""
        with self._lock:
            if next_seq >= self._emitted_seq:  # on, as after every poll: add what was handed
                first = self._retained[0].seq if self._retained else next_seq
                handed = itertools.islice(
                    self._retained, max(self._emitted_seq - first, 0), max(next_seq - first, 0)
                )
                self._handed_bytes += sum(len(chunk.payload) for chunk in handed)
            else:  # back (a retried bundle): count again
                self._handed_bytes = sum(
                    len(chunk.payload) for chunk in self._retained if chunk.seq < next_seq
                )
            self._emitted_seq = next_seq

    def current_watermark(self) -> float:
        """watermark() at the seq the SDF last asked about (for the hub's min_watermark())."""
        return self._watermark(self._emitted_seq)

    def _watermark(self, next_seq: int) -> float:
        now = time.time()
        with self._lock:
            if self._concurrent:
                return concurrent_watermark(self, next_seq, now)
            waiting = self.chunk_unlocked(next_seq)
            if waiting is not None:
                return waiting.event_time
            if self._cutter.pending:
                return self._cutter.first_byte_time
            if self._writing:
                return self._idle_watermark
            self._idle_watermark = now
            return now

    def horizon(self) -> float:
        """No chunk cut from now on has an event time before this (epoch seconds)."""
        with self._lock:
            next_cut_seq = self._next_seq
        return self._watermark(next_cut_seq)

    def ended(self) -> bool:
        """True once the stream has finished: every chunk it will have is cut."""
        return self._finished

    def retained_bytes(self) -> int:
        """Bytes of the chunks cut and not yet committed."""
        return self._retained_bytes

    def wait(self, timeout: float) -> None:
        """Blocks until a chunk is cut or the stream finishes, at most `timeout` seconds."""
        with self._new_data:
            self._new_data.wait(timeout)

    # --- producer side: the ByteSink the connector writes into ---------------------------------

    def write(self, data: bytes, whole: bool = False) -> None:
        if not data or self._finished:
            return
        # These bytes get first-byte times from a clock reading taken below; until they are in
        # the pending chunk, watermark() must not report a later clock reading (see there).
        self._writing = True
        try:
            self._write(data, whole)
        finally:
            self._writing = False

    def _write(self, data: bytes, whole: bool) -> None:
        if self._awaiting_first_byte:
            self._awaiting_first_byte = False
            # A seekable session resumed exactly at our offset: nothing can be missing.
            if self._connector.seekable:
                self._mark_discontinuity = False
        cutter = self._cutter
        now = time.time()
        self.stats.bytes += cutter.write(data, now, whole)
        if cutter.pending and not self._cut_armed and self._loop is not None:
            self._cut_armed = True
            alarms.call_later(self._loop, cutter.due_at() - now, self._on_cut_timer)
        if cutter.limit_reached:
            self._stopping = True
        if self._stopping:
            self._finish()

    def _on_cut_timer(self) -> None:
        """Cuts the pending chunk once it is due (re-arms for a younger one)."""
        self._cut_armed = False
        cutter = self._cutter
        if not cutter.pending or self._finished:
            return
        now = time.time()
        if not cutter.cut_if_due(now):
            self._cut_armed = True
            alarms.call_later(self._loop, cutter.due_at() - now, self._on_cut_timer)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._cutter.set_tags(tags)

    def room(self) -> int:
        """Bytes the chunk being filled can still take."""
        return self._cutter.room()

    async def wait_for_room(self) -> None:
        while (self._retained_bytes - self._handed_bytes > _BUFFER_LIMIT_BYTES
               and not self._finished):
            await asyncio.sleep(0.01)

    def open_session(self, tags: Mapping[str, str]) -> ConcurrentSession:
        """A session of its own beside others at once (see ByteSink.open_session)."""
        return ConcurrentSession(self, tags)

    def _retain(
        self,
        payload: bytes,
        offset: int,
        first_byte_time: float,
        tags: Mapping[str, str],
        session: str | None = None,
        discontinuity: bool = False,
    ) -> None:
        """The cutter's emit: numbers a cut chunk and keeps it until the runner commits it.

        Retained before the cutter clears its pending bytes, so watermark() always sees these
        bytes pending or retained, never neither. `session`, `discontinuity`: those of a
        concurrent session's chunk; None: the reader's own session.
        """
        if session is None:
            session, discontinuity = self._session, self._mark_discontinuity
            self._mark_discontinuity = False
        chunk = make_chunk(
            self.stream_id,
            session,
            self._next_seq,
            offset,
            payload,
            first_byte_time,
            discontinuity,
            {**self._user_tags, **tags},
        )
        if discontinuity:
            self.stats.discontinuities += 1
        with self._new_data:
            self._retained.append(chunk)
            self._retained_bytes += len(payload)
            self._next_offset = offset + len(payload)
            self._next_seq += 1
            self.stats.chunks += 1
            self._new_data.notify_all()

    # --- the reader's own life on the event loop -----------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        def begin() -> None:
            self._loop = loop
            self._task = loop.create_task(self._run())

        loop.call_soon_threadsafe(begin)

    def stop(self) -> None:
        """Asks the reader to cut what it has and finish (called from any thread)."""
        self._stopping = True

    def check_rate(self, now: float) -> None:
        """Runs the rate watch on the byte counter (the hub calls it every `rate_watch.period`
        seconds, on the event loop); logs a flag at WARNING, a recovery at INFO."""
        if self._finished:
            return
        change = self.rate_watch.check(now, self.stats.bytes)
        self.stats.shortfall = self.rate_watch.shortfall
        if change is not None:
            self.stats.rate_state = change.after
            self.stats.rate_flags = self.rate_watch.flags
            log_rate_change(self.stream_id, change)

    async def _run(self) -> None:
        checks = ticker(asyncio.get_running_loop())
        checks.add(self)
        delay = self.source.reconnect.initial_delay
        try:
            while not self._finished:
                self._start_session()
                received_before = self.stats.bytes
                self._session_task = asyncio.get_running_loop().create_task(
                    self._connector.run_session(self, self._cutter.next_byte_offset)
                )
                try:
                    await self._session_task
                    ended_by = "end of data"
                except asyncio.CancelledError:
                    if self._finished:
                        break
                    raise
                except (SourceError, OSError, asyncio.TimeoutError, EOFError) as error:
                    ended_by = describe_error(error)
                    self._report_error(ended_by, permanent=isinstance(error, PermanentSourceError))
                except Exception as error:  # a connector's bug, likely on one input: retried too
                    _LOGGER.exception("%s: the session failed on an unexpected error", self.stream_id)
                    ended_by = f"internal error ({type(error).__name__}), see the log"
                    self._report_error(ended_by, permanent=True)
                self._cutter.cut()
                if self._finished:
                    break
                if ended_by == "end of data" and self._on_eof == "stop":
                    _LOGGER.info("%s: end of data at byte %d", self.stream_id, self._cutter.offset)
                    self._finish()
                    break
                if self.stats.bytes > received_before:
                    delay = self.source.reconnect.initial_delay
                self.stats.state = f"reconnecting in {delay:.1f}s ({ended_by})"
                await self._sleep_unless_finished(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.source.reconnect.max_delay)
                self.stats.reconnects += 1
        except Exception:  # a bug in the reader must not kill the other streams silently
            _LOGGER.exception("%s: reader failed", self.stream_id)
            self._report_error("internal error, see the worker log", permanent=True, retry=False)
            self._finish()
        finally:
            checks.discard(self)
            await self._connector.close()

    def _start_session(self) -> None:
        self._session = uuid.uuid4().hex[:16]
        self.stats.sessions += 1
        self.stats.state = f"reading {self._connector.describe()}"
        self._awaiting_first_byte = True
        # Alignment starts again: a seekable source's samples count from offset 0, a live
        # one's from where this session starts.
        self._cutter.restart(0 if self._connector.seekable else self._cutter.next_byte_offset)
        if self.stats.sessions > 1:
            self._mark_discontinuity = True

    def check_end(self, now: float) -> None:
        """Ends the stream on its deadline or a stop request (the loop's _Ticker asks every
        TICK_SECONDS; cuts on time have their own timer)."""
        if not self._finished and (
            self._stopping
            or (self._stop_requested is not None and self._stop_requested())
            or (self._deadline is not None and now >= self._deadline)
        ):
            self._finish()

    async def _sleep_unless_finished(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._finished and time.monotonic() < end:
            await asyncio.sleep(min(TICK_SECONDS, end - time.monotonic()))

    def _finish(self) -> None:
        if self._finished:
            return
        self._cutter.cut()
        for session in list(self._sessions):
            session.cut()
        with self._new_data:
            self._finished = True
            self._new_data.notify_all()
        self.stats.state = "finished"
        self.stats.rate_state, self.stats.shortfall = OK, None  # an ended stream owes nothing
        if self._session_task is not None and not self._session_task.done():
            self._session_task.cancel()

    def _report_error(self, message: str, permanent: bool, retry: bool = True) -> None:
        self.stats.errors += 1
        self.stats.last_error = message
        log = _LOGGER.error if permanent or self.stats.errors == 1 else _LOGGER.warning
        log("%s: %s (%s); %s", self.stream_id, message, self._connector.describe(),
            "will retry" if retry else "the stream has stopped")
