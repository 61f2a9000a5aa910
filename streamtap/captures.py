"""Reading a finished capture back: verify it and reassemble streams from it.

A capture location is whatever a sink plug-in reads back (`streamtap.plugins`): a Parquet
directory (`./capture`), a Kafka topic (`kafka://host:port[,host:port]/topic`), ... `verify`
proves that every stream in it is complete: seq numbers contiguous from 0, every chunk starting
where the previous one ended, and every checksum right, except at chunks marked as discontinuities, where bytes may be missing (never repeated).
A chunk delivered twice with the same key and the same bytes is a redelivery (at-least-once
sinks retry) and is dropped; the same key with different bytes is an error.
"""

from __future__ import annotations

import datetime
import heapq
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable

from streamtap.chunk import Chunk
from streamtap.plugins import PLUGINS

__all__ = ["StreamReport", "read_capture", "verify", "reassemble", "parse_time"]

# A report lists at most this many problems per stream; the rest are counted.
_MAX_LISTED_PROBLEMS = 20


def read_capture(location: str, stream_id: str | None = None) -> Iterable[Chunk]:
    """Every chunk stored at `location` (any order), optionally of one stream only, read back by
    the sink plug-in that owns the location's URI scheme."""
    return PLUGINS.read_capture(location, stream_id)


@dataclass
class _ChunkInfo:
    """What verify keeps of a chunk: everything but the payload."""

    session: str
    seq: int
    offset: int
    length: int
    crc32c: int
    discontinuity: bool
    event_time: float


@dataclass
class StreamReport:
    stream_id: str
    chunks: int = 0
    bytes: int = 0
    sessions: int = 0
    discontinuities: int = 0
    redeliveries: int = 0
    first_event_time: float | None = None
    last_event_time: float | None = None
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < _MAX_LISTED_PROBLEMS:
            self.problems.append(text)

    def as_json(self) -> dict:
        """The report as plain data, with the numbers of `summary()` (times in ISO 8601)."""
        return {
            "stream_id": self.stream_id,
            "ok": self.ok,
            "chunks": self.chunks,
            "bytes": self.bytes,
            "sessions": self.sessions,
            "discontinuities": self.discontinuities,
            "redeliveries": self.redeliveries,
            "first_event_time": None if self.first_event_time is None else _iso(self.first_event_time),
            "last_event_time": None if self.last_event_time is None else _iso(self.last_event_time),
            "problem_count": self.problem_count,
            "problems": list(self.problems),
        }

    def summary(self) -> str:
        span = ""
        if self.first_event_time is not None:
            span = f"  {_iso(self.first_event_time)} .. {_iso(self.last_event_time)}"
        verdict = "OK" if self.ok else f"FAILED ({self.problem_count} problem(s))"
        return (
            f"{self.stream_id}: {self.chunks} chunks, {self.bytes} bytes, {self.sessions} "
            f"session(s), {self.discontinuities} marked discontinuity(ies), "
            f"{self.redeliveries} redelivered{span}  {verdict}"
        )


def verify(chunks: Iterable[Chunk], expected: Iterable[str] = ()) -> dict[str, StreamReport]:
    """Checks every stream in `chunks`; returns a report per stream id.

    expected: stream ids that must be there (the capture's configured streams); one with no
    chunk at all gets a failed report instead of going unmentioned.
    """
    infos: dict[str, dict[int, _ChunkInfo]] = {}
    reports: dict[str, StreamReport] = {}
    for chunk in chunks:
        report = reports.setdefault(chunk.stream_id, StreamReport(chunk.stream_id))
        stream = infos.setdefault(chunk.stream_id, {})
        if not chunk.checksum_ok():
            report.problem(f"seq {chunk.seq}: checksum mismatch: the payload is corrupt")
        info = _ChunkInfo(
            chunk.session, chunk.seq, chunk.offset, len(chunk.payload), chunk.crc32c,
            chunk.discontinuity, chunk.event_time,
        )
        earlier = stream.get(chunk.seq)
        if earlier is None:
            stream[chunk.seq] = info
        elif earlier == info:
            report.redeliveries += 1
        else:
            report.problem(
                f"seq {chunk.seq}: two different chunks (sessions {earlier.session} and "
                f"{info.session}): duplicate sequence number"
            )
    for stream_id, stream in infos.items():
        _check_order(reports[stream_id], [stream[seq] for seq in sorted(stream)])
    for stream_id in expected:
        if stream_id not in reports:
            reports[stream_id] = StreamReport(stream_id)
            reports[stream_id].problem("no chunk captured: the stream is configured but absent")
    return dict(sorted(reports.items()))


