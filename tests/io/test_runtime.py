"""The chunking and commit rules of StreamReader, driven through its ByteSink methods."""

import os
import time

from streamtap.config import ChunkSettings
from streamtap.io.sources.files import FileSource
from streamtap.io.runtime import StreamPosition, StreamReader, hub
from streamtap.io.sources.tcp import TcpSource


def _reader(max_bytes=10, max_seconds=60.0, position=StreamPosition(), **source):
    config = TcpSource(id=source.pop("id", "s1"), address="127.0.0.1:9", **source)
    reader = StreamReader(config, ChunkSettings(max_bytes=max_bytes, max_seconds=max_seconds), position)
    reader._start_session()
    return reader


def _all(reader, seq=0):
    chunks = []
    while (chunk := reader.chunk(seq)) is not None:
        chunks.append(chunk)
        seq += 1
    return chunks


def test_chunks_are_cut_at_exactly_max_bytes_with_contiguous_offsets():
    reader = _reader(max_bytes=10)
    reader.write(b"0123456789abcdefghij" + b"klm")
    reader.write(b"nopqrst")
    chunks = _all(reader)
    assert [c.payload for c in chunks] == [b"0123456789", b"abcdefghij", b"klmnopqrst"]
    assert [c.seq for c in chunks] == [0, 1, 2]
    assert [c.offset for c in chunks] == [0, 10, 20]
    assert all(c.checksum_ok() for c in chunks)


def test_a_tag_change_cuts_the_chunk_so_tags_hold_for_every_byte():
    reader = _reader(max_bytes=100, tags={"site": "a"})
    reader.set_tags({"icy_title": "one"})
    reader.write(b"aaaa")
    reader.set_tags({"icy_title": "two"})
    reader.write(b"bb")
    reader._cut()
    first, second = _all(reader)
    assert (first.payload, first.tags) == (b"aaaa", {"site": "a", "icy_title": "one"})
    assert (second.payload, second.tags) == (b"bb", {"site": "a", "icy_title": "two"})


def test_whole_records_are_never_split():
    reader = _reader(max_bytes=10)
    reader.write(b"123456", whole=True)
    reader.write(b"abcdef", whole=True)  # would not fit: cut before it
    reader.write(b"0123456789ABCDEF", whole=True)  # larger than a chunk: stays whole
    reader._cut()
    assert [c.payload for c in _all(reader)] == [b"123456", b"abcdef", b"0123456789ABCDEF"]


def test_byte_limit_ends_the_stream_at_exactly_that_many_bytes():
    config = TcpSource(id="s1", address="127.0.0.1:9")
    reader = StreamReader(config, ChunkSettings(max_bytes=4), StreamPosition(end_offset=10))
    reader._start_session()
    reader.write(b"abcdefgh")
    reader.write(b"ijklmnop")
    assert b"".join(c.payload for c in _all(reader)) == b"abcdefghij"
    assert reader.finished(3)


def test_committed_chunks_are_dropped_and_uncommitted_ones_served_again():
    reader = _reader(max_bytes=2)
    reader.write(b"aabbccdd")
    assert reader.sync(StreamPosition(next_seq=0))
    assert reader.chunk(1).payload == b"bb"
    # The runner committed seq 0 and 1; a retry of the next bundle gets seq 2 again, same bytes.
    assert reader.sync(StreamPosition(next_seq=2, next_offset=4))
    assert reader.chunk(1) is None
    assert reader.chunk(2).payload == b"cc"
    assert reader.sync(StreamPosition(next_seq=2, next_offset=4))
    assert reader.chunk(2).payload == b"cc"
    # A restriction this reader never reached belongs to a reader elsewhere.
    assert not reader.sync(StreamPosition(next_seq=9, next_offset=18))


def test_a_resumed_live_stream_marks_a_discontinuity_and_continues_seq_and_offset():
    reader = _reader(max_bytes=4, position=StreamPosition(next_seq=5, next_offset=20))
    reader.write(b"wxyz")
    (chunk,) = _all(reader, 5)
    assert (chunk.seq, chunk.offset, chunk.discontinuity) == (5, 20, True)


def test_a_reconnect_marks_the_next_chunk_only():
    reader = _reader(max_bytes=4)
    reader.write(b"abcd")
    reader._start_session()
    reader.write(b"efghijkl")
    chunks = _all(reader)
    assert [c.discontinuity for c in chunks] == [False, True, False]
    assert chunks[0].session != chunks[1].session == chunks[2].session


