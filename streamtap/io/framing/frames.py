"""Where a stream of self-delimiting audio frames (MP3, ADTS) can be cut: `FrameAligner`.

A frame is accepted only when the next header follows where its length says (and agrees with it
on version and sample rate): a lone sync pattern inside audio data, or a header followed by
junk, is not a frame. Bytes that do not parse as frames -- a stream that starts mid-frame, an
ID3 tag, a station's junk between frames -- become a chunk of their own, tagged `unaligned`.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable

__all__ = ["FrameAligner", "ms_tag"]

# frame_at(data, i) -> (length, samples, sample rate, key) or None (see mp3.frame_at).
FrameAt = Callable[[object, int], "tuple[int, int, int, tuple] | None"]


def ms_tag(ms: float) -> str:
    """A duration in ms as a tag value: at most 3 decimals, no trailing zeros."""
    return f"{ms:.3f}".rstrip("0").rstrip(".")


class FrameAligner:
    """Frame boundaries in the chunk being filled (the cutter's pending bytes), found
    incrementally as bytes come; positions are relative to the first pending byte.

    States: synced (the pending bytes start with a frame; `_bounds` are the confirmed frame
    ends) or searching (looking for the first confirmed frame; `_junk_end` once found).
    """

    def __init__(
        self,
        kind: str,
        frame_at: FrameAt,
        header_bytes: int,
        free_format: Callable[[object, int], bool] | None = None,
    ):
        self.kind = kind
        self._frame_at = frame_at
        self._header = header_bytes
        self._free_format = free_format
        self.reset(0)

    def spawn(self) -> FrameAligner:
        return FrameAligner(self.kind, self._frame_at, self._header, self._free_format)

    def reset(self, origin: int) -> None:
        """A new session: nothing is known about its bytes (origin: unused, see SampleAligner)."""
        self._synced = False
        self._search = 0  # searching: first position not yet ruled out as a frame start
        self._junk_end = 0  # searching: where the first confirmed frame starts (0: not found)
        self._junk_reason = "junk"
        self._free = False  # a free-format header was seen
        self._pos = 0  # synced: start of the last accepted frame header (unconfirmed frame)
        self._cur: tuple | None = None  # synced: that frame's (length, samples, rate, key)
        self._bounds: list[int] = []  # synced: confirmed frame ends
        self._ms: list[float] = []  # synced: audio ms of the frames up to each bound
        self._desync = 0  # synced: the frame at this position is not confirmed: cut here

    # --- the cutter's questions ---

    def feed(self, buf, offset: int) -> None:
        """Scans what was appended to `buf` (the pending bytes; `offset`: unused)."""
        if not self._synced:
            if not self._junk_end:
                self._find_sync(buf)
        elif not self._desync:
            self._walk(buf)

    def forced(self) -> int:
        """A cut that must come now: the end of junk, or the end of the frames before junk."""
        return self._junk_end or self._desync

    def last_bound(self, limit: int) -> int:
        """The last confirmed frame end at or before `limit`, 0 if none."""
        bounds = self._bounds
        index = bisect_right(bounds, limit) - 1
        return bounds[index] if index >= 0 else 0

    def soft_bound(self, buf) -> int:
        """Where a cut on time or a tag change goes: the last confirmed frame end, if there are
        two frames at least; 0: hold the bytes (a frame is still arriving; ffmpeg's MP3 demuxer
        does not open a file of one frame); searching: the bytes ruled out as frame starts."""
        if len(self._bounds) >= 2:
            return self._bounds[-1]
        if self._bounds:
            return 0
        return 0 if self._synced else self._search

    def final_bound(self, buf) -> int:
        """Where the last cut of a session goes: after every complete frame (the last one
        needs no successor); 0 if none."""
        if not self._synced or self._desync:
            return self._bounds[-1] if self._bounds else 0
        end = self._pos + self._cur[0]
        if not self._bounds and end < len(buf):
            return 0  # one frame and a part: one unaligned chunk rather than a lone frame
        if end <= len(buf):
            self._bounds.append(end)
            self._ms.append(
                (self._ms[-1] if self._ms else 0.0) + self._cur[1] * 1000 / self._cur[2]
            )
            self._pos = end
            return end
        return self._bounds[-1] if self._bounds else 0

    def take(self, end: int) -> dict[str, str]:
        """The tags of the chunk of the first `end` pending bytes, which is being cut; the
        positions move on to the bytes after it."""
        bounds = self._bounds
        index = bisect_left(bounds, end)
        if self._synced and index < len(bounds) and bounds[index] == end:
            ms = self._ms[index]
            tags = {"frames": str(index + 1), "audio_ms": ms_tag(ms)}
            self._bounds = [b - end for b in bounds[index + 1 :]]
            self._ms = [m - ms for m in self._ms[index + 1 :]]
            self._pos -= end
            if self._desync:
                self._desync -= end
                if not self._desync:  # the next frame is not confirmed: search again
                    self.reset(0)
                    self._search = 1
            return tags
        if self._junk_end and end == self._junk_end:
            reason = self._junk_reason
        elif self._synced:
            reason = "partial frame"
        else:
            reason = "free-format" if self._free else "no frame header"
        free = self._free  # a free-format stream stays one until the session ends
        self.reset(0)
        self._free = free
        return {"unaligned": reason}

    # --- scanning ---

    def _find_sync(self, buf) -> None:
        n, header, frame_at = len(buf), self._header, self._frame_at
        s = self._search
        if s == 0 and buf[:3] == b"ID3":
            if n >= 10:  # ID3v2: 10-byte header, syncsafe size, optional 10-byte footer
                size = (buf[6] << 21) | (buf[7] << 14) | (buf[8] << 7) | buf[9]
                self._junk_end = 10 + size + (10 if buf[5] & 0x10 else 0)
                self._junk_reason = "id3"
            return
        while True:
            s = buf.find(b"\xff", s)
            if s < 0:
                self._search = n
                return
            if s + header > n:
                self._search = s
                return
            frame = frame_at(buf, s)
            if frame is None:
                if self._free_format is not None and self._free_format(buf, s):
                    self._free = True
                s += 1
                continue
            following = s + frame[0]
            if following + header > n:
                self._search = s  # its successor has not arrived yet
                return
            after = frame_at(buf, following)
            if after is None or after[3] != frame[3]:
                s += 1
                continue
            if s:
                self._junk_end, self._junk_reason, self._search = s, "junk", s
            else:
                self._synced, self._pos, self._cur = True, 0, frame
                self._walk(buf)
            return

    def _walk(self, buf) -> None:
        n, header, frame_at = len(buf), self._header, self._frame_at
        pos, cur = self._pos, self._cur
        bounds, ms = self._bounds, self._ms
        total = ms[-1] if ms else 0.0
        while True:
            following = pos + cur[0]
            if following + header > n:
                break
            after = frame_at(buf, following)
            if after is None or after[3] != cur[3]:
                if pos:
                    self._desync = pos
                else:  # the first frame is not confirmed after all: junk until the next one
                    self.reset(0)
                    self._search = 1
                    self._find_sync(buf)
                    return
                break
            total += cur[1] * 1000 / cur[2]
            bounds.append(following)
            ms.append(total)
            pos, cur = following, after
        self._pos, self._cur = pos, cur
