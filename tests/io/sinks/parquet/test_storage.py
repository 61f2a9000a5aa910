"""The Parquet sink's file-system side on real files: stale temporary files of a writer that
died are removed when a run starts, and nothing else ever is."""

from __future__ import annotations

import os
import time

from streamtap.io.sinks.parquet.config import ParquetSink
from streamtap.io.sinks.parquet.storage import (
    STALE_TEMPORARY_SECONDS,
    is_temporary_name,
    temporary_name,
)
from streamtap.plugins import parse_config


def _touch(path, age: float, data: bytes = b"x" * 100):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_temporary_names_are_recognised_exactly():
    name = os.path.basename(temporary_name("/x", "120000-000000000042.parquet"))
    assert is_temporary_name(name)
    for other in ("120000-000000000042.parquet", ".120000-000000000042.parquet",
                  ".120000-000000000042.parquet.tmp-ZZZZZZZZ", ".notes.tmp-0123abcd",
                  ".120000-000000000042.parquet.tmp-0123abcd.keep"):
        assert not is_temporary_name(other), other


def test_a_run_starts_by_removing_only_stale_temporaries_of_the_sink(tmp_path):
    old = STALE_TEMPORARY_SECONDS + 60
    day = tmp_path / "stream=radio1" / "date=2026-12-05"
    stale = [
        _touch(day / ".235950-000000000120.parquet.tmp-0123abcd", old),
        _touch(tmp_path / "stream=radio2" / "date=2026-12-04" /
               ".101010-000000000007.parquet.tmp-deadbeef", 10 * old),
    ]
    kept = [
        _touch(day / ".235959-000000000130.parquet.tmp-89abcdef", 5),  # a live writer's
        _touch(day / "235940-000000000110.parquet", old),  # a final file, however old
        _touch(day / ".user-notes.tmp-0123abcd", old),  # not the sink's naming
        _touch(day / ".235950-000000000120.parquet.tmp-0123abcd.bak", old),
        _touch(tmp_path / ".235950-000000000120.parquet.tmp-0123abcd", old),  # outside a day
        _touch(tmp_path / "elsewhere" / "date=2026-12-05" /
               ".235950-000000000120.parquet.tmp-0123abcd", old),  # not a stream directory
    ]
    config = parse_config({
        "sources": [{"id": "radio1", "type": "tcp", "address": "127.0.0.1:9"}],
        "sinks": [{"type": "parquet", "path": str(tmp_path)}],
    })
    sink = config.sinks[0]
    assert isinstance(sink, ParquetSink)
    assert sink.preflight(config) == []  # what `streamtap run` (and validate) calls first
    assert [path for path in stale if path.exists()] == []
    assert [path for path in kept if not path.exists()] == []
