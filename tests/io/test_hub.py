"""The hub: readers attached to the process's event loop, cutting on time, stop requests."""

import os
import time

from streamtap.config import ChunkSettings
from streamtap.io.hub import clear_stop, hub, request_stop, stop_requested
from streamtap.io.sources.files import FileSource
from streamtap.io.stream_state import StreamPosition


def _all(reader, seq=0):
    chunks = []
    while (chunk := reader.chunk(seq)) is not None:
        chunks.append(chunk)
        seq += 1
    return chunks


def _wait_until(condition, seconds=5.0, step=0.05):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(step)
    return condition()


def test_chunks_are_cut_after_max_seconds_by_the_reader_loop(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    source = FileSource(id="timecut", path=str(fifo))
    reader = hub().attach(
        source, ChunkSettings(max_bytes=1000, max_seconds=0.3), StreamPosition(), None
    )
    writer = os.open(fifo, os.O_WRONLY)
    try:
        os.write(writer, b"hello")
        _wait_until(lambda: reader.chunk(0) is not None)
        chunk = reader.chunk(0)
        assert chunk is not None and chunk.payload == b"hello"
        assert chunk.event_time <= time.time() - 0.25
        assert reader.watermark(1) >= chunk.event_time
    finally:
        os.close(writer)
    assert _wait_until(lambda: reader.finished(1))  # the writer closed the FIFO: end of data
    hub().release(reader)
    assert "timecut" not in hub().readers and hub().finished["timecut"] is reader.stats


def test_a_regular_file_resumes_at_the_restriction_offset_without_a_discontinuity(tmp_path):
    data = os.urandom(50_000)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    source = FileSource(id="resume", path=str(path))
    reader = hub().attach(
        source, ChunkSettings(max_bytes=8192), StreamPosition(next_seq=3, next_offset=20_000), None
    )
    _wait_until(lambda: reader.finished(3))
    chunks = _all(reader, 3)
    hub().release(reader)
    assert b"".join(c.payload for c in chunks) == data[20_000:]
    assert chunks[0].seq == 3 and chunks[0].offset == 20_000
    assert not any(c.discontinuity for c in chunks)


def _sleep_into_next_window(window_seconds, margin=0.05):
    now = time.time()
    time.sleep(window_seconds - now % window_seconds + margin)


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
        _wait_until(lambda: reader.chunk(0) is not None, step=0.01)
        cut_at = time.time()
        chunk = reader.chunk(0)
        assert chunk is not None and chunk.payload == b"hello"
        assert window_end <= cut_at < window_end + 0.3  # not 30 s later
        assert int(chunk.event_time / window) * window + window == window_end
        # Nothing pending: the reader's horizon is past the window, which can now be released.
        assert reader.horizon() >= window_end
    finally:
        os.close(writer)
    _wait_until(lambda: reader.finished(1))
    hub().release(reader)


def test_attach_serves_a_position_the_reader_holds_and_replaces_one_it_does_not(tmp_path):
    data = os.urandom(10_000)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    source = FileSource(id="reattach", path=str(path))
    chunking = ChunkSettings(max_bytes=1000)
    reader = hub().attach(source, chunking, StreamPosition(), None)
    assert _wait_until(lambda: reader.finished(10))
    # The runner committed seq 0-3 and retries from 4: the same reader, the same chunks.
    assert hub().attach(source, chunking, StreamPosition(4, 4000), None) is reader
    assert reader.chunk(3) is None and reader.chunk(4).offset == 4000
    # A position this reader never reached (read elsewhere): a fresh reader starts there.
    fresh = hub().attach(source, chunking, StreamPosition(12, 8000), None)
    assert fresh is not reader and hub().readers["reattach"] is fresh
    assert _wait_until(lambda: fresh.finished(14))
    assert [(c.seq, c.offset) for c in _all(fresh, 12)] == [(12, 8000), (13, 9000)]
    hub().release(reader)  # not the current reader of the stream: nothing happens
    assert hub().readers["reattach"] is fresh
    hub().release(fresh)


def test_a_stop_file_ends_the_stream_and_cuts_what_it_received(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    stop_file = tmp_path / "stop"
    source = FileSource(id="stopfile", path=str(fifo))
    reader = hub().attach(
        source, ChunkSettings(max_bytes=1000, max_seconds=60), StreamPosition(), str(stop_file)
    )
    writer = os.open(fifo, os.O_WRONLY)
    try:
        os.write(writer, b"partial")
        time.sleep(0.3)
        assert reader.chunk(0) is None and not reader.ended()
        stop_file.touch()
        assert _wait_until(lambda: reader.finished(1))
        assert reader.chunk(0).payload == b"partial"
    finally:
        os.close(writer)
    hub().release(reader)


def test_request_stop_is_seen_by_every_stream_until_cleared(tmp_path):
    assert not stop_requested(None)
    assert not stop_requested(str(tmp_path / "no-such-stop-file"))
    request_stop()
    try:
        assert stop_requested(None)
        assert stop_requested(str(tmp_path / "no-such-stop-file"))
    finally:
        clear_stop()
    assert not stop_requested(None)


def test_min_watermark_is_the_lowest_of_the_process_streams(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    source = FileSource(id="lowest", path=str(fifo))
    reader = hub().attach(
        source, ChunkSettings(max_bytes=1000, max_seconds=60), StreamPosition(), None
    )
    writer = os.open(fifo, os.O_WRONLY)
    try:
        os.write(writer, b"waiting")
        assert _wait_until(lambda: reader.horizon() < time.time() - 0.2)
        first_byte = reader.watermark(0)
        # Readers other tests left in this process count too (an idle one's is the clock).
        others = [r.current_watermark() for r in hub().readers.values() if r is not reader]
        lowest = hub().min_watermark(max_age=0)
        assert lowest == min([first_byte, *others]) and lowest <= first_byte
        time.sleep(0.05)
        assert hub().min_watermark(max_age=10) == lowest  # cached: still a lower bound
    finally:
        os.close(writer)
    _wait_until(lambda: reader.finished(1))
    hub().release(reader)
