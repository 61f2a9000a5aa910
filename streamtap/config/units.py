"""Quantities with units in a config: byte sizes ('64KiB') and data rates ('128kbit/s').

Parsers of what users type, so they accept ASCII digits only (a Unicode digit like '²' is no
number here) and refuse anything else with None; the loader turns None into an error naming the
key and the forms accepted.
"""

from __future__ import annotations

import math
import re

__all__ = ["BytesPerSecond", "RATE_FORMS", "parse_rate", "parse_size"]

_SIZE = re.compile(r"\s*([0-9]+)\s*(k|ki|m|mi|g|gi)?b?\s*", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {None: 1, "k": 1000, "ki": 1024, "m": 10**6, "mi": 2**20, "g": 10**9, "gi": 2**30}


def parse_size(text: str) -> int | None:
    """'64KiB', '1MB', '65536' -> bytes; None if not a size."""
    match = _SIZE.fullmatch(text)
    if not match:
        return None
    unit = match.group(2).lower() if match.group(2) else None
    return int(match.group(1)) * _SIZE_UNITS[unit]


class BytesPerSecond(float):
    """A data rate in bytes per second; in a config written with units (see parse_rate)."""


RATE_FORMS = "a number of bytes/s, or e.g. '128kbit/s', '2 Mbit/s', '16kB/s', '1MB/s', "
RATE_FORMS += "'1000 samples/s x 4 bytes'"

_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"
_RATE = re.compile(rf"\s*{_NUMBER}\s*(|k|K|M|G)(bit|b|B|iB)/s\s*", re.ASCII)
_SAMPLES = re.compile(rf"\s*{_NUMBER}\s*samples/s\s*[x×*]\s*([0-9]+)\s*(?:bytes?|B)\s*", re.ASCII)
_PREFIX = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9}


def parse_rate(value: object) -> BytesPerSecond | None:
    """'128kbit/s' -> 16000.0 bytes/s; a plain number is bytes/s; None if not a rate.

    Decimal prefixes as networks count (k = 1000); 'kiB/s' is 1024 bytes. 'bit' and 'b' are bits,
    'B' bytes.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        number = _parse_rate_text(value)
        if number is None:
            return None
    else:
        return None
    return BytesPerSecond(number) if math.isfinite(number) and number >= 0 else None


def _parse_rate_text(text: str) -> float | None:
    samples = _SAMPLES.fullmatch(text)
    if samples:
        return float(samples.group(1)) * int(samples.group(2))
    match = _RATE.fullmatch(text)
    if not match:
        return None
    number, prefix, unit = float(match.group(1)), match.group(2).replace("K", "k"), match.group(3)
    if unit == "iB":
        return number * {"": 1, "k": 1024, "M": 2**20, "G": 2**30}[prefix]
    scale = _PREFIX[prefix]
    return number * scale / 8 if unit in ("bit", "b") else number * scale
