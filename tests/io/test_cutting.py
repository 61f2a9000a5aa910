"""The chunking rules of ChunkCutter, on their own: no socket, no event loop, no clock.

Every test passes the arrival time of each write and checks the exact byte boundaries, offsets
and first-byte times of the chunks cut.
"""

from __future__ import annotations

import itertools
import time
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtap.io.cutting import ChunkCutter, event_micros


class Cut(NamedTuple):
    payload: bytes
    offset: int
    first_byte_time: float
    tags: dict


class Chunks(list):
    """The emit callback: records every chunk cut, in order."""

    def __call__(self, payload, offset, first_byte_time, tags):
        assert type(payload) is bytes
        self.append(Cut(payload, offset, first_byte_time, dict(tags)))

    @property
    def payloads(self) -> list[bytes]:
        return [c.payload for c in self]

    @property
    def offsets(self) -> list[int]:
        return [c.offset for c in self]


def cutter(max_bytes=10, max_seconds=60.0, **options) -> tuple[ChunkCutter, Chunks]:
    chunks = Chunks()
    return ChunkCutter(max_bytes, max_seconds, chunks, **options), chunks


# --- size ----------------------------------------------------------------------------------------


def test_chunks_are_cut_at_exactly_max_bytes_with_contiguous_offsets():
    cut, chunks = cutter(max_bytes=10)
    assert cut.write(b"0123456789abcdefghij" + b"klm", now=1.0) == 23
    assert chunks.payloads == [b"0123456789", b"abcdefghij"]
    assert (bytes(cut.pending), cut.room(), cut.next_byte_offset) == (b"klm", 7, 23)
    cut.write(b"nopqrst", now=2.0)
    assert chunks.payloads == [b"0123456789", b"abcdefghij", b"klmnopqrst"]
    assert chunks.offsets == [0, 10, 20]
    # A chunk's time is when its first byte arrived.
    assert [c.first_byte_time for c in chunks] == [1.0, 1.0, 1.0]
    assert (cut.pending, cut.offset, cut.room()) == (bytearray(), 30, 10)


def test_a_read_that_straddles_a_chunk_end_is_split_exactly_there():
    cut, chunks = cutter(max_bytes=4, offset=100)
    cut.write(b"ab", now=1.0)
    assert cut.room() == 2
    cut.write(b"cdefghij", now=2.0)
    assert chunks == [Cut(b"abcd", 100, 1.0, {}), Cut(b"efgh", 104, 2.0, {})]
    assert bytes(cut.pending) == b"ij" and cut.first_byte_time == 2.0
    cut.cut()
    assert chunks[-1] == Cut(b"ij", 108, 2.0, {})
    cut.cut()  # nothing pending: no empty chunk
    assert len(chunks) == 3 and cut.next_byte_offset == 110


def test_a_read_of_exactly_one_chunk_becomes_its_payload_without_a_copy():
    cut, chunks = cutter(max_bytes=4)
    whole_read = bytes(bytearray(b"wxyz"))
    cut.write(b"ab", now=1.0)
    cut.write(b"cd", now=1.0)
    cut.write(whole_read, now=1.0)
    cut.write(b"efghij", now=1.0)
    cut.cut()
    assert chunks.payloads == [b"abcd", b"wxyz", b"efgh", b"ij"]
    assert chunks[1].payload is whole_read
    assert chunks.offsets == [0, 4, 8, 12]


def test_bytes_from_a_reused_buffer_are_copied_before_the_buffer_changes():
    cut, chunks = cutter(max_bytes=4)
    buffer = bytearray(b"abcdefghij")
    cut.write(memoryview(buffer), now=1.0)
    buffer[:] = b"0000000000"
    cut.cut()
    assert chunks.payloads == [b"abcd", b"efgh", b"ij"]


# --- time ----------------------------------------------------------------------------------------


def test_a_chunk_is_due_max_seconds_after_its_first_byte():
    cut, chunks = cutter(max_bytes=100, max_seconds=1.0)
    assert not cut.cut_if_due(50.0)  # nothing pending
    cut.write(b"abc", now=100.0)
    assert cut.due_at() == 101.0
    cut.write(b"de", now=100.5)  # later bytes do not move the chunk's due time
    assert cut.due_at() == 101.0
    assert not cut.cut_if_due(100.999)
    assert chunks == []
    assert cut.cut_if_due(101.0)
    assert chunks == [Cut(b"abcde", 0, 100.0, {})]
    assert not cut.cut_if_due(200.0)
    cut.write(b"f", now=102.0)
    assert cut.due_at() == 103.0


# --- window end ----------------------------------------------------------------------------------


def test_with_windows_a_chunk_is_due_where_its_window_ends():
    cut, chunks = cutter(max_bytes=100, max_seconds=60.0, window_seconds=10)
    cut.write(b"abc", now=1000.5)
    assert cut.due_at() == 1010.0  # the window's end, not 1060.5
    assert not cut.cut_if_due(1009.999)
    assert cut.cut_if_due(1010.0)
    cut.write(b"x", now=1015.0)
    assert cut.due_at() == 1020.0
    assert chunks == [Cut(b"abc", 0, 1000.5, {})]


