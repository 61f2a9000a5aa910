"""A source and a sink defined right here, registered without editing streamtap, run a capture.

This is the plug-in contract of README's "Add your own source, sink or transform": a config
dataclass per plug-in, `Plugins.extended(...)`, and nothing else. The capture is then read back
through the sink's own `location_schemes` / `read_location` and verified byte by byte.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator

import apache_beam as beam
import pytest

from streamtap.captures import reassemble, verify
from streamtap.chunk import Chunk, ChunkCoder
from streamtap.config import PipelineConfig, SinkConfig, SourceConfig, doc
from streamtap.config.reference import config_reference
from streamtap.errors import ConfigError
from streamtap.io.connector import ByteSink, Connector
from streamtap.pipelines.run import run_capture
from streamtap.plugins import PLUGINS


def counting_bytes(start: int, count: int) -> bytes:
    """Byte i of the stream is i * 7 mod 251: a pure function of the offset."""
    return bytes((i * 7) % 251 for i in range(start, start + count))


@dataclass(kw_only=True)
class CountingSource(SourceConfig):
    type_name: ClassVar[str] = "counting"

    length: int = doc("Bytes the stream has before its end.", 100_000)
    piece: int = doc("Bytes per write into the sink.", 777)

    def validate(self, path: str) -> list[str]:
        errors = super().validate(path)
        if self.length <= 0:
            errors.append(f"{path}.length: must be > 0, got {self.length}")
        return errors

    def connector(self) -> Connector:
        return _CountingConnector(self)


class _CountingConnector(Connector):
    ends_at_eof = True
    seekable = True

    def __init__(self, config: CountingSource):
        self._config = config

    def describe(self) -> str:
        return f"counting://{self._config.length}"

    async def run_session(self, sink: ByteSink, resume_offset: int) -> None:
        for start in range(resume_offset, self._config.length, self._config.piece):
            await sink.wait_for_room()
            sink.write(counting_bytes(start, min(self._config.piece, self._config.length - start)))


@dataclass(kw_only=True)
class ChunkFilesSink(SinkConfig):
    """One file per chunk, named <stream>.<seq>.chunk, holding the chunk's coder encoding."""

    type_name: ClassVar[str] = "chunk_files"
    location_schemes: ClassVar[tuple[str, ...]] = ("chunkfiles",)

    directory: str = doc("Where the chunk files go.")

    def transform(self, config: PipelineConfig) -> beam.PTransform:
        return beam.ParDo(_WriteChunkFile(self.directory))

    @classmethod
    def read_location(cls, location: str, stream_id: str | None = None) -> Iterator[Chunk]:
        directory = Path(location.removeprefix("chunkfiles://"))
        for path in sorted(directory.glob(f"{stream_id or '*'}.*.chunk")):
            yield ChunkCoder().decode(path.read_bytes())


class _WriteChunkFile(beam.DoFn):
    def __init__(self, directory: str):
        self._directory = directory

    def process(self, chunk: Chunk):
        path = Path(self._directory) / f"{chunk.stream_id}.{chunk.seq}.chunk"
        path.write_bytes(ChunkCoder().encode(chunk))
        return []


MINE = PLUGINS.extended(sources=[CountingSource], sinks=[ChunkFilesSink])


def test_a_capture_runs_with_a_source_and_a_sink_defined_in_the_test(tmp_path):
    config = MINE.parse_config(
        {
            "sources": [
                {"id": "count1", "type": "counting", "length": 300_000},
                {"id": "count2", "type": "counting", "length": 5_000, "piece": 1},
            ],
            "chunk": {"max_bytes": 16384},
            "sinks": [{"type": "chunk_files", "directory": str(tmp_path)}],
        }
    )
    out = io.StringIO()
    code = run_capture(config, ["--runner=FnApiRunner"], duration=60, status_interval=0, out=out)
    assert code == 0, out.getvalue()

    location = f"chunkfiles://{tmp_path}"
    reports = verify(MINE.read_capture(location))
    assert sorted(reports) == ["count1", "count2"]
    assert all(report.ok for report in reports.values()), reports
    for stream_id, length in (("count1", 300_000), ("count2", 5_000)):
        output = io.BytesIO()
        reassemble(MINE.read_capture(location, stream_id), output)
        assert output.getvalue() == counting_bytes(0, length)


def test_plugins_of_a_test_do_not_leak_into_the_default_set():
    assert "counting" in MINE.config_classes(SourceConfig)
    assert "counting" not in PLUGINS.config_classes(SourceConfig)
    with pytest.raises(ConfigError, match=r"sources\[0\]\.type: unknown type 'counting'"):
        PLUGINS.parse_config({"sources": [{"id": "a", "type": "counting"}], "sinks": []})


def test_a_plugin_gets_its_config_checks_and_reference_for_free():
    with pytest.raises(ConfigError) as raised:
        MINE.parse_config(
            {
                "sources": [{"id": "c", "type": "counting", "lenght": 5},
                            {"id": "d", "type": "counting", "length": -1}],
                "sinks": [{"type": "chunk_files"}],
            }
        )
    assert raised.value.errors == [
        "sources[0].lenght: unknown key; did you mean 'length'?",
        "sources[1].length: must be > 0, got -1",
        "sinks[0].directory: required key is missing (Where the chunk files go.)",
        "sinks: no usable sink; at least one is needed",
    ]
    reference = config_reference(MINE)
    assert "#### Source `type: counting`" in reference
    assert "| `length` | integer | `100000` | Bytes the stream has before its end. |" in reference
    assert "#### Sink `type: chunk_files`" in reference


def test_capture_locations_go_to_the_sink_that_owns_their_scheme(tmp_path):
    assert MINE.location_schemes()["chunkfiles"] is ChunkFilesSink
    with pytest.raises(ValueError, match="unsupported capture location.*chunkfiles://"):
        MINE.read_capture("nosuch://x/y")
