"""The one record that flows through every streamtap pipeline: a tagged chunk of stream bytes.

(stream_id, session, seq) is the idempotency key: a redelivered chunk carries the same key and the
same bytes, so sinks and `streamtap verify` can drop it.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import google_crc32c
from apache_beam import coders
from apache_beam.coders import coder_impl


class Chunk(NamedTuple):
    """A run of consecutive bytes from one stream.

    Attributes:
      stream_id: the configured source id; Kafka key and Kinesis partition key.
      session: id of one connection/open of the source; changes on every reconnect.
      seq: per-stream sequence number, contiguous from 0 and never reused, also across reconnects.
      offset: byte offset of payload[0] in everything received from this stream.
      payload: the bytes, unchanged.
      event_time: arrival time of the first payload byte, seconds since the Unix epoch (UTC).
      crc32c: CRC-32C (Castagnoli) of payload.
      discontinuity: True on the first chunk after a reconnect or restart: bytes may be missing
        between the previous chunk and this one.
      tags: small str -> str map (content type, ICY stream title, user tags from the config).
    """

    stream_id: str
    session: str
    seq: int
    offset: int
    payload: bytes
    event_time: float
    crc32c: int
    discontinuity: bool = False
    tags: dict[str, str] = {}

    @property
    def end_offset(self) -> int:
        """Offset one past the last payload byte: where the next chunk of the session starts."""
        return self.offset + len(self.payload)

    @property
    def key(self) -> tuple[str, str, int]:
        """The idempotency key."""
        return (self.stream_id, self.session, self.seq)

    def checksum_ok(self) -> bool:
        return crc32c(self.payload) == self.crc32c


def crc32c(data: bytes) -> int:
    return google_crc32c.value(data)


def make_chunk(
    stream_id: str,
    session: str,
    seq: int,
    offset: int,
    payload: bytes,
    event_time: float,
    discontinuity: bool = False,
    tags: dict[str, str] | None = None,
) -> Chunk:
    """Builds a chunk and computes its checksum."""
    return Chunk(
        stream_id, session, seq, offset, payload, event_time, crc32c(payload), discontinuity,
        dict(tags or {}),
    )


# Fixed part of the encoding: seq, offset, event_time, crc32c, discontinuity, payload length.
_HEADER = struct.Struct(">qqdI?I")


def _put_str(parts: list[bytes], value: str) -> None:
    raw = value.encode("utf-8")
    parts.append(struct.pack(">H", len(raw)))
    parts.append(raw)


def _get_str(data: memoryview, pos: int) -> tuple[str, int]:
    (length,) = struct.unpack_from(">H", data, pos)
    pos += 2
    return bytes(data[pos : pos + length]).decode("utf-8"), pos + length


def _head(chunk: Chunk) -> bytes:
    """Everything of the encoding but the payload: strings, tags, fixed header."""
    parts: list[bytes] = []
    _put_str(parts, chunk.stream_id)
    _put_str(parts, chunk.session)
    parts.append(struct.pack(">H", len(chunk.tags)))
    for name, value in chunk.tags.items():
        _put_str(parts, name)
        _put_str(parts, value)
    parts.append(
        _HEADER.pack(
            chunk.seq, chunk.offset, chunk.event_time, chunk.crc32c, chunk.discontinuity,
            len(chunk.payload),
        )
    )
    return b"".join(parts)


_U16 = struct.Struct(">H")


def _read_str(stream) -> str:
    (length,) = _U16.unpack(stream.read(2))
    return stream.read(length).decode("utf-8")


class _ChunkCoderImpl(coder_impl.StreamCoderImpl):
    """Writes the head and then the payload straight into the runner's stream, and reads the
    payload straight out of it: one copy of the payload each way instead of three (join, copy
    into the stream; copy out of the stream, slice) with Beam's default callback coder impl.
    The encoding is self-delimiting, so nested and outer contexts are the same bytes.
    """

    def encode_to_stream(self, chunk: Chunk, out, nested: bool) -> None:
        out.write(_head(chunk))
        out.write(chunk.payload)

    def decode_from_stream(self, stream, nested: bool) -> Chunk:
        stream_id = _read_str(stream)
        session = _read_str(stream)
        (tag_count,) = _U16.unpack(stream.read(2))
        tags = {}
        for _ in range(tag_count):
            name = _read_str(stream)
            tags[name] = _read_str(stream)
        seq, offset, event_time, checksum, discontinuity, length = _HEADER.unpack(
            stream.read(_HEADER.size)
        )
        payload = stream.read(length)
        return Chunk(stream_id, session, seq, offset, payload, event_time, checksum, discontinuity, tags)

    def estimate_size(self, chunk: Chunk, nested: bool = False) -> int:
        # Beam samples element sizes for its metrics; encoding a 64 KiB chunk to measure it
        # would copy the payload once more.
        tags = sum(4 + len(k) + len(v) for k, v in chunk.tags.items())
        return 6 + len(chunk.stream_id) + len(chunk.session) + tags + _HEADER.size + len(chunk.payload)


class ChunkCoder(coders.Coder):
    """Compact binary coder: a fixed header, length-prefixed strings, then the payload as is.

    Pickling a chunk would copy the payload through pickle's framing and cost ~10x the CPU.
    """

    def encode(self, chunk: Chunk) -> bytes:
        return _head(chunk) + chunk.payload

    def decode(self, encoded: bytes) -> Chunk:
        data = memoryview(encoded)
        stream_id, pos = _get_str(data, 0)
        session, pos = _get_str(data, pos)
        (tag_count,) = struct.unpack_from(">H", data, pos)
        pos += 2
        tags = {}
        for _ in range(tag_count):
            name, pos = _get_str(data, pos)
            tags[name], pos = _get_str(data, pos)
        seq, offset, event_time, checksum, discontinuity, length = _HEADER.unpack_from(data, pos)
        pos += _HEADER.size
        payload = bytes(data[pos : pos + length])
        return Chunk(stream_id, session, seq, offset, payload, event_time, checksum, discontinuity, tags)

    def _create_impl(self):
        return _ChunkCoderImpl()

    def is_deterministic(self) -> bool:
        # Tags keep insertion order, so equal chunks built the same way encode the same.
        return True

    def to_type_hint(self):
        return Chunk


coders.registry.register_coder(Chunk, ChunkCoder)
