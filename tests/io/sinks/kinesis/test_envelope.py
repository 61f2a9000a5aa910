"""The Kinesis record envelope: its bytes, README's decoder, and any bytes decoded safely."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtap.chunk import make_chunk
from streamtap.errors import EnvelopeError
from streamtap.io.sinks.kinesis import envelope

README = Path(__file__).resolve().parents[4] / "README.md"


def _chunk(**fields):
    values = {
        "stream_id": "radio1",
        "session": "a1b2",
        "seq": 7,
        "offset": 65536,
        "payload": b"\x00\xffID3 audio",
        "event_time": 1_796_000_000.125,
        "discontinuity": True,
        "tags": {"icy_title": "Ünïcode — a=b"},
    }
    values.update(fields)
    return make_chunk(**values)


def test_layout_is_the_documented_one_byte_by_byte():
    chunk = _chunk()
    data = envelope.encode(chunk)
    meta = b'{"stream_id":"radio1","session":"a1b2","tags":{"icy_title":"\xc3\x9cn\xc3\xafcode \xe2\x80\x94 a=b"}}'
    head = 40 + len(meta)
    assert data[:2] == b"ST" and data[2] == 1 and data[3] == 0x01
    assert struct.unpack(">I", data[4:8]) == (head,)
    assert struct.unpack(">qqdII", data[8:40]) == (
        7,
        65536,
        1_796_000_000.125,
        chunk.crc32c,
        len(chunk.payload),
    )
    assert data[40:head] == meta
    assert data[head:] == chunk.payload  # the payload, unchanged, to the record's end
    assert envelope.decode(data) == chunk


def test_readme_decoder_reads_what_the_sink_writes():
    """README's ten-line decoder is the one a consumer copies: it must read real records."""
    text = README.read_text()
    block = re.search(r"```python\n(import json, struct\n.*?)```", text, re.DOTALL)
    assert block, "README lost its Kinesis record decoder"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 10
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - our own README
    for chunk in (_chunk(), _chunk(discontinuity=False, tags={}, payload=b""), _chunk(seq=2**40)):
        fields = namespace["decode_record"](envelope.encode(chunk))
        assert fields == {
            "stream_id": chunk.stream_id,
            "session": chunk.session,
            "tags": chunk.tags,
            "seq": chunk.seq,
            "offset": chunk.offset,
            "event_time": chunk.event_time,
            "crc32c": chunk.crc32c,
            "discontinuity": chunk.discontinuity,
            "payload": chunk.payload,
        }


def test_decode_position_reads_only_the_fixed_header():
    data = envelope.encode(_chunk(seq=41, offset=1000, payload=b"x" * 300))
    assert envelope.decode_position(data) == (41, 1300)


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "shorter than the 40-byte header"),
        (b"PK" + bytes(60), "not a streamtap record"),
        (b"ST\x02" + bytes(60), "version 2"),
        (b"ST\x01\x80" + bytes(60), "unknown flags"),
    ],
)
def test_foreign_bytes_are_a_clear_error(data, words):
    with pytest.raises(EnvelopeError, match=words):
        envelope.decode(data)


def test_truncated_and_damaged_records_are_errors():
    data = envelope.encode(_chunk())
    with pytest.raises(EnvelopeError, match="do not add up"):
        envelope.decode(data[:-1])
    with pytest.raises(EnvelopeError, match="do not add up"):
        envelope.decode(data + b"!")
    damaged = bytearray(data)
    damaged[40] = ord("[")  # the JSON block no longer an object
    with pytest.raises(EnvelopeError, match="metadata"):
        envelope.decode(bytes(damaged))


_text = st.text(max_size=40)
_chunks = st.builds(
    make_chunk,
    stream_id=_text,
    session=_text,
    seq=st.integers(-(2**63), 2**63 - 1),
    offset=st.integers(-(2**63), 2**63 - 1),
    payload=st.binary(max_size=2000),
    event_time=st.floats(allow_nan=False),
    discontinuity=st.booleans(),
    tags=st.dictionaries(_text, _text, max_size=4),
)


@settings(max_examples=400, deadline=None)
@given(_chunks)
def test_every_chunk_round_trips(chunk):
    assert envelope.decode(envelope.encode(chunk)) == chunk


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_to_a_chunk_or_raise_envelope_error(data):
    _decode_or_envelope_error(data)


@settings(max_examples=500, deadline=None)
@given(_chunks, st.data())
def test_damaged_records_decode_to_a_chunk_or_raise_envelope_error(chunk, data):
    """Bytes close to real records reach the deeper checks that random bytes rarely do."""
    record = bytearray(envelope.encode(chunk))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(record) - 1))
        record[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(record)))
    _decode_or_envelope_error(bytes(record[:cut]) if data.draw(st.booleans()) else bytes(record))


def _decode_or_envelope_error(data: bytes) -> None:
    try:
        chunk = envelope.decode(data)
    except EnvelopeError as error:
        assert str(error)
        return
    # What decodes is a whole chunk whose fields have their types and cover the record.
    assert isinstance(chunk.stream_id, str) and isinstance(chunk.session, str)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in chunk.tags.items())
    assert isinstance(chunk.payload, bytes) and data.endswith(chunk.payload)
