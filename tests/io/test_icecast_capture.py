"""Real internet radio: Icecast stations on loopback, fed by ffmpeg, captured over HTTP with ICY.

The reference is an independent HTTP client (urllib, no ICY metadata) listening to the same mount
over the same period: Icecast sends every listener the same bytes, so where the two recordings
overlap they must be equal, byte for byte. streamtap asks for ICY metadata and strips it; a
single misplaced metadata byte would break the comparison.
"""

import subprocess
import threading
import time
import urllib.request

import pytest

from tests.fixtures.icecast import AAC_MOUNT, mp3_decode_errors, mp3_frame_span
from tests.helpers import assert_verified, capture, chunks_of, free_port, stream_bytes

MOUNTS = ("radio1", "radio2", "radio3")
SECONDS = 8


def _listen(url: str, seconds: float, into: dict) -> None:
    """An independent listener: plain urllib, no metadata, for `seconds`."""
    data = bytearray()
    deadline = time.monotonic() + seconds
    with urllib.request.urlopen(url, timeout=10) as response:
        while time.monotonic() < deadline:
            block = response.read1(16384)
            if not block:
                break
            data += block
    into[url] = bytes(data)


def _overlap(reference: bytes, captured: bytes) -> tuple[int, int]:
    """Aligns two recordings of one station; returns (captured offset of reference[0], length)."""
    probe_at = len(reference) // 2
    probe = reference[probe_at : probe_at + 4096]
    found = captured.find(probe)
    assert found >= 0, "the capture does not contain the reference's bytes"
    assert captured.find(probe, found + 1) < 0, "ambiguous alignment"
    shift = found - probe_at
    start = max(0, shift)
    end = min(len(captured), shift + len(reference))
    return shift, end - start


def test_radio_capture_equals_an_independent_listener_byte_for_byte(icecast, tmp_path):
    references: dict = {}
    urls = {mount: icecast.mount_url(mount) for mount in MOUNTS}
    listeners = [
        threading.Thread(target=_listen, args=(url, SECONDS, references)) for url in urls.values()
    ]
    for listener in listeners:
        listener.start()
    capture(
        {
            "sources": [{"id": mount, "type": "http", "url": url} for mount, url in urls.items()],
            "chunk": {"max_bytes": 16384, "max_seconds": 0.5},
            "window_seconds": 2,
            "sinks": [{"type": "parquet", "path": str(tmp_path / "capture")}],
        },
        duration=SECONDS,
    )
    for listener in listeners:
        listener.join()
    assert_verified(str(tmp_path / "capture"), streams=3)
    captures = {}
    for mount, url in urls.items():
        captured = stream_bytes(str(tmp_path / "capture"), mount)
        reference = references[url]
        shift, length = _overlap(reference, captured)
        start = max(0, shift)
        assert captured[start : start + length] == reference[start - shift : start - shift + length]
        assert length >= 0.8 * min(len(captured), len(reference)), (length, len(captured))
        assert len(captured) >= 16_000 * (SECONDS - 3)  # 128 kbit/s for most of the period
        first, last = mp3_frame_span(captured)
        assert mp3_decode_errors(captured[first:last], tmp_path / f"{mount}.mp3") == ""
        chunk = chunks_of(str(tmp_path / "capture"), mount)[0]
        assert chunk.tags["content_type"] == "audio/mpeg"
        captures[mount] = captured
    assert captures["radio1"][:50_000] != captures["radio2"][:50_000]


def test_stream_title_changes_land_in_the_chunk_tags(icecast, tmp_path):
    titles = ["Morning Show", "Café del Mar – 'Live'"]

    def change_titles():
        time.sleep(2)
        icecast.set_title("radio2", titles[0])
        time.sleep(3)
        icecast.set_title("radio2", titles[1])

    threading.Thread(target=change_titles, daemon=True).start()
    capture(
        {
            "sources": [{"id": "radio2", "type": "http", "url": icecast.mount_url("radio2")}],
            "chunk": {"max_bytes": 65536, "max_seconds": 1.0},
            "window_seconds": 2,
            "sinks": [{"type": "parquet", "path": str(tmp_path)}],
        },
        duration=9,
    )
    chunks = chunks_of(str(tmp_path), "radio2")
    seen = [c.tags.get("icy_title") for c in chunks]
    assert titles[0] in seen and titles[1] in seen
    assert seen.index(titles[0]) < seen.index(titles[1])
    # Tags are true for every byte of a chunk: a title change starts a new chunk.
    first_with_second_title = seen.index(titles[1])
    assert all(title == titles[1] for title in seen[first_with_second_title:])
    assert_verified(str(tmp_path), streams=1)


