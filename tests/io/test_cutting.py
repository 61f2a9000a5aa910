"""The chunking rules of ChunkCutter, on their own: no socket, no event loop, no clock.

Every test passes the arrival time of each write and checks the exact byte boundaries, offsets
and first-byte times of the chunks cut.
"""

from __future__ import annotations

import itertools
import random
import time
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtap.io.cutting import ChunkCutter, event_micros
from streamtap.io.framing import adts, make_aligner, mp3


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


# --- frame-aligned cutting (chunk.align; the frame rules are streamtap.io.framing) ---------------


def _mp3_frame(rng, version: int, rate_index: int) -> bytes:
    """A Layer III frame: a valid header (random bitrate and padding), random audio bytes."""
    bitrate_index, padding = rng.randint(1, 14), rng.randint(0, 1)
    header = bytes(
        [
            0xFF,
            0xE0 | version << 3 | 0b011,
            bitrate_index << 4 | rate_index << 2 | padding << 1,
            0x44,
        ]
    )
    length = mp3.frame_at(header, 0)[0]
    return header + rng.randbytes(length - 4)


def _adts_frame(rng, rate_index: int) -> bytes:
    """An ADTS frame (AAC LC, stereo, no CRC): a valid header, random audio bytes."""
    length = rng.randint(7, 900)
    header = bytes(
        [
            0xFF,
            0xF1,
            1 << 6 | rate_index << 2,
            2 << 6 | length >> 11,
            (length >> 3) & 0xFF,
            (length & 7) << 5 | 0x1F,
            0xFC,
        ]
    )
    return header + rng.randbytes(length - 7)


def _frames_in(chunk: bytes, frame_at, header_bytes: int) -> int | None:
    """How many whole frames `chunk` is, walking its headers from its first byte; None if it is
    not exactly a sequence of frames."""
    pos = count = 0
    while pos < len(chunk):
        if pos + header_bytes > len(chunk) or (frame := frame_at(chunk, pos)) is None:
            return None
        pos, count = pos + frame[0], count + 1
    return count if pos == len(chunk) else None


@st.composite
def _framed_stream(draw):
    """(kind, bytes, clean): random frames of one stream, optionally junk before and between
    them (random bytes, an ID3 tag, a cut-off frame); clean: frames only, from the first byte."""
    kind = draw(st.sampled_from(["mp3", "adts"]))
    rng = random.Random(draw(st.integers(0, 2**32)))
    version, rate_index = (
        draw(st.sampled_from([(3, 0), (3, 1), (2, 0), (0, 2)])),
        draw(st.integers(0, 2)),
    )
    clean = draw(st.booleans())
    parts = []
    for _ in range(draw(st.integers(0, 25))):
        if not clean and draw(st.integers(0, 5)) == 0:
            junk = draw(st.sampled_from(["random", "id3", "partial", "syncs"]))
            if junk == "random":
                parts.append(rng.randbytes(rng.randint(1, 600)))
            elif junk == "id3":
                size = rng.randint(0, 300)
                parts.append(
                    b"ID3\x04\x00\x00" + bytes([0, 0, size >> 7, size & 0x7F]) + rng.randbytes(size)
                )
            elif junk == "syncs":
                parts.append(b"\xff\xfb\x90\x44\xff\xf1" * rng.randint(1, 5))
            else:
                frame = (
                    _mp3_frame(rng, *version) if kind == "mp3" else _adts_frame(rng, 3 + rate_index)
                )
                parts.append(frame[: rng.randint(1, len(frame) - 1)])
        if kind == "mp3":
            parts.append(_mp3_frame(rng, version[0], rate_index))
        else:
            parts.append(_adts_frame(rng, 3 + rate_index))
    return kind, b"".join(parts), clean


