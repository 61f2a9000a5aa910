"""verify's view of a capture against the config that made it: every configured stream counts."""

from __future__ import annotations

import json
import os

from streamtap.captures import verify
from streamtap.chunk import make_chunk
from streamtap.cli import main
from tests.helpers import TcpFeeder, capture, write_config


def _stream(stream_id: str, pieces: list[bytes]):
    offset = 0
    for seq, payload in enumerate(pieces):
        yield make_chunk(stream_id, "s1", seq, offset, payload, 1_800_000_000.0 + seq)
        offset += len(payload)


def test_a_configured_stream_with_no_chunk_fails_verify():
    reports = verify(_stream("radio1", [b"abc", b"def"]), expected=["radio1", "radio2"])
    assert reports["radio1"].ok and reports["radio1"].bytes == 6
    assert not reports["radio2"].ok
    assert reports["radio2"].problems == ["no chunk captured: the stream is configured but absent"]


def test_verify_with_the_config_lists_the_stream_that_captured_nothing(tmp_path, capsys):
    data = os.urandom(50_000)
    capture_dir = tmp_path / "capture"
    with TcpFeeder(data) as feeder:
        config = {
            "sources": [feeder.source("sensor1", max_bytes=len(data))],
            "sinks": [{"type": "parquet", "path": str(capture_dir)}],
        }
        capture(config)
    # The same capture, as the config of a run where a second stream never delivered a byte.
    config["sources"].append({"id": "sensor2", "type": "tcp", "address": "127.0.0.1:9"})
    config_path = write_config(tmp_path / "pipeline.yaml", config)

    assert main(["verify", str(capture_dir)]) == 0
    assert main(["verify", str(capture_dir), "--config", str(config_path)]) == 1
    out = capsys.readouterr().out
    assert "sensor2: 0 chunks, 0 bytes" in out
    assert "no chunk captured: the stream is configured but absent" in out
    assert "verify: 1 of 2 stream(s) OK" in out


def test_verify_json_carries_the_numbers_of_the_summary(tmp_path, capsys):
    data = os.urandom(40_000)
    with TcpFeeder(data) as feeder:
        capture({
            "sources": [feeder.source("sensor1", max_bytes=len(data))],
            "sinks": [{"type": "parquet", "path": str(tmp_path)}],
        })
    assert main(["verify", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    (stream,) = report["streams"]
    assert stream["stream_id"] == "sensor1" and stream["bytes"] == len(data)
    assert main(["verify", str(tmp_path)]) == 0
    summary = capsys.readouterr().out
    assert f"sensor1: {stream['chunks']} chunks, {len(data)} bytes" in summary
    assert stream["first_event_time"] in summary and stream["last_event_time"] in summary


def _chunks(pieces, order):
    made = list(_stream("radio1", pieces))
    return [made[i] for i in order]


def test_reassemble_writes_in_seq_order_once_each_within_a_memory_bound():
    import io
    import random

    from streamtap.captures import reassemble

    pieces = [os.urandom(100) for _ in range(200)]
    order = list(range(200))
    rng = random.Random(7)
    for i in range(0, 200, 10):  # shuffled within windows of 10 chunks, plus redeliveries
        window = order[i : i + 10]
        rng.shuffle(window)
        order[i : i + 10] = window
    order += [3, 150, 199]
    output = io.BytesIO()
    counts = reassemble(_chunks(pieces, order), output, max_held_bytes=2_000)
    assert output.getvalue() == b"".join(pieces)
    assert counts == {"chunks": 200, "bytes": 20_000, "discontinuities": 0}


def test_reassemble_refuses_a_chunk_too_far_out_of_order():
    import io

    import pytest

    from streamtap.captures import reassemble

    pieces = [os.urandom(100) for _ in range(50)]
    order = [i for i in range(50) if i != 5] + [5]  # seq 5 comes after 45 later chunks
    with pytest.raises(ValueError, match="chunk seq 5 came after later chunks were written"):
        reassemble(_chunks(pieces, order), io.BytesIO(), max_held_bytes=1_000)
    output = io.BytesIO()
    reassemble(_chunks(pieces, order), output)  # the default bound holds them all
    assert output.getvalue() == b"".join(pieces)
