import google_crc32c

from streamtap.chunk import Chunk, ChunkCoder, make_chunk


def test_coder_round_trips_every_field():
    coder = ChunkCoder()
    chunk = make_chunk(
        "radio-1.main", "a1b2", 7, 123456789012, bytes(range(256)) * 5, 1764489600.123456,
        discontinuity=True, tags={"icy_title": "Käse & Brot 'live'", "content_type": "audio/mpeg"},
    )
    decoded = coder.decode(coder.encode(chunk))
    assert decoded == chunk
    assert decoded.payload == chunk.payload
    assert decoded.tags == chunk.tags


def test_coder_handles_empty_payload_and_no_tags():
    coder = ChunkCoder()
    chunk = make_chunk("s", "x", 0, 0, b"", 0.0)
    assert coder.decode(coder.encode(chunk)) == chunk


def test_checksum_is_crc32c_of_payload():
    chunk = make_chunk("s", "x", 0, 0, b"123456789", 0.0)
    assert chunk.crc32c == 0xE3069283  # the CRC-32C check value
    assert chunk.crc32c == google_crc32c.value(b"123456789")
    assert chunk.checksum_ok()
    assert not chunk._replace(payload=b"123456780").checksum_ok()


def test_end_offset_and_key():
    chunk = make_chunk("s", "sess", 3, 100, b"abcd", 1.0)
    assert chunk.end_offset == 104
    assert chunk.key == ("s", "sess", 3)
    assert isinstance(chunk, Chunk)
