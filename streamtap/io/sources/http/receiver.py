"""Receiving a response body in the protocol's data_received: the per-read path of the `http`
source, where 1,000 live streams spend their CPU.

After the response head, `BodyReceiver` takes the connection's transport over from asyncio's
stream protocol. Each socket read goes from the transport's `data_received` straight through
the body decoder (framing removed) to `deliver` (the connector's: ICY split, the sink's write),
with no StreamReader buffer, future, task step or coroutine chain in between: the streams API
cost four Python layers and a task wake-up per read. The receiver keeps what the read loop did:

- gathering: after a read of under 16 KiB it stops reading for `gather_seconds`, so a slow
  stream's packets gather in the kernel and come in one read: over TCP by leaving the event
  loop's selector for a `PollTicker` that reads the socket once per period
  (`streamtap.io.sources.http.polling`), over TLS by pausing the transport for the period;
- backpressure: after each read it asks the sink for room (`ByteSink.wait_for_room`, without
  awaiting when there is room) and, when there is none, stops reading until the connector's
  task has awaited it;
- the read timeout: one watchdog timer per connection aborts it when no byte came for
  `read_timeout` seconds while it was reading or gathering.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from streamtap.errors import SourceError
from streamtap.io.connector import ByteSink
from streamtap.io.sources.http.connection import Connection
from streamtap.io.sources.http.polling import PollTicker
from streamtap.io.sources.http.response import BodyDecoder

__all__ = ["SMALL_READ", "BodyReceiver", "receive_body", "sink_has_room"]

SMALL_READ = 16 * 1024  # a read under this size lets the next bytes gather (gather_seconds)
_POLL_READ_SIZE = 64 * 1024  # most bytes a poll reads (a full read sends the stream back)


async def receive_body(
    conn: Connection, decoder: BodyDecoder, deliver: Callable[[bytes], None], sink: ByteSink
) -> None:
    """Receives the body after the head read from `conn`: each piece, framing removed, goes to
    `deliver`. Returns at its clean end; raises SourceError (or the sink's error)."""
    receiver = BodyReceiver(
        conn.transport,
        decoder,
        deliver,
        sink,
        stall_error=conn.stall_error,
        lost_error=conn.lost_error,
        read_timeout=conn.read_timeout,
        gather_seconds=conn.gather_seconds,
    )
    await sink.wait_for_room()  # before the first body bytes, buffered or not, are written
    buffered, ended = await conn.take_over(receiver)
    receiver.start(buffered, ended)
    await receiver.run()


def sink_has_room(sink: ByteSink) -> bool:
    """True when `sink.wait_for_room()` would return at once.

    Runs the coroutine one step instead of awaiting it: a read must not wait for a task step
    (the cost this module removes) when, as almost always, there is room.
    """
    probe = sink.wait_for_room()
    try:
        probe.send(None)
    except StopIteration:
        return True
    probe.close()  # it was about to wait: the connector's task awaits it instead
    return False


class BodyReceiver(asyncio.Protocol):
    """The protocol of a connection while its response body is received (see the module).

    `run()` is awaited by the connector's task: it returns at the body's clean end and raises
    the session's SourceError (bad framing, a stall, a failed socket, the sink's error).
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        decoder: BodyDecoder,
        deliver: Callable[[bytes], None],
        sink: ByteSink,
        *,
        stall_error: Callable[[], SourceError],
        lost_error: Callable[[OSError], SourceError],
        read_timeout: float,
        gather_seconds: float,
    ):
        self._transport = transport
        self._decoder = decoder
        self._deliver = deliver
        self._sink = sink
        self._stall_error = stall_error
        self._lost_error = lost_error
        self._read_timeout = read_timeout
        self._gather_seconds = gather_seconds
        self._loop = asyncio.get_running_loop()
        # Done when the body ended, the session failed (_error) or the sink is full: run() acts.
        self._wake: asyncio.Future = self._loop.create_future()
        self._ended = False
        self._error: BaseException | None = None
        self._gathering: asyncio.TimerHandle | None = None  # resumes reading after the pause
        # Over plain TCP a gathering stream's socket is read by the loop's PollTicker instead.
        self._fd: int | None = None
        socket = transport.get_extra_info("socket")
        if gather_seconds and socket is not None and transport.get_extra_info("sslcontext") is None:
            self._fd = socket.fileno()
            self._ticker = PollTicker.of(self._loop, gather_seconds)
        self._polling = False
        self._waiting_for_room = False
        self._last_activity = time.monotonic()  # last byte, or reading resumed after a full sink
        self._watchdog: asyncio.TimerHandle | None = None

    # --- the connector's side --------------------------------------------------------------------

    def start(self, buffered: bytes, ended: bool) -> None:
        """Takes the bytes the stream protocol had buffered after the head, and whether the
        connection had already ended (EOF) by then; reading resumes unless the body is over."""
        if self._decoder.done:
            self._end(None)
            return
        if buffered:
            self._received(buffered, gather=False)
        if ended:
            self._end(self._decoder.end_error())
        if not self._ended:
            self._watchdog = self._loop.call_later(self._read_timeout, self._check_stall)
            self._resume_if_free()

    async def run(self) -> None:
        """Waits for the body's end, letting the sink make room whenever it is full."""
        while True:
            await self._wake
            if self._ended:
                if self._error is not None:
                    raise self._error
                return
            await self._sink.wait_for_room()  # the sink was full
            if not self._ended:
                self._wake = self._loop.create_future()
                self._waiting_for_room = False
                self._last_activity = time.monotonic()
                self._resume_if_free()

    def stop(self) -> None:
        """Stops receiving (the connection is being closed): nothing more reaches the sink."""
        self._ended = True
        self._cancel_timers()

    # --- the transport's side --------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self._ended:
            self._received(data, gather=self._gather_seconds > 0)

    def eof_received(self) -> bool:
        if not self._ended:
            self._end(self._decoder.end_error())
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if self._ended:
            return
        if isinstance(exc, OSError):
            self._end(self._lost_error(exc))
        elif exc is not None:
            self._end(SourceError(f"connection failed: {exc}"))
        else:
            self._end(self._decoder.end_error())

    # --- internals -------------------------------------------------------------------------------

    def _received(self, data: bytes, gather: bool) -> None:
        self._last_activity = time.monotonic()
        try:
            deliver = self._deliver
            for piece in self._decoder.feed(data):
                deliver(piece)
            if self._decoder.done:
                self._end(self._decoder.failure)
                return
            has_room = sink_has_room(self._sink)
        except Exception as error:  # noqa: BLE001 - bad framing, or the sink's: the session's error
            self._end(error)
            return
        if not has_room:
            self._transport.pause_reading()
            self._stop_polling()
            self._waiting_for_room = True
            if not self._wake.done():
                self._wake.set_result(None)
        elif gather and len(data) < SMALL_READ:
            # The cost of a live stream is per read, not per byte: Icecast writes a 128 kbit/s
            # stream in ~12 pieces a second; paused, the kernel keeps them for the next read.
            if self._fd is None:
                self._transport.pause_reading()
                self._gathering = self._loop.call_later(self._gather_seconds, self._gathered)
            elif not self._polling:
                self._transport.pause_reading()
                self._polling = True
                self._ticker.add(self)
        elif self._polling:  # a full read: the stream is fast, read it as it comes
            self._stop_polling()
            self._resume_if_free()

    def poll(self) -> None:
        """Reads the socket once without waiting (the PollTicker's call, every gather period)."""
        if self._ended:
            self._stop_polling()
            return
        try:
            data = os.read(self._fd, _POLL_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return  # nothing came this period
        except OSError as error:
            self._end(self._lost_error(error))
            self._transport.abort()
            return
        if data:
            self._received(data, gather=True)
            return
        self._end(self._decoder.end_error())  # the server closed the connection
        self._transport.close()

    def _stop_polling(self) -> None:
        if self._polling:
            self._polling = False
            self._ticker.discard(self)

    def _gathered(self) -> None:
        self._gathering = None
        self._resume_if_free()

    def _resume_if_free(self) -> None:
        if not (self._ended or self._waiting_for_room or self._gathering or self._polling):
            self._transport.resume_reading()

    def _check_stall(self) -> None:
        """Aborts the connection when no byte came for read_timeout seconds (the watchdog)."""
        self._watchdog = None
        if self._ended:
            return
        waited = 0.0 if self._waiting_for_room else time.monotonic() - self._last_activity
        if waited >= self._read_timeout:
            self._end(self._stall_error())
            self._transport.abort()
            return
        self._watchdog = self._loop.call_later(self._read_timeout - waited, self._check_stall)

    def _end(self, error: BaseException | None) -> None:
        """The body ended (error None) or the session failed: run() returns or raises."""
        if self._ended:
            return
        self._ended = True
        self._cancel_timers()
        self._error = error
        self._transport.pause_reading()
        if not self._wake.done():
            self._wake.set_result(None)

    def _cancel_timers(self) -> None:
        self._stop_polling()
        for timer in (self._watchdog, self._gathering):
            if timer is not None:
                timer.cancel()
        self._watchdog = self._gathering = None
