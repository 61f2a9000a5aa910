"""The hub: one asyncio event loop per worker process, and the stream readers running on it.

Live sockets are not replayable, so they cannot be read inside `DoFn.process()`, which runs only
when the runner schedules it. Instead each worker process runs one asyncio event loop in a daemon
thread (not a thread per stream); every stream the worker owns has a `StreamReader`
(`streamtap.io.reader`) on that loop, attached by the source SDF and released once its last chunk
was committed. The hub also answers for the process as a whole: the lowest watermark of its
streams, stop requests (Ctrl-C, a run's stop file), and freezing the capture's long-lived objects
out of the garbage collector's sight.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import threading
import time

from streamtap.config import ChunkSettings, SourceConfig
from streamtap.io.reader import StreamReader
from streamtap.io.stream_state import StreamPosition, StreamStats

__all__ = ["clear_stop", "ended_streams", "hub", "mark_ended", "request_stop", "stop_requested"]

_LOGGER = logging.getLogger(__name__)

# Seconds after the first reader of a process started, when the capture's long-lived objects
# are frozen (see _freeze_long_lived): by then every stream of a group has started.
_FREEZE_AFTER_SECONDS = 30.0
# A stop file is looked for at most this often per process, however many readers ask.
_STOP_FILE_CHECK_SECONDS = 0.2
# The rate watches run at least this often (each reader asks for a quarter of its chunk interval).
_RATE_WATCH_SECONDS = 0.25

# --- stop requests -------------------------------------------------------------------------------

_STOP = threading.Event()
_STOP_FILES: dict[str, tuple[float, bool]] = {}  # path -> (checked at, existed)


def request_stop() -> None:
    """Asks every stream in this process to cut what it has received and finish (Ctrl-C)."""
    _STOP.set()


def clear_stop() -> None:
    """Forgets an earlier stop request (a new capture starts in this process)."""
    _STOP.clear()


def stop_requested(stop_file: str | None) -> bool:
    """True once request_stop() was called in this process or `stop_file` exists.

    Readers ask every tick; the file is stat'ed at most every 0.2 s per process, however many
    readers ask (one `os.path.exists` per reader and 0.05 s tick was 20,000 calls a second at
    1,000 streams).
    """
    if _STOP.is_set():
        return True
    if stop_file is None:
        return False
    now = time.monotonic()
    checked_at, existed = _STOP_FILES.get(stop_file, (-1e9, False))
    if not existed and now - checked_at >= _STOP_FILE_CHECK_SECONDS:
        existed = os.path.exists(stop_file)
        _STOP_FILES[stop_file] = (now, existed)
    return existed


def mark_ended(stop_file: str | None, stream_id: str) -> None:
    """Notes, beside the run's stop file (`<its dir>/ended/<stream id>`), that a stream of that run
    has ended here: `streamtap run` sees streams end in worker processes of this host too (a
    Flink worker pool), as it sees the stop file's requests reach them."""
    if stop_file is None:
        return
    marks = os.path.join(os.path.dirname(stop_file), "ended")
    try:
        os.makedirs(marks, exist_ok=True)
        with open(os.path.join(marks, stream_id), "w"):
            pass
    except OSError as error:  # the run is gone (its directory removed) or on another host
        _LOGGER.debug("%s: cannot mark the stream ended beside %s: %s", stream_id, stop_file,
                      error)


def ended_streams(stop_file: str) -> set[str]:
    """The streams of the run whose stop file is `stop_file` that ended (mark_ended) so far."""
    try:
        return set(os.listdir(os.path.join(os.path.dirname(stop_file), "ended")))
    except OSError:
        return set()


def _freeze_long_lived() -> None:
    """Moves the objects of a running capture out of the garbage collector's sight.

    Readers, connections and the runner's machinery live as long as the capture; every full
    collection walked them all again: at 1,000 streams one took ~0.45 s of the GIL, about one
    every 10 s. Frozen, they are still freed when unreferenced; only cycles among them are not.
    """
    gc.collect()
    gc.freeze()


# --- the hub -------------------------------------------------------------------------------------


class _Hub:
    """The event loop and the readers of this worker process (one instance: `hub()`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.readers: dict[str, StreamReader] = {}
        # Stats of streams whose capture ended in this process, for the final summary.
        self.finished: dict[str, StreamStats] = {}
        self._min_watermark = 0.0
        self._min_watermark_at = -1e9

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="streamtap-io", daemon=True)
            thread.start()
            loop.call_soon_threadsafe(loop.call_later, _FREEZE_AFTER_SECONDS, _freeze_long_lived)
            loop.call_soon_threadsafe(self._watch_rates)
            self._loop = loop
        return self._loop

    def attach(
        self,
        source: SourceConfig,
        chunking: ChunkSettings,
        position: StreamPosition,
        stop_file: str | None,
        window_seconds: float | None = None,
    ) -> StreamReader:
        """The reader serving `position` of this stream; starts one if needed.

        stop_file: the stream ends once this file exists (or on request_stop()).
        window_seconds: cut chunks where these fixed windows end too (see StreamReader).
        """
        with self._lock:
            reader = self.readers.get(source.id)
            if reader is not None and reader.sync(position):
                return reader
            if reader is not None:
                _LOGGER.warning(
                    "%s: restarting the reader at seq %d (it was elsewhere)",
                    source.id,
                    position.next_seq,
                )
                reader.stop()
            reader = StreamReader(
                source,
                chunking,
                position,
                window_seconds,
                stop_requested=functools.partial(stop_requested, stop_file),
            )
            reader.start(self._event_loop())
            self.readers[source.id] = reader
            return reader

    def _watch_rates(self) -> None:
        """Runs every reader's rate watch, then again after the shortest period they ask for.

        One sweep per process on the event loop, not a timer per reader (timers per reader cost
        a wake-up each; see reader._TICK_SECONDS); reading itself only counts bytes.
        """
        with self._lock:
            readers = list(self.readers.values())
        now = time.time()
        period = _RATE_WATCH_SECONDS
        try:
            for reader in readers:
                reader.check_rate(now)
                period = min(period, reader.rate_watch.period)
        except Exception:  # a bug here must not end the watch of every stream
            _LOGGER.exception("the rate watch failed")
        finally:
            self._loop.call_later(period, self._watch_rates)

    def min_watermark(self, max_age: float = 0.1) -> float:
        """The lowest watermark of all streams read in this process (epoch seconds).

        Recomputed at most every `max_age` seconds. A cached value stays a valid lower bound:
        every stream's watermark only moves forward, and a stream that starts later starts later.
        """
        now = time.monotonic()
        if now - self._min_watermark_at < max_age:
            return self._min_watermark
        with self._lock:
            readers = list(self.readers.values())
        value = min((r.current_watermark() for r in readers), default=time.time())
        self._min_watermark, self._min_watermark_at = value, now
        return value

    def release(self, reader: StreamReader) -> None:
        """Forgets a finished reader whose last chunk was committed."""
        with self._lock:
            if self.readers.get(reader.stream_id) is reader:
                del self.readers[reader.stream_id]
                self.finished[reader.stream_id] = reader.stats


_HUB = _Hub()


def hub() -> _Hub:
    """This process's hub."""
    return _HUB