def test_chunks_are_cut_after_max_seconds_by_the_reader_loop(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    source = FileSource(id="timecut", path=str(fifo))
    reader = hub().attach(source, ChunkSettings(max_bytes=1000, max_seconds=0.3), StreamPosition(), None)
    writer = os.open(fifo, os.O_WRONLY)
    try:
        os.write(writer, b"hello")
        deadline = time.monotonic() + 5
        while reader.chunk(0) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        chunk = reader.chunk(0)
        assert chunk is not None and chunk.payload == b"hello"
        assert chunk.event_time <= time.time() - 0.25
        assert reader.watermark(1) >= chunk.event_time
    finally:
        os.close(writer)
    deadline = time.monotonic() + 5
    while not reader.finished(1) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reader.finished(1)  # the writer closed the FIFO: end of data
    hub().release(reader)


def test_a_regular_file_resumes_at_the_restriction_offset_without_a_discontinuity(tmp_path):
    data = os.urandom(50_000)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    source = FileSource(id="resume", path=str(path))
    reader = hub().attach(
        source, ChunkSettings(max_bytes=8192), StreamPosition(next_seq=3, next_offset=20_000), None
    )
    deadline = time.monotonic() + 5
    while not reader.finished(3) and time.monotonic() < deadline:
        time.sleep(0.05)
    chunks = _all(reader, 3)
    hub().release(reader)
    assert b"".join(c.payload for c in chunks) == data[20_000:]
    assert chunks[0].seq == 3 and chunks[0].offset == 20_000
    assert not any(c.discontinuity for c in chunks)


def _sleep_into_next_window(window_seconds, margin=0.05):
    now = time.time()
    time.sleep(window_seconds - now % window_seconds + margin)


def test_with_windows_a_chunk_is_cut_where_its_window_ends_even_if_the_timer_is_late():
    config = TcpSource(id="s1", address="127.0.0.1:9")
    # No event loop here, so no cut timer: the next write must notice the window has ended.
    chunking = ChunkSettings(max_bytes=100, max_seconds=60)
    reader = StreamReader(config, chunking, StreamPosition(), window_seconds=0.3)
    reader._start_session()
    _sleep_into_next_window(0.3)
    reader.write(b"abc")
    reader.write(b"def")
    _sleep_into_next_window(0.3)
    reader.write(b"ghi")
    reader._cut()
    first, second = _all(reader)
    assert (first.payload, second.payload) == (b"abcdef", b"ghi")
    assert int(first.event_time / 0.3) + 1 == int(second.event_time / 0.3)


def test_with_windows_the_cut_timer_cuts_at_the_window_end_not_after_max_seconds(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    source = FileSource(id="windowcut", path=str(fifo))
    window = 0.5
    reader = hub().attach(
        source, ChunkSettings(max_bytes=1000, max_seconds=30), StreamPosition(), None, window
    )
    writer = os.open(fifo, os.O_WRONLY)
    try:
        _sleep_into_next_window(window)
        os.write(writer, b"hello")
        window_end = (int(time.time() / window) + 1) * window
        deadline = time.monotonic() + 5
        while reader.chunk(0) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        cut_at = time.time()
        chunk = reader.chunk(0)
        assert chunk is not None and chunk.payload == b"hello"
        assert window_end <= cut_at < window_end + 0.3  # not 30 s later
        assert int(chunk.event_time / window) * window + window == window_end
        # Nothing pending: the reader's horizon is past the window, which can now be released.
        assert reader.horizon() >= window_end
    finally:
        os.close(writer)
    deadline = time.monotonic() + 5
    while not reader.finished(1) and time.monotonic() < deadline:
        time.sleep(0.05)
    hub().release(reader)


def test_event_micros_windows_exactly_as_beams_timestamp_does():
    from apache_beam.utils.timestamp import Timestamp

    from streamtap.io.runtime import event_micros

    now = time.time()
    for seconds in (now, now + 0.1234567, 1_700_000_000.0000005, 1_700_000_009.9999999, 0.3):
        assert event_micros(seconds) == Timestamp.of(seconds).micros


def test_a_read_of_exactly_one_chunk_becomes_its_payload_without_a_copy():
    reader = _reader(max_bytes=4)
    whole_read = bytes(bytearray(b"wxyz"))
    reader.write(b"ab")
    assert reader.room() == 2
    reader.write(b"cd")
    reader.write(whole_read)
    reader.write(b"efghij")
    reader._cut()
    chunks = _all(reader)
    assert [c.payload for c in chunks] == [b"abcd", b"wxyz", b"efgh", b"ij"]
    assert chunks[1].payload is whole_read
    assert [c.offset for c in chunks] == [0, 4, 8, 12]
    assert all(c.checksum_ok() for c in chunks)
