"""Whole samples of a fixed size (a sensor's float32 values, PCM frames): `SampleAligner`."""

from __future__ import annotations

from streamtap.io.framing.frames import ms_tag

__all__ = ["SampleAligner"]


class SampleAligner:
    """Sample boundaries every `size` bytes from where the session started (`reset(origin)`);
    `rate` (samples/s, if known) gives `audio_ms`. Same questions as `FrameAligner`."""

    kind = "samples"

    def __init__(self, size: int, rate: float | None = None):
        if size < 1:
            raise ValueError(f"sample size must be >= 1 byte, got {size}")
        self.size = size
        self.rate = rate
        self._origin = 0
        self._first = 0  # bytes before the first sample boundary in the pending bytes

    def spawn(self) -> SampleAligner:
        return SampleAligner(self.size, self.rate)

    def reset(self, origin: int) -> None:
        """A new session: its samples start at stream offset `origin`."""
        self._origin = origin

    def feed(self, buf, offset: int) -> None:
        self._first = (self._origin - offset) % self.size

    def forced(self) -> int:
        """Pending bytes that start mid-sample (a resumed capture) are a chunk of their own."""
        return self._first

    def last_bound(self, limit: int) -> int:
        first = self._first
        return 0 if limit < first else limit - (limit - first) % self.size

    def soft_bound(self, buf) -> int:
        return self.last_bound(len(buf))  # 0: hold the partial sample

    def final_bound(self, buf) -> int:
        return self.last_bound(len(buf))

    def take(self, end: int) -> dict[str, str]:
        if self._first or end % self.size:
            self._first = (self._first - end) % self.size
            return {"unaligned": "partial sample"}
        count = end // self.size
        tags = {"frames": str(count)}
        if self.rate:
            tags["audio_ms"] = ms_tag(count * 1000 / self.rate)
        return tags
