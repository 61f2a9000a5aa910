"""MPEG audio Layer III (MP3) frame headers: MPEG-1, MPEG-2 and MPEG-2.5.

A header is 4 bytes: an 11-bit sync (0xFFE), the version, the layer, the bitrate and sample
rate indexes and the padding bit give the frame's length in bytes; the version gives its
samples (1,152 for MPEG-1, 576 for MPEG-2 and 2.5). Free-format frames (bitrate index 0) carry
no length and cannot be cut by their headers: `is_free_format` tells them apart from junk.
"""

from __future__ import annotations

__all__ = ["HEADER_BYTES", "frame_at", "is_free_format"]

HEADER_BYTES = 4

# Layer III bitrates in kbit/s by index: MPEG-1, and MPEG-2 / 2.5.
_BITRATES = {
    3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0),
}
_BITRATES[0] = _BITRATES[2]
# Sample rates in Hz by version bits (3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5; 1 is reserved).
_SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _fields(data, i: int):
    """(version bits, bitrate index, sample rate index, padding) of a sync'd Layer III header."""
    if data[i] != 0xFF:
        return None
    b1 = data[i + 1]
    if b1 & 0xE0 != 0xE0 or (b1 >> 1) & 3 != 1:  # sync, Layer III
        return None
    version = (b1 >> 3) & 3
    b2 = data[i + 2]
    rate_index = (b2 >> 2) & 3
    if version == 1 or rate_index == 3 or data[i + 3] & 3 == 2:  # reserved values
        return None
    return version, b2 >> 4, rate_index, (b2 >> 1) & 1


def frame_at(data, i: int) -> tuple[int, int, int, tuple] | None:
    """(length in bytes, samples, sample rate in Hz, key) of the frame whose header starts at
    data[i] (4 bytes must be there), or None if there is no valid header. `key` is what must not
    change between the frames of one stream (version, layer, sample rate)."""
    fields = _fields(data, i)
    if fields is None:
        return None
    version, bitrate_index, rate_index, padding = fields
    bitrate = _BITRATES[version][bitrate_index]
    if not bitrate:  # free format (0) or bad (15)
        return None
    rate = _SAMPLE_RATES[version][rate_index]
    if version == 3:
        return 144_000 * bitrate // rate + padding, 1152, rate, (version, rate_index)
    return 72_000 * bitrate // rate + padding, 576, rate, (version, rate_index)


def is_free_format(data, i: int) -> bool:
    """True if data[i:i+4] is a valid Layer III header of a free-format frame (no length)."""
    fields = _fields(data, i)
    return fields is not None and fields[1] == 0