def _check_order(report: StreamReport, ordered: list[_ChunkInfo]) -> None:
    sessions = set()
    previous: _ChunkInfo | None = None
    for info in ordered:
        report.chunks += 1
        report.bytes += info.length
        sessions.add(info.session)
        report.discontinuities += info.discontinuity
        if report.first_event_time is None or info.event_time < report.first_event_time:
            report.first_event_time = info.event_time
        if report.last_event_time is None or info.event_time > report.last_event_time:
            report.last_event_time = info.event_time
        expected_seq = 0 if previous is None else previous.seq + 1
        if info.seq != expected_seq:
            report.problem(f"chunks seq {expected_seq}..{info.seq - 1} are missing (lost chunks)")
        if previous is not None:
            expected_offset = previous.offset + previous.length
            if info.offset < expected_offset:
                report.problem(
                    f"seq {info.seq}: starts at byte {info.offset}, before the end of seq "
                    f"{previous.seq} ({expected_offset}): {expected_offset - info.offset} bytes "
                    "overlap"
                )
            elif info.offset > expected_offset and not info.discontinuity:
                report.problem(
                    f"seq {info.seq}: {info.offset - expected_offset} bytes missing before it "
                    f"(bytes {expected_offset}..{info.offset - 1}) and not marked as a "
                    "discontinuity"
                )
        previous = info
    report.sessions = len(sessions)


def reassemble(
    chunks: Iterable[Chunk],
    output: BinaryIO,
    start: float | None = None,
    end: float | None = None,
    max_held_bytes: int = 256 * 2**20,
) -> dict[str, int]:
    """Writes the payloads of one stream's chunks to `output` in seq order, once each.

    Only chunks whose event time is in [start, end) are written (epoch seconds; None: no limit).
    Returns counts: chunks and bytes written, discontinuities inside the output.

    Memory stays bounded for days of a stream: chunks are written as soon as they are next in seq
    order, and only chunks that came early are held, up to `max_held_bytes` (the sinks' readers
    hand chunks over in about seq order). A held window that fills up is written from its lowest
    seq on, as the missing seqs are then missing from the capture. A chunk that turns up after a
    later one was written is an error (the output would be out of order), never silently dropped.
    """
    held: list[tuple[int, Chunk]] = []  # a heap by seq
    held_bytes = 0
    next_seq: int | None = None  # None: nothing written yet
    skipped: list[tuple[int, int]] = []  # seq ranges [from, to) written past as missing
    written = {"chunks": 0, "bytes": 0, "discontinuities": 0}

    def write_from_heap() -> None:
        nonlocal next_seq, held_bytes
        seq, chunk = heapq.heappop(held)
        held_bytes -= len(chunk.payload)
        if next_seq is not None and seq < next_seq:
            return  # a second copy of a chunk written already
        if next_seq is not None and seq > next_seq:
            skipped.append((next_seq, seq))
        if chunk.discontinuity and written["chunks"] > 0:
            written["discontinuities"] += 1
        output.write(chunk.payload)
        written["chunks"] += 1
        written["bytes"] += len(chunk.payload)
        next_seq = seq + 1

    for chunk in chunks:
        if (start is not None and chunk.event_time < start) or (
            end is not None and chunk.event_time >= end
        ):
            continue
        if next_seq is not None and chunk.seq < next_seq:
            if any(low <= chunk.seq < high for low, high in skipped):
                raise ValueError(
                    f"stream {chunk.stream_id}: chunk seq {chunk.seq} came after later chunks "
                    f"were written (more than {max_held_bytes:,} bytes out of order)"
                )
            continue  # a redelivery of a chunk already written
        heapq.heappush(held, (chunk.seq, chunk))
        held_bytes += len(chunk.payload)
        while held and held_bytes > max_held_bytes:
            write_from_heap()
        while held and next_seq is not None and held[0][0] <= next_seq:
            write_from_heap()
    while held:
        write_from_heap()
    return written


def parse_time(text: str) -> float:
    """ISO 8601 ('2026-11-30T10:00:00Z', no zone means UTC) -> epoch seconds."""
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time like 2026-11-30T10:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def _iso(epoch: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