def test_a_missing_mount_and_an_unreachable_host_do_not_stop_the_healthy_stations(icecast, tmp_path):
    output = capture(
        {
            "sources": [
                {"id": "good", "type": "http", "url": icecast.mount_url("radio3")},
                {"id": "missing", "type": "http", "url": icecast.mount_url("radio3") + "-nope",
                 "reconnect": {"initial_delay": 0.2}},
                {"id": "down", "type": "http", "url": f"http://127.0.0.1:{free_port()}/live",
                 "reconnect": {"initial_delay": 0.2}},
            ],
            "chunk": {"max_bytes": 65536, "max_seconds": 0.5},
            "window_seconds": 2,
            "sinks": [{"type": "parquet", "path": str(tmp_path)}],
        },
        duration=5,
        exit_code=1,  # the run says that two configured streams captured nothing
    )
    assert len(stream_bytes(str(tmp_path), "good")) > 40_000
    assert "HTTP 404" in output
    assert "connection refused" in output
    assert "missing: FAILED: captured nothing" in output
    assert "down: FAILED: captured nothing" in output
    assert "good: FAILED" not in output
    reports = assert_verified(str(tmp_path))
    assert set(reports) == {"good"}


# ffmpeg's demuxer for each content type, named: a chunk of two or three frames is too short for
# ffmpeg to recognise ADTS by probing ("Invalid data found when processing input").
_DEMUXERS = {"audio/mpeg": "mp3", "audio/aac": "aac"}


def _decode_errors(data: bytes, path, content_type: str) -> str:
    """`ffmpeg -v error -f <demuxer> -i chunk -f null -` on `data` alone; its messages ("" =
    clean)."""
    path.write_bytes(data)
    result = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", _DEMUXERS[content_type], "-i", str(path),
         "-f", "null", "-"],
        check=False, capture_output=True, text=True, timeout=60,
    )
    return f"exit {result.returncode}: {result.stderr.strip()}" if result.returncode else result.stderr.strip()


def test_aligned_mp3_and_aac_chunks_each_decode_alone_and_equal_an_independent_listener(icecast, tmp_path):
    """align: auto on a real MP3 and a real AAC (ADTS) station: every aligned chunk decodes alone
    with no error; the only other chunks are the partial frame a listener starts in and the one
    the capture stops in; the chunks concatenated equal an independent listener's bytes."""
    mounts = {"radio1": "audio/mpeg", AAC_MOUNT: "audio/aac"}
    urls = {mount: icecast.mount_url(mount) for mount in mounts}
    references: dict = {}
    listeners = [threading.Thread(target=_listen, args=(url, SECONDS, references)) for url in urls.values()]
    for listener in listeners:
        listener.start()
    location = str(tmp_path / "capture")
    capture(
        {
            "sources": [{"id": mount, "type": "http", "url": url} for mount, url in urls.items()],
            "chunk": {"max_bytes": 5000, "max_seconds": 0.5, "align": "auto"},
            "window_seconds": 2,
            "sinks": [{"type": "parquet", "path": location}],
        },
        duration=SECONDS,
    )
    for listener in listeners:
        listener.join()
    assert_verified(location, streams=2)
    for mount, content_type in mounts.items():
        captured, reference = stream_bytes(location, mount), references[urls[mount]]
        shift, length = _overlap(reference, captured)
        start = max(0, shift)
        assert captured[start : start + length] == reference[start - shift : start - shift + length]
        assert length >= 0.8 * min(len(captured), len(reference))
        chunks = sorted(chunks_of(location, mount), key=lambda c: c.seq)
        assert b"".join(c.payload for c in chunks) == captured
        assert all(c.tags["content_type"] == content_type for c in chunks)
        aligned = [c for c in chunks if "frames" in c.tags]
        unaligned = [c for c in chunks if "frames" not in c.tags]
        assert len(aligned) >= 2 * (SECONDS - 3), len(aligned)  # two a second (max_seconds 0.5)
        # A listener starts mid-frame (Icecast's 2048-byte blocks) and the stop may cut one.
        assert all(c.tags["unaligned"] in ("junk", "partial frame") for c in unaligned)
        assert all(len(c.payload) < 1500 for c in unaligned) and len(unaligned) <= 2
        assert all(c.seq in (chunks[0].seq, chunks[-1].seq) for c in unaligned)
        total_ms = 0.0
        for chunk in aligned:
            assert len(chunk.payload) <= 5000
            problem = _decode_errors(chunk.payload, tmp_path / f"chunk-{chunk.seq}", content_type)
            assert problem == "", (mount, chunk.seq, chunk.tags, problem)
            total_ms += float(chunk.tags["audio_ms"])
        # The audio in the chunks, by their frame headers: the burst (~4 s) plus real time.
        assert SECONDS * 1000 * 0.8 < total_ms < (SECONDS + 6) * 1000, total_ms