@settings(max_examples=200, deadline=None)
@given(
    stream=_framed_stream(),
    reads=st.lists(st.one_of(st.integers(1, 9), st.integers(1, 3000)), min_size=1, max_size=20),
    ticks=st.lists(st.sampled_from(["none", "tick", "tags", "window"]), min_size=1, max_size=20),
    max_bytes=st.integers(1500, 20000),
    window_seconds=st.sampled_from([None, 1.0]),
)
def test_aligned_chunks_concatenate_to_the_input_and_start_on_frame_headers(
    stream, reads, ticks, max_bytes, window_seconds
):
    kind, data, clean = stream
    module = mp3 if kind == "mp3" else adts
    cut, chunks = cutter(
        max_bytes,
        0.5,
        offset=7,
        window_seconds=window_seconds,
        aligner_for=lambda tags: make_aligner(kind),
    )
    cut.restart(7)
    now, position, step = 1_700_000_000.0, 0, 0
    writes = []  # (first offset, end offset, arrival time)
    while position < len(data):
        # (at most ~300 writes: hypothesis runs it many times)
        size = min(max(reads[step % len(reads)], len(data) // 300), len(data) - position)
        assert cut.write(memoryview(data)[position : position + size], now) == size
        writes.append((7 + position, 7 + position + size, now))
        position += size
        action = ticks[step % len(ticks)]
        if action == "tick":
            now += 0.6
            cut.cut_if_due(now)
        elif action == "tags":
            cut.set_tags({"icy_title": str(step)})
        elif action == "window":
            now += 1.0  # the next write comes in the next window
        step += 1
        assert cut.next_byte_offset == 7 + position and len(cut.pending) < max_bytes
    cut.cut()

    assert b"".join(chunks.payloads) == data
    assert (
        chunks.offsets == list(itertools.accumulate([7] + [len(p) for p in chunks.payloads]))[:-1]
    )
    for chunk in chunks:
        assert chunk.payload and len(chunk.payload) <= max_bytes
        if "frames" in chunk.tags:  # aligned: whole frames from a header on, as many as it says
            assert _frames_in(chunk.payload, module.frame_at, module.HEADER_BYTES) == int(
                chunk.tags["frames"]
            )
            assert float(chunk.tags["audio_ms"]) > 0
        else:
            assert chunk.tags["unaligned"] in ("junk", "id3", "no frame header", "partial frame")
    # Frames only, none larger than max_bytes: all aligned (a lone frame is never confirmed).
    if clean and max_bytes >= 8192 and _frames_in(data, module.frame_at, module.HEADER_BYTES) > 1:
        assert all("frames" in c.tags for c in chunks), [(len(c.payload), c.tags) for c in chunks]
    # A chunk's time is no earlier than its first byte's arrival (later when it was carried
    # over), and with windows no byte of it arrived in a later window than its time names.
    for chunk in chunks:
        first, end = chunk.offset, chunk.offset + len(chunk.payload)
        times = [w[2] for w in writes if w[0] < end and w[1] > first]
        assert chunk.first_byte_time >= next(w[2] for w in writes if w[0] <= first < w[1])
        if window_seconds:
            window = event_micros(chunk.first_byte_time) // 1_000_000
            assert all(event_micros(t) // 1_000_000 <= window for t in times)


@settings(max_examples=200, deadline=None)
@given(
    reads=st.lists(st.integers(1, 999), min_size=1, max_size=30),
    sample_bytes=st.sampled_from([2, 3, 4, 8]),
    max_bytes=st.integers(1, 5000),
    ticks=st.lists(st.booleans(), min_size=1, max_size=10),
)
def test_aligned_sample_chunks_hold_whole_samples(reads, sample_bytes, max_bytes, ticks):
    cut, chunks = cutter(
        max_bytes, 0.5, aligner_for=lambda tags: make_aligner("samples", sample_bytes)
    )
    cut.restart(0)
    data = bytes(i % 251 for i in range(sum(reads) - sum(reads) % sample_bytes))
    now, position = 1.0, 0
    for step, size in enumerate(reads):
        cut.write(data[position : position + size], now)
        position += size
        if ticks[step % len(ticks)]:
            now += 0.6
            cut.cut_if_due(now)
    cut.cut()
    assert b"".join(chunks.payloads) == data
    for chunk in chunks:
        if max_bytes >= sample_bytes:
            assert len(chunk.payload) % sample_bytes == 0
            assert chunk.tags == {"frames": str(len(chunk.payload) // sample_bytes)}


def test_a_free_format_mp3_stream_falls_back_to_unaligned_cuts_tagged_so():
    header = bytes([0xFF, 0xFB, 0x00 | 0 << 2, 0x44])  # MPEG-1 Layer III, bitrate index 0
    data = (header + bytes(413)) * 20
    cut, chunks = cutter(1000, 60.0, aligner_for=lambda tags: make_aligner("mp3"))
    cut.write(data, now=1.0)
    cut.cut()
    assert b"".join(chunks.payloads) == data
    assert [len(c.payload) for c in chunks] == [1000] * 8 + [340]
    assert {c.tags["unaligned"] for c in chunks} == {"free-format"}


def test_a_time_cut_holds_frames_still_arriving_and_carries_them_with_the_cut_time():
    rng = random.Random(1)
    f = [_mp3_frame(rng, 3, 0) for _ in range(4)]
    cut, chunks = cutter(65536, 1.0, aligner_for=lambda tags: make_aligner("mp3"))
    cut.write(f[0] + f[1][:10], now=1.0)  # one confirmed frame: a one-frame chunk is not cut
    assert cut.cut_if_due(2.0) and not chunks and cut.first_byte_time == 2.0
    cut.write(f[1][10:] + f[2][:10], now=2.5)  # two confirmed frames, the third still arriving
    assert cut.cut_if_due(3.0)
    assert chunks == [Cut(f[0] + f[1], 0, 2.0, {"frames": "2", "audio_ms": "52.245"})]
    assert cut.first_byte_time == 3.0 and bytes(cut.pending) == f[2][:10]
    cut.write(f[2][10:] + f[3], now=3.5)
    cut.cut()  # the session's end: every complete frame, the last one needs no successor
    assert chunks[1] == Cut(
        f[2] + f[3], len(f[0] + f[1]), 3.0, {"frames": "2", "audio_ms": "52.245"}
    )


def test_align_none_keeps_the_plain_cutter():
    cut, chunks = cutter(4, aligner_for=None)
    assert cut.aligner is None
    cut.write(b"\xff\xfb\x90\x44abcd", now=1.0)
    assert chunks.payloads == [b"\xff\xfb\x90\x44", b"abcd"] and chunks[0].tags == {}