def test_with_windows_a_chunk_is_cut_where_its_window_ends_even_if_the_timer_is_late():
    cut, chunks = cutter(max_bytes=100, max_seconds=60.0, window_seconds=10)
    cut.write(b"abc", now=1000.5)
    cut.write(b"def", now=1009.999999)  # still in the window [1000, 1010)
    assert chunks == []
    cut.write(b"ghi", now=1010.0)  # the next window: what came before is cut first
    assert chunks == [Cut(b"abcdef", 0, 1000.5, {})]
    assert cut.first_byte_time == 1010.0 and cut.due_at() == 1020.0
    cut.cut()
    assert chunks[1] == Cut(b"ghi", 6, 1010.0, {})


def test_window_ends_are_where_beam_puts_them_for_fractional_windows():
    cut, chunks = cutter(max_bytes=100, max_seconds=60.0, window_seconds=0.3)
    start = 1_700_000_000.05  # window [..., 1_700_000_000.1) of 0.3 s windows
    cut.write(b"abc", now=start)
    cut.write(b"def", now=start + 0.04)
    cut.write(b"ghi", now=start + 0.3)
    cut.cut()
    first, second = chunks
    assert (first.payload, second.payload) == (b"abcdef", b"ghi")
    assert int(first.first_byte_time / 0.3) + 1 == int(second.first_byte_time / 0.3)
    assert event_micros(start) < event_micros(1_700_000_000.1) <= event_micros(start + 0.3)


def test_event_micros_windows_exactly_as_beams_timestamp_does():
    from apache_beam.utils.timestamp import Timestamp

    now = time.time()
    for seconds in (now, now + 0.1234567, 1_700_000_000.0000005, 1_700_000_009.9999999, 0.3):
        assert event_micros(seconds) == Timestamp.of(seconds).micros


# --- whole datagrams -----------------------------------------------------------------------------


def test_whole_records_are_never_split():
    cut, chunks = cutter(max_bytes=10)
    cut.write(b"123456", now=1.0, whole=True)
    cut.write(b"abcdef", now=2.0, whole=True)  # would not fit: cut before it
    assert chunks == [Cut(b"123456", 0, 1.0, {})]
    cut.write(b"ABCD", now=3.0, whole=True)  # fits exactly: the chunk is full
    assert chunks[1:] == [Cut(b"abcdefABCD", 6, 2.0, {})]
    cut.write(b"xyz", now=4.0, whole=True)
    cut.write(b"uvw", now=4.0, whole=True)
    cut.cut()
    assert chunks[2:] == [Cut(b"xyzuvw", 16, 4.0, {})]


def test_a_record_larger_than_a_chunk_is_a_chunk_of_its_own():
    cut, chunks = cutter(max_bytes=10)
    big = b"0123456789ABCDEF"
    cut.write(b"abcdef", now=1.0, whole=True)
    cut.write(big, now=2.0, whole=True)  # cuts what is pending, then stays whole
    assert chunks == [Cut(b"abcdef", 0, 1.0, {}), Cut(big, 6, 2.0, {})]
    assert chunks[1].payload is big
    assert cut.pending == bytearray() and cut.offset == 22
    cut.write(b"0123456789ABCDEFGHIJ", now=3.0, whole=True)  # nothing pending: at once
    assert chunks[2] == Cut(b"0123456789ABCDEFGHIJ", 22, 3.0, {})


# --- tag change ----------------------------------------------------------------------------------


def test_a_tag_change_cuts_the_chunk_so_tags_hold_for_every_byte():
    cut, chunks = cutter(max_bytes=100)
    cut.set_tags({"icy_title": "one"})
    cut.write(b"aaaa", now=1.0)
    cut.set_tags({"icy_title": "one"})  # the same tags: no cut
    cut.write(b"aa", now=1.5)
    assert chunks == []
    cut.set_tags({"icy_title": "two"})
    cut.write(b"bb", now=2.0)
    cut.cut()
    assert chunks == [
        Cut(b"aaaaaa", 0, 1.0, {"icy_title": "one"}),
        Cut(b"bb", 6, 2.0, {"icy_title": "two"}),
    ]
    cut.set_tags({})  # nothing pending: nothing to cut
    assert len(chunks) == 2 and cut.tags == {}


# --- byte limit ----------------------------------------------------------------------------------


def test_the_byte_limit_takes_exactly_that_many_bytes():
    cut, chunks = cutter(max_bytes=4, end_offset=10)
    assert cut.write(b"abcdefgh", now=1.0) == 8
    assert not cut.limit_reached
    assert cut.write(b"ijklmnop", now=2.0) == 2
    assert cut.limit_reached
    assert cut.write(b"qrst", now=3.0) == 0
    cut.cut()
    assert chunks == [Cut(b"abcd", 0, 1.0, {}), Cut(b"efgh", 4, 1.0, {}), Cut(b"ij", 8, 2.0, {})]


