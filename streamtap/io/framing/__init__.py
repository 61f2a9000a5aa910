"""Frame-aligned cutting: where a stream's own format lets a chunk end, so that every chunk is a
self-contained piece of audio or samples that decodes alone (`chunk.align`).

Pure, like `streamtap.io.cutting`, which asks an aligner where to cut:
- `mp3`: MPEG-1/2/2.5 Layer III frames; `adts`: AAC ADTS frames (`frames.FrameAligner`: a frame
  counts only when the next header follows where its length says);
- `samples`: whole samples of N bytes (`samples.SampleAligner`).

`aligner_choice(align, source)` turns the config into the cutter's `aligner_for(tags)`: with
`align: auto` the rule comes from the content type (`audio/mpeg`, `audio/aac`, `audio/aacp`, the
http source's `content_type` tag) or the source's own sample format (`sample_bytes`; a synthetic
source's `sample_format`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from streamtap.io.framing import adts, mp3
from streamtap.io.framing.frames import FrameAligner
from streamtap.io.framing.samples import SampleAligner

__all__ = ["ALIGN_MODES", "FrameAligner", "SampleAligner", "aligner_choice", "make_aligner"]

ALIGN_MODES = ("none", "auto", "mp3", "adts", "samples")

_CONTENT_TYPES = {
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/aac": "adts",
    "audio/aacp": "adts",
}

Aligner = FrameAligner | SampleAligner


def make_aligner(kind: str, sample_bytes: int | None = None, rate: float | None = None) -> Aligner:
    """A fresh aligner of one kind: 'mp3', 'adts' or 'samples' (with `sample_bytes`)."""
    if kind == "mp3":
        return FrameAligner("mp3", mp3.frame_at, mp3.HEADER_BYTES, mp3.is_free_format)
    if kind == "adts":
        return FrameAligner("adts", adts.frame_at, adts.HEADER_BYTES)
    if kind == "samples":
        if not sample_bytes:
            raise ValueError("align: samples needs the source's sample_bytes")
        return SampleAligner(sample_bytes, rate)
    raise ValueError(f"unknown align mode {kind!r}; use one of {', '.join(ALIGN_MODES)}")


def sample_format_of(source) -> tuple[int | None, float | None]:
    """(bytes per sample, samples/s) a source declares: `sample_bytes`, or a synthetic source's
    own sample format and rate; (None, None) if it declares none."""
    size = getattr(source, "sample_bytes", None)
    if size:
        return size, None
    if getattr(source, "type", "") == "synthetic":
        return source.sample_size, source.rate
    return None, None


def aligner_choice(align: str, source) -> Callable[[Mapping[str, str]], Aligner | None] | None:
    """The cutter's `aligner_for(tags)` for `align` on `source`, or None for no alignment
    (`none`, or `auto` on a source with no sample format that sets no content type)."""
    if align == "none":
        return None
    size, rate = sample_format_of(source)
    if align == "auto":
        if size:
            return lambda tags: make_aligner("samples", size, rate)
        if getattr(source, "type", "") != "http":
            return None

        def by_content_type(tags: Mapping[str, str]) -> Aligner | None:
            content_type = tags.get("content_type", "").split(";")[0].strip().lower()
            kind = _CONTENT_TYPES.get(content_type)
            return make_aligner(kind) if kind else None

        return by_content_type
    make_aligner(align, size, rate)  # raises on a bad mode or a missing sample size
    return lambda tags: make_aligner(align, size, rate)
