"""The `tag` transform: adds fixed tags to the chunks of the streams whose id matches a pattern.

Also the smallest example of a streamtap transform: a config dataclass that builds a PTransform
over chunks (see README, "Add your own source, sink or transform").
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import ClassVar

import apache_beam as beam

from streamtap.chunk import Chunk
from streamtap.config import PipelineConfig, TransformConfig, doc

__all__ = ["TagTransform", "AddTags"]


@dataclass(kw_only=True)
class TagTransform(TransformConfig):
    type_name: ClassVar[str] = "tag"

    streams: str = doc("Glob pattern of the stream ids to tag, e.g. 'sensor*'.", "*")
    tags: dict[str, str] = doc("Tags to add (they override tags of the same name).", default_factory=dict)

    def validate(self, path: str) -> list[str]:
        return [] if self.tags else [f"{path}.tags: give at least one tag to add"]

    def transform(self, config: PipelineConfig) -> beam.PTransform:
        return AddTags(self.streams, self.tags)


class AddTags(beam.PTransform):
    """Adds `tags` to every chunk whose stream id matches the glob `streams`."""

    def __init__(self, streams: str, tags: dict[str, str]):
        super().__init__()
        self._streams = streams
        self._tags = dict(tags)

    def expand(self, chunks):
        streams, tags = self._streams, self._tags

        def add(chunk: Chunk) -> Chunk:
            if not fnmatch.fnmatchcase(chunk.stream_id, streams):
                return chunk
            return chunk._replace(tags={**chunk.tags, **tags})

        return chunks | "AddTags" >> beam.Map(add).with_output_types(Chunk)
