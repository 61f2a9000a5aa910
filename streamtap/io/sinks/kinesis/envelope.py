"""The Kinesis record envelope: one chunk as one self-describing, versioned record.

Kinesis records have no headers, so each record carries the chunk's metadata in front of its
payload. Layout of version 1 (all integers big-endian; README "Kinesis sink" shows it with a
ten-line decoder):

    offset  size  field
    0       2     magic b"ST" (0x53 0x54)
    2       1     version: 1
    3       1     flags: bit 0 = discontinuity; other bits 0
    4       4     head length H (uint32): bytes before the payload, 40 + the JSON block
    8       8     seq (int64)
    16      8     offset (int64): byte offset of the payload in the stream
    24      8     event_time (IEEE 754 float64): seconds since the Unix epoch, UTC
    32      4     crc32c (uint32): CRC-32C (Castagnoli) of the payload
    36      4     payload length P (uint32)
    40      H-40  UTF-8 JSON object: {"stream_id": str, "session": str, "tags": {str: str}}
    H       P     the payload, unchanged; H + P is the record's length

Fixed-width numbers come first so a consumer can filter by seq without parsing JSON; the text
fields are JSON so any language decodes them. A reader may find more JSON keys in later
records (they are added without a version change) and must ignore them; an incompatible
layout changes the version byte.
"""

from __future__ import annotations

import json
import struct

from streamtap.chunk import Chunk
from streamtap.errors import EnvelopeError

__all__ = ["ENVELOPE_VERSION", "HEADER", "decode", "decode_position", "encode"]

MAGIC = b"ST"
ENVELOPE_VERSION = 1
# magic, version, flags, head length, seq, offset, event_time, crc32c, payload length
HEADER = struct.Struct(">2sBBIqqdII")
_DISCONTINUITY = 0x01


def encode(chunk: Chunk) -> bytes:
    """The record bytes of `chunk`: header, JSON block, payload (one copy of the payload)."""
    meta = _meta(chunk)
    head = HEADER.size + len(meta)
    return b"".join(
        (
            HEADER.pack(
                MAGIC,
                ENVELOPE_VERSION,
                _DISCONTINUITY if chunk.discontinuity else 0,
                head,
                chunk.seq,
                chunk.offset,
                chunk.event_time,
                chunk.crc32c,
                len(chunk.payload),
            ),
            meta,
            chunk.payload,
        )
    )


def _meta(chunk: Chunk) -> bytes:
    return json.dumps(
        {"stream_id": chunk.stream_id, "session": chunk.session, "tags": chunk.tags},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")


def _header(data: bytes) -> tuple:
    if len(data) < HEADER.size:
        raise EnvelopeError(
            f"not a streamtap record: {len(data)} bytes, shorter than the {HEADER.size}-byte header"
        )
    fields = HEADER.unpack_from(data)
    magic, version, flags, head, _seq, _offset, _time, _crc, length = fields
    if magic != MAGIC:
        raise EnvelopeError(f"not a streamtap record: starts with {bytes(magic)!r}, not b'ST'")
    if version != ENVELOPE_VERSION:
        raise EnvelopeError(
            f"streamtap record version {version}: this streamtap reads version "
            f"{ENVELOPE_VERSION}; upgrade streamtap to read it"
        )
    if flags & ~_DISCONTINUITY:
        raise EnvelopeError(f"malformed streamtap record: unknown flags {flags:#04x}")
    if head < HEADER.size or head + length != len(data):
        raise EnvelopeError(
            f"malformed streamtap record: head {head} + payload {length} bytes do not add up "
            f"to the record's {len(data)} bytes (truncated or not a streamtap record)"
        )
    return fields


def decode(data: bytes) -> Chunk:
    """The chunk in a record; EnvelopeError (a ValueError) for anything that is not one."""
    _magic, _version, flags, head, seq, offset, event_time, crc, _length = _header(data)
    try:
        meta = json.loads(bytes(data[HEADER.size : head]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise EnvelopeError(
            f"malformed streamtap record: metadata is not UTF-8 JSON ({error})"
        ) from None
    if not isinstance(meta, dict):
        raise EnvelopeError("malformed streamtap record: metadata is not a JSON object")
    stream_id, session, tags = meta.get("stream_id"), meta.get("session"), meta.get("tags", {})
    if not isinstance(stream_id, str) or not isinstance(session, str):
        raise EnvelopeError(
            "malformed streamtap record: metadata needs the strings stream_id and session"
        )
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise EnvelopeError("malformed streamtap record: tags must map strings to strings")
    return Chunk(
        stream_id,
        session,
        seq,
        offset,
        bytes(data[head:]),
        event_time,
        crc,
        bool(flags & _DISCONTINUITY),
        tags,
    )


def decode_position(data: bytes) -> tuple[int, int]:
    """(seq, end offset) of a record, from its fixed header alone (no JSON, no payload copy).

    For resuming, which reads a whole stream's records and needs only these two numbers.
    """
    _magic, _version, _flags, _head, seq, offset, _time, _crc, length = _header(data)
    return seq, offset + length
