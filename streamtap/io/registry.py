"""Config names -> source, sink and transform classes: the one place to register a new one.

Adding a source, sink or transform is one module plus one line here (see README, "Add your own
source, sink or transform").
"""

from __future__ import annotations

from streamtap.config import SinkConfig, SourceConfig, TransformConfig
from streamtap.io.files import FileSource
from streamtap.io.http import HttpSource
from streamtap.io.kafka import KafkaSink
from streamtap.io.parquet import ParquetSink
from streamtap.io.synthetic import SyntheticSource
from streamtap.io.tcp import TcpListenSource, TcpSource
from streamtap.io.udp import UdpSource
from streamtap.transforms.tagging import TagTransform

SOURCES: dict[str, type[SourceConfig]] = {
    cls.type_name: cls
    for cls in (
        HttpSource,
        TcpSource,
        TcpListenSource,
        UdpSource,
        FileSource,
        SyntheticSource,
    )
}

SINKS: dict[str, type[SinkConfig]] = {cls.type_name: cls for cls in (ParquetSink, KafkaSink)}

TRANSFORMS: dict[str, type[TransformConfig]] = {cls.type_name: cls for cls in (TagTransform,)}


def config_classes(base: type) -> dict[str, type]:
    """The registered config classes of one kind (SourceConfig, SinkConfig, TransformConfig)."""
    if base is SourceConfig:
        return SOURCES
    if base is SinkConfig:
        return SINKS
    if base is TransformConfig:
        return TRANSFORMS
    raise TypeError(f"no registry for {base.__name__}")
