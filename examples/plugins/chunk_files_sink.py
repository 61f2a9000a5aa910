"""`type: chunk_files`: one file per chunk (the chunk's coder bytes), readable back as chunkfiles://."""

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator

import apache_beam as beam

from streamtap.chunk import Chunk, ChunkCoder
from streamtap.config import PipelineConfig, SinkConfig, doc


@dataclass(kw_only=True)
class ChunkFilesSink(SinkConfig):
    type_name: ClassVar[str] = "chunk_files"
    location_schemes: ClassVar[tuple[str, ...]] = ("chunkfiles",)  # for verify and reassemble

    directory: str = doc("Where the chunk files go (created if missing).")

    def validate(self, path: str) -> list[str]:
        return [] if self.directory else [f"{path}.directory: give a directory"]

    def transform(self, config: PipelineConfig) -> beam.PTransform:
        return beam.ParDo(_WriteChunkFiles(self.directory))

    @classmethod
    def read_location(cls, location: str, stream_id: str | None = None) -> Iterator[Chunk]:
        directory = Path(location.removeprefix("chunkfiles://"))
        for path in sorted(directory.glob("*.chunk")):
            chunk = ChunkCoder().decode(path.read_bytes())
            if stream_id is None or chunk.stream_id == stream_id:
                yield chunk


class _WriteChunkFiles(beam.DoFn):
    def __init__(self, directory: str):
        self._directory = directory

    def setup(self) -> None:
        Path(self._directory).mkdir(parents=True, exist_ok=True)

    def process(self, chunk: Chunk):
        name = f"{chunk.stream_id}.{chunk.seq:012d}.chunk"
        (Path(self._directory) / name).write_bytes(ChunkCoder().encode(chunk))  # same name on retry
        return []
