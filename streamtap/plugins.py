"""The one list of streamtap's plug-ins: every source, sink, transform and runner, one line each.

Everything that names types is derived from here: the `type:` keys a config accepts, the capture
locations `streamtap verify` and `reassemble` read (each sink's `location_schemes`), the CLI's
help and the README's config reference; `streamtap run` chooses its runner plug-in here (the
contract: streamtap.pipelines.runners.base). Adding a plug-in is its module plus one line below.

Library users and tests extend the set without editing this file:

    mine = PLUGINS.extended(sources=[SerialSource], sinks=[MySink])
    config = mine.parse_config(yaml.safe_load(text))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import urlparse

from streamtap.chunk import Chunk
from streamtap.config import PipelineConfig, SinkConfig, SourceConfig, TransformConfig
from streamtap.config import loader
from streamtap.io.sinks.kafka.config import KafkaSink
from streamtap.io.sinks.kinesis.config import KinesisSink
from streamtap.io.sinks.parquet.config import ParquetSink
from streamtap.io.sources.files import FileSource
from streamtap.io.sources.http import HttpSource
from streamtap.io.sources.synthetic import SyntheticSource
from streamtap.io.sources.tcp import TcpListenSource, TcpSource
from streamtap.io.sources.udp import UdpSource
from streamtap.pipelines.runners.base import Runner
from streamtap.pipelines.runners.flink import Flink
from streamtap.pipelines.runners.prism import Prism
from streamtap.pipelines.runners.spark import Spark
from streamtap.transforms.tagging import TagTransform

__all__ = ["PLUGINS", "Plugins", "load_config", "parse_config", "read_capture"]


@dataclass(frozen=True)
class Plugins:
    """A set of plug-ins: the config classes of sources, sinks and transforms (by `type_name`),
    and the runner plug-ins (by the `--runner` names they answer to)."""

    sources: tuple[type[SourceConfig], ...]
    sinks: tuple[type[SinkConfig], ...]
    transforms: tuple[type[TransformConfig], ...]
    runners: tuple[type[Runner], ...] = ()

    def config_classes(self, base: type) -> Mapping[str, type]:
        """{type name: class} of one kind (SourceConfig, SinkConfig or TransformConfig)."""
        kinds = {SourceConfig: self.sources, SinkConfig: self.sinks, TransformConfig: self.transforms}
        if base not in kinds:
            raise TypeError(f"no plug-ins of kind {base.__name__}")
        return {cls.type_name: cls for cls in kinds[base]}

    def extended(
        self,
        sources: Sequence[type[SourceConfig]] = (),
        sinks: Sequence[type[SinkConfig]] = (),
        transforms: Sequence[type[TransformConfig]] = (),
        runners: Sequence[type[Runner]] = (),
    ) -> Plugins:
        """These plug-ins plus more (a later class replaces one of the same type name, a later
        runner one that answers to the same names)."""
        return Plugins(
            sources=(*self.sources, *sources),
            sinks=(*self.sinks, *sinks),
            transforms=(*self.transforms, *transforms),
            runners=(*self.runners, *runners),
        )

    def runner(self, name: str | None) -> Runner | None:
        """The runner plug-in that answers to `--runner=name` (the last one listed), or None:
        Beam then runs that runner as given (FnApiRunner, ...)."""
        for runner in reversed(self.runners):
            if runner.answers_to(name):
                return runner()
        return None

    def load_config(self, path: str | Path) -> PipelineConfig:
        """Reads and validates a YAML config file. Raises ConfigError listing every problem."""
        return loader.load_config(path, self)

    def parse_config(self, raw: Any, source: str = "config") -> PipelineConfig:
        """Builds a validated config from parsed YAML. Raises ConfigError listing every problem."""
        return loader.parse_config(raw, self, source)

    def location_schemes(self) -> dict[str, type[SinkConfig]]:
        """{URI scheme: the sink that reads such capture locations back}; "" is a local path."""
        return {scheme: sink for sink in self.sinks for scheme in sink.location_schemes}

    def read_capture(self, location: str, stream_id: str | None = None) -> Iterable[Chunk]:
        """Every chunk stored at `location` (any order), optionally of one stream only."""
        scheme = urlparse(location).scheme if "://" in location else ""
        readers = self.location_schemes()
        if scheme not in readers:
            known = ", ".join(f"{s}://..." if s else "a local directory" for s in readers)
            raise ValueError(f"{location!r}: unsupported capture location; use {known}")
        return readers[scheme].read_location(location, stream_id)


PLUGINS = Plugins(
    sources=(HttpSource, TcpSource, TcpListenSource, UdpSource, FileSource, SyntheticSource),
    sinks=(ParquetSink, KafkaSink, KinesisSink),
    transforms=(TagTransform,),
    runners=(Prism, Flink, Spark),
)

load_config = PLUGINS.load_config
parse_config = PLUGINS.parse_config
read_capture = PLUGINS.read_capture
