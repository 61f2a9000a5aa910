"""The pipeline config: its shape (`schema`), loading it from YAML (`loader`), and the README's
config reference generated from it (`reference`).

Source, sink and transform modules import their bases from here. Loading a config needs the
plug-ins that give `type:` its meaning: use `streamtap.plugins.load_config` / `parse_config`.
"""

from streamtap.config.schema import (
    STREAM_ID_PATTERN,
    ChunkSettings,
    PipelineConfig,
    ReadSettings,
    ReconnectSettings,
    SinkConfig,
    SourceConfig,
    TransformConfig,
    doc,
    range_errors,
)

__all__ = [
    "STREAM_ID_PATTERN",
    "ChunkSettings",
    "PipelineConfig",
    "ReadSettings",
    "ReconnectSettings",
    "SinkConfig",
    "SourceConfig",
    "TransformConfig",
    "doc",
    "range_errors",
]
