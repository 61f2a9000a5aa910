"""A followed log file through copytruncate and rename rotation, as `tail -F` users expect.

Before the fix (issue #14) a copytruncate lost the new content up to the old offset with no
discontinuity and `verify` said OK, and a rotated file's successor was never read.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

from tests.helpers import assert_verified, capture, chunks_of, stream_bytes


def _config(path, capture_dir, total: int) -> dict:
    return {
        "sources": [{"id": "log1", "type": "file", "path": str(path), "follow": True,
                     "poll_interval": 0.05, "max_bytes": total,
                     "reconnect": {"initial_delay": 0.05}}],
        "chunk": {"max_bytes": 65536, "max_seconds": 0.2},
        "window_seconds": 1,
        "sinks": [{"type": "parquet", "path": str(capture_dir)}],
    }


def _run_with(path, capture_dir, total: int, change) -> None:
    """Captures the followed file while `change()` rotates it in another thread."""
    thread = threading.Thread(target=change, daemon=True)
    thread.start()
    capture(_config(path, capture_dir, total), duration=30)
    thread.join(timeout=5)


def test_copytruncate_reads_the_new_content_from_its_start(tmp_path):
    path, capture_dir = tmp_path / "app.log", tmp_path / "cap"
    before, after = os.urandom(200_000), os.urandom(50_000)  # the new content is shorter
    path.write_bytes(before)

    def copytruncate():
        time.sleep(1.5)  # the first 200 kB is read by then (0.05 s polls)
        shutil.copy(path, tmp_path / "app.log.1")
        with open(path, "r+b") as log:
            log.truncate(0)
        time.sleep(0.3)
        with open(path, "ab") as log:
            log.write(after)

    _run_with(path, capture_dir, len(before) + len(after), copytruncate)
    assert stream_bytes(str(capture_dir), "log1") == before + after
    chunks = chunks_of(str(capture_dir), "log1")
    marked = [c.offset for c in chunks if c.discontinuity]
    assert marked == [len(before)], "the break must be marked where the new content starts"
    assert_verified(str(capture_dir), streams=1)


def test_rename_rotation_goes_on_with_the_new_file(tmp_path):
    path, capture_dir = tmp_path / "app.log", tmp_path / "cap"
    first, late, second = os.urandom(100_000), os.urandom(5_000), os.urandom(150_000)
    path.write_bytes(first)

    def rotate():
        time.sleep(1.5)
        os.rename(path, tmp_path / "app.log.1")
        with open(tmp_path / "app.log.1", "ab") as old:  # a writer still holding the old file
            old.write(late)
        time.sleep(0.3)
        path.write_bytes(second)

    _run_with(path, capture_dir, len(first) + len(late) + len(second), rotate)
    data = stream_bytes(str(capture_dir), "log1")
    assert data == first + late + second
    chunks = chunks_of(str(capture_dir), "log1")
    assert [c.offset for c in chunks if c.discontinuity] == [len(first) + len(late)]
    assert_verified(str(capture_dir), streams=1)
