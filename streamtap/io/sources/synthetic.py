"""Synthetic sources: a sensor at N samples/s and an audio tone, generated in real time.

The bytes are a pure function of the sample index, so a test (or a user checking a pipeline)
can regenerate exactly what a capture should contain with `synthetic_bytes`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from streamtap.config import SourceConfig, doc
from streamtap.io.connector import ByteSink, Connector

__all__ = ["SyntheticSource", "synthetic_bytes"]

_FORMATS = {"int16": "<i2", "int32": "<i4", "float32": "<f4", "float64": "<f8"}
_TICK_SECONDS = 0.01


@dataclass(kw_only=True)
class SyntheticSource(SourceConfig):
    type_name: ClassVar[str] = "synthetic"

    kind: str = doc("'sensor' (slow wave plus noise) or 'tone' (a sine wave, PCM audio).", "sensor")
    rate: float = doc("Samples per second.", 1000.0)
    sample_format: str = doc("Little-endian sample type: int16, int32, float32 or float64.", "float32")
    frequency: float = doc("Tone frequency in Hz (kind: tone).", 440.0, min=0, max=10_000_000)
    seed: int = doc("Seed of the sensor noise.", 0, min=0, max=2**32 - 1)

    def validate(self, path: str) -> list[str]:
        errors = super().validate(path)
        if self.kind not in ("sensor", "tone"):
            errors.append(f"{path}.kind: must be 'sensor' or 'tone', got {self.kind!r}")
        if self.sample_format not in _FORMATS:
            errors.append(
                f"{path}.sample_format: must be one of {', '.join(_FORMATS)}, "
                f"got {self.sample_format!r}"
            )
        if not 0 < self.rate <= 10_000_000:
            errors.append(f"{path}.rate: must be between 0 and 10000000 samples/s, got {self.rate}")
        return errors

    @property
    def sample_size(self) -> int:
        return np.dtype(_FORMATS[self.sample_format]).itemsize

    def declared_rate(self) -> tuple[float, str] | None:
        return super().declared_rate() or (
            self.rate * self.sample_size,
            f"{self.rate:g} samples/s x {self.sample_size} bytes ({self.sample_format})",
        )

    def connector(self) -> Connector:
        return _SyntheticConnector(self)


def synthetic_bytes(config: SyntheticSource, first_sample: int, count: int) -> bytes:
    """The bytes of samples [first_sample, first_sample + count) of this source."""
    n = np.arange(first_sample, first_sample + count, dtype=np.float64)
    dtype = np.dtype(_FORMATS[config.sample_format])
    if config.kind == "tone":
        values = np.sin(2 * np.pi * config.frequency * n / config.rate)
    else:
        # 20 +- 5 degrees over a minute, plus deterministic noise from a hash of the index.
        hashed = (n.astype(np.uint64) * np.uint64(2654435761) + np.uint64(config.seed)) % (2**32)
        values = 20 + 5 * np.sin(2 * np.pi * n / (config.rate * 60)) + (hashed / 2**32 - 0.5)
    if dtype.kind == "i":
        scale = 0.8 * np.iinfo(dtype).max / (1 if config.kind == "tone" else 30)
        values = np.round(values * scale)
    return values.astype(dtype).tobytes()


class _SyntheticConnector(Connector):
    seekable = True  # the samples after a resume are exactly the ones that would have come

    def __init__(self, config: SyntheticSource):
        self._config = config

    def describe(self) -> str:
        c = self._config
        return f"synthetic {c.kind} {c.rate:g} samples/s {c.sample_format}"

    async def run_session(self, sink: ByteSink, resume_offset: int) -> None:
        config = self._config
        size = config.sample_size
        # A byte limit or chunk cut may have stopped mid-sample: resume inside it.
        next_sample, skip = divmod(resume_offset, size)
        started = time.monotonic()
        emitted = 0
        while True:
            await sink.wait_for_room()
            due = int((time.monotonic() - started) * config.rate) - emitted
            if due > 0:
                data = synthetic_bytes(config, next_sample + emitted, due)
                if skip:
                    data, skip = data[skip:], 0
                sink.write(data)
                emitted += due
            await asyncio.sleep(_TICK_SECONDS)