def test_the_byte_limit_counts_from_the_stream_offset_and_is_reached_exactly():
    cut, chunks = cutter(max_bytes=100, offset=20, end_offset=25)
    assert cut.write(b"abc", now=1.0) == 3 and not cut.limit_reached
    assert cut.write(b"de", now=1.0) == 2 and cut.limit_reached  # exactly at the limit
    cut.cut()
    assert chunks == [Cut(b"abcde", 20, 1.0, {})]


# --- every rule at once, on random input ---------------------------------------------------------


@st.composite
def _operations(draw):
    """Random reads (sizes, whole or not, arrival times), cuts, timer ticks and tag changes."""
    ops = []
    clock = 1_700_000_000.0
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from(["write", "write", "write", "whole", "cut", "tick", "tags"]))
        clock += draw(st.sampled_from([0.0, 0.001, 0.1, 0.35, 1.0, 2.5]))
        if kind in ("write", "whole"):
            size = draw(st.one_of(st.integers(1, 8), st.integers(1, 300)))
            ops.append((kind, size, clock))
        elif kind == "tags":
            ops.append((kind, draw(st.sampled_from(["a", "b"])), clock))
        else:
            ops.append((kind, None, clock))
    return ops


@settings(max_examples=400, deadline=None)
@given(
    ops=_operations(),
    max_bytes=st.integers(1, 64),
    max_seconds=st.sampled_from([0.5, 1.0, 60.0]),
    window_seconds=st.sampled_from([None, 0.3, 1.0, 10.0]),
    start=st.integers(0, 1000),
    limit=st.one_of(st.none(), st.integers(0, 2000)),
    reuse_buffer=st.booleans(),
)
def test_chunks_concatenate_to_the_input_and_keep_every_rule(
    ops, max_bytes, max_seconds, window_seconds, start, limit, reuse_buffer
):
    end_offset = None if limit is None else start + limit
    cut, chunks = cutter(
        max_bytes, max_seconds, offset=start, window_seconds=window_seconds, end_offset=end_offset
    )
    stream = bytearray()
    writes = []  # (first offset, end offset, whole, arrival time, tags) of each write taken
    tags: dict = {}
    buffer = bytearray(300)
    counter = 0
    for kind, value, now in ops:
        if kind in ("write", "whole"):
            data = bytes((counter + i) % 251 for i in range(value))
            counter += value
            if reuse_buffer:  # like a connector's reused receive buffer
                buffer[:value] = data
                arg = memoryview(buffer)[:value]
            else:
                arg = data
            offset = start + len(stream)
            taken = cut.write(arg, now, whole=kind == "whole")
            assert taken == (value if end_offset is None else min(value, end_offset - offset))
            stream += data[:taken]
            if taken:
                writes.append((offset, offset + taken, kind == "whole", now, dict(tags)))
            assert cut.limit_reached == (
                end_offset is not None and start + len(stream) >= end_offset
            )
        elif kind == "cut":
            cut.cut()
        elif kind == "tick":
            due = bool(cut.pending) and cut.due_at() <= now
            assert cut.cut_if_due(now) == due
        else:
            tags = {"icy_title": value}
            cut.set_tags(tags)
        assert cut.next_byte_offset == start + len(stream)
    cut.cut()

    # The chunks are the input, exactly, with contiguous offsets and no empty chunk.
    assert b"".join(chunks.payloads) == bytes(stream)
    ends = [start]
    for chunk in chunks:
        assert chunk.offset == ends[-1] and chunk.payload
        ends.append(chunk.offset + len(chunk.payload))
    assert cut.offset == start + len(stream) and not cut.pending

    for chunk in chunks:
        first, end = chunk.offset, chunk.offset + len(chunk.payload)
        inside = [w for w in writes if w[0] < end and w[1] > first]
        # No chunk is larger than max_bytes, except a single whole record.
        if len(chunk.payload) > max_bytes:
            assert len(inside) == 1 and inside[0][2] and inside[0][:2] == (first, end)
        # Its time is the arrival of its first byte; its tags hold for every byte.
        assert chunk.first_byte_time == next(w[3] for w in inside if w[0] <= first < w[1])
        assert all(w[4] == chunk.tags for w in inside)
        # With windows, every byte arrived within the window the chunk's time names.
        if window_seconds:
            micros = int(window_seconds * 1e6)
            window = event_micros(chunk.first_byte_time) // micros
            assert all(event_micros(w[3]) // micros == window for w in inside)
    # A whole record is never split between chunks.
    for first, end, whole, _, _ in writes:
        if whole:
            assert any(c <= first and end <= e for c, e in itertools.pairwise(ends))


@pytest.mark.parametrize("max_bytes", [0, -1])
def test_max_bytes_must_be_positive(max_bytes):
    with pytest.raises(ValueError, match="max_bytes"):
        ChunkCutter(max_bytes, 1.0, Chunks())
