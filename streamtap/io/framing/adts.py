"""AAC ADTS frame headers (audio/aac, audio/aacp streams).

A header is 7 bytes (9 with a CRC): a 12-bit sync (0xFFF), layer 0, the profile, sample rate
index and channels, and a 13-bit frame length that counts the header itself. A frame holds
1 to 4 raw data blocks of 1,024 samples each.
"""

from __future__ import annotations

__all__ = ["HEADER_BYTES", "frame_at"]

HEADER_BYTES = 7

_SAMPLE_RATES = (
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
)


def frame_at(data, i: int) -> tuple[int, int, int, tuple] | None:
    """(length in bytes, samples, sample rate in Hz, key) of the ADTS frame whose header starts
    at data[i] (7 bytes must be there), or None. `key`: what must not change between the frames
    of one stream (MPEG version, profile, sample rate, channels)."""
    b1 = data[i + 1]
    if data[i] != 0xFF or b1 & 0xF6 != 0xF0:  # sync, layer 0
        return None
    b2, b3 = data[i + 2], data[i + 3]
    rate_index = (b2 >> 2) & 0xF
    if rate_index >= len(_SAMPLE_RATES):
        return None
    length = ((b3 & 3) << 11) | (data[i + 4] << 3) | (data[i + 5] >> 5)
    if length < (7 if b1 & 1 else 9):
        return None
    samples = 1024 * ((data[i + 6] & 3) + 1)
    return length, samples, _SAMPLE_RATES[rate_index], (b1 & 0xF8, b2 & 0xFD, b3 >> 6)
