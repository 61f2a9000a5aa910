"""Pipeline config: YAML -> typed, validated objects.

Every setting is a dataclass field with a default and a one-line doc (`field_doc`). Loading never
stops at the first problem: it collects every error with the key path that caused it
(`sources[1].adress: unknown key; did you mean 'address'?`), so a user fixes a config in one pass.
`${VAR}` anywhere in a string value is replaced by the environment variable VAR.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

__all__ = [
    "ConfigError",
    "Unreachable",
    "ChunkSettings",
    "ReconnectSettings",
    "ReadSettings",
    "SourceConfig",
    "SinkConfig",
    "TransformConfig",
    "PipelineConfig",
    "doc",
    "load_config",
    "parse_config",
]

# Stream ids become file names, Kafka keys and metric names: keep them to a safe alphabet.
STREAM_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Unreachable(str):
    """A preflight problem that is only about reaching a service right now.

    `streamtap validate` reports it as an error; `streamtap run` warns and starts anyway, because
    the sink keeps retrying and the capture goes on when the service returns.
    """


class ConfigError(ValueError):
    """The config has one or more problems; `errors` lists each with its key path."""

    def __init__(self, errors: list[str], source: str = "config"):
        self.errors = errors
        lines = "\n".join(f"  - {error}" for error in errors)
        super().__init__(f"{source} has {len(errors)} problem(s):\n{lines}")


def doc(text: str, default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A dataclass field with a one-line description (shown in errors and the config reference)."""
    metadata = {"doc": text}
    if default is dataclasses.MISSING and "default_factory" not in kwargs:
        return field(metadata=metadata, **kwargs)
    if default is dataclasses.MISSING:
        return field(metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


@dataclass(kw_only=True)
class ReconnectSettings:
    initial_delay: float = doc("Seconds to wait before the first reconnect attempt.", 0.5)
    max_delay: float = doc("Upper bound in seconds of the exponential backoff.", 30.0)

    def validate(self, path: str) -> list[str]:
        errors = []
        if self.initial_delay <= 0:
            errors.append(f"{path}.initial_delay: must be > 0 seconds, got {self.initial_delay}")
        if self.max_delay < self.initial_delay:
            errors.append(
                f"{path}.max_delay: must be >= initial_delay ({self.initial_delay}), "
                f"got {self.max_delay}"
            )
        return errors


@dataclass(kw_only=True)
class ChunkSettings:
    max_bytes: int = doc("A chunk is cut when it reaches this many bytes.", 65536)
    max_seconds: float = doc(
        "A chunk is cut this many seconds after its first byte arrived. In Parquet-only "
        "captures (chunks held until their window closes) also where its window ends.",
        1.0,
    )

    def validate(self, path: str) -> list[str]:
        errors = []
        if not 1 <= self.max_bytes <= 64 * 1024 * 1024:
            errors.append(f"{path}.max_bytes: must be between 1 and 67108864, got {self.max_bytes}")
        if self.max_seconds <= 0:
            errors.append(f"{path}.max_seconds: must be > 0 seconds, got {self.max_seconds}")
        return errors


@dataclass(kw_only=True)
class ReadSettings:
    group_size: int | None = doc(
        "Streams per source element: the runner schedules, checkpoints and spreads over workers "
        "groups of streams, not single streams, so larger groups cost it less per stream. "
        "Default: one group per parallel worker (--parallelism, --sdk_worker_parallelism), "
        "at most 1,000 streams each.",
        None,
    )
    poll_seconds: float | None = doc(
        "How often a group hands its new chunks to the runner, in seconds. Longer polls cost "
        "less CPU and add up to this much latency. Default: chunk.max_seconds, at most 1 s "
        "(polling faster mostly finds no new chunk); 0.2 s when chunks are held until their "
        "window closes (Parquet-only captures), so windows are written soon after they close.",
        None,
    )
    per_stream_metrics: bool | None = doc(
        "Beam counters per stream (<id>.bytes, <id>.chunks, ...) besides the totals (bytes, "
        "chunks, ...). Default: on up to 50 streams; above that they are off, because the "
        "Python SDK reports every counter on every bundle (the status lines keep per-stream "
        "numbers).",
        None,
    )

    def validate(self, path: str) -> list[str]:
        errors = []
        if self.group_size is not None and self.group_size < 1:
            errors.append(f"{path}.group_size: must be >= 1, got {self.group_size}")
        if self.poll_seconds is not None and not 0 < self.poll_seconds <= 60:
            errors.append(f"{path}.poll_seconds: must be > 0 and <= 60, got {self.poll_seconds}")
        return errors


@dataclass(kw_only=True)
class SourceConfig:
    """Settings every source type has. Each source module subclasses it with its own fields."""

    type_name: ClassVar[str] = ""

    id: str = doc("Stream id: letters, digits, '.', '_', '-'; unique in the config.")
    type: str = doc("Source type (http, tcp, tcp_listen, udp, file, synthetic).", "")
    tags: dict[str, str] = doc("User tags copied into every chunk.", default_factory=dict)
    max_bytes: int | None = doc(
        "Stop this stream after this run captured this many bytes (bounded capture).", None
    )
    on_eof: str | None = doc(
        "What to do when the data ends: 'stop' or 'reconnect'. Default: stop for files, "
        "reconnect for network streams.",
        None,
    )
    reconnect: ReconnectSettings = doc(
        "Backoff between reconnect attempts.", default_factory=ReconnectSettings
    )

    def __post_init__(self) -> None:
        self.type = self.type or self.type_name

    def validate(self, path: str) -> list[str]:
        """Checks values; returns errors prefixed with `path`. Subclasses extend it."""
        errors = []
        if not STREAM_ID_PATTERN.match(self.id or ""):
            errors.append(
                f"{path}.id: {self.id!r} is not a safe stream id; use 1-128 letters, digits, "
                "'.', '_' or '-', starting with a letter or digit (it becomes a file name and a "
                "Kafka key)"
            )
        if self.max_bytes is not None and self.max_bytes <= 0:
            errors.append(f"{path}.max_bytes: must be > 0, got {self.max_bytes}")
        if self.on_eof not in (None, "stop", "reconnect"):
            errors.append(f"{path}.on_eof: must be 'stop' or 'reconnect', got {self.on_eof!r}")
        errors += self.reconnect.validate(f"{path}.reconnect")
        return errors

    def connector(self):
        """Builds the Connector that reads this stream (runs on the worker)."""
        raise NotImplementedError(f"source type {self.type!r} has no connector")


@dataclass(kw_only=True)
class SinkConfig:
    """Settings every sink type has. Each sink module subclasses it with its own fields."""

    type_name: ClassVar[str] = ""

    type: str = doc("Sink type (parquet, kafka, kinesis).", "")

    def __post_init__(self) -> None:
        self.type = self.type or self.type_name

    def validate(self, path: str) -> list[str]:
        return []

    def check_chunk_size(self, max_chunk_bytes: int, path: str) -> list[str]:
        """Errors if chunks of this size cannot be written (record size limits). No I/O."""
        return []

    def preflight(self, config: "PipelineConfig") -> list[str]:
        """Checks with I/O before a run (reachability, server-side size limits); returns errors.

        Called by `streamtap validate` and `streamtap run`, never while building a pipeline.
        Wrap a failure to reach the service in `Unreachable`: a run then starts and retries.
        """
        return []

    def resume_positions(self, stream_ids: list[str]) -> dict[str, tuple[int, int]]:
        """Where each stream's capture in this sink ended: {stream_id: (next seq, next offset)}.

        Lets a new run continue a capture instead of starting seq 0 again. I/O; called by
        `streamtap run`. Sinks that cannot tell return {}.
        """
        return {}

    def wants_whole_windows(self) -> bool:
        """True if this sink writes best when each stream's window arrives in one bundle.

        When every sink says so, streams hand over their chunks window by window (see
        ReadStreams' release_by_window) and such a sink can write a window without a shuffle.
        """
        return False

    def transform(self, config: "PipelineConfig"):
        """Builds the PTransform that writes a windowed PCollection of chunks."""
        raise NotImplementedError(f"sink type {self.type!r} has no transform")


@dataclass(kw_only=True)
class TransformConfig:
    """A user transform applied to every chunk before the sinks."""

    type_name: ClassVar[str] = ""

    type: str = doc("Transform type.", "")

    def __post_init__(self) -> None:
        self.type = self.type or self.type_name

    def validate(self, path: str) -> list[str]:
        return []

    def transform(self, config: "PipelineConfig"):
        raise NotImplementedError(f"transform type {self.type!r} has no transform")


@dataclass(kw_only=True)
class PipelineConfig:
    sources: list[SourceConfig] = doc("The streams to capture.", default_factory=list)
    chunk: ChunkSettings = doc("How streams are cut into chunks.", default_factory=ChunkSettings)
    read: ReadSettings = doc(
        "How streams are handed to the runner (grouping, polling, metrics).",
        default_factory=ReadSettings,
    )
    window_seconds: float = doc("Length of the fixed event-time windows sinks write.", 10.0)
    resume: bool = doc(
        "Continue each stream's seq and offset from what the first sink already holds (Parquet), "
        "so repeated runs into one capture stay one verifiable capture; a regular file "
        "continues at its byte offset.",
        True,
    )
    transforms: list[TransformConfig] = doc(
        "Transforms applied to chunks before the sinks.", default_factory=list
    )
    sinks: list[SinkConfig] = doc("Where chunks are written.", default_factory=list)

    def releases_whole_windows(self) -> bool:
        """True if streams hand over their chunks window by window (every sink wants it)."""
        return all(sink.wants_whole_windows() for sink in self.sinks)

    def validate(self) -> list[str]:
        errors = self.chunk.validate("chunk") + self.read.validate("read")
        if self.window_seconds <= 0:
            errors.append(f"window_seconds: must be > 0, got {self.window_seconds}")
        if not self.sources:
            errors.append("sources: no usable source; at least one is needed")
        if not self.sinks:
            errors.append("sinks: no usable sink; at least one is needed")
        seen: dict[str, int] = {}
        for index, source in enumerate(self.sources):
            path = f"sources[{index}]"
            if source.id in seen:
                errors.append(
                    f"{path}.id: {source.id!r} is already used by sources[{seen[source.id]}]; "
                    "stream ids must be unique"
                )
            seen.setdefault(source.id, index)
        for index, sink in enumerate(self.sinks):
            errors += sink.check_chunk_size(self.chunk.max_bytes, f"sinks[{index}]")
        return errors


# --- loading -----------------------------------------------------------------------------------


def load_config(path: str | Path) -> PipelineConfig:
    """Reads and validates a YAML config file. Raises ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError([f"cannot read {path}: {error.strerror}"], str(path)) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError([f"not valid YAML: {error}"], str(path)) from None
    return parse_config(raw, str(path))


def parse_config(raw: Any, source: str = "config") -> PipelineConfig:
    """Builds a validated PipelineConfig from already-parsed YAML (a dict)."""
    from streamtap.io import registry  # the registry imports config; import it late

    errors: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError(["the top level must be a mapping with 'sources' and 'sinks'"], source)
    raw = _substitute_env(raw, "", errors)
    config = _build(PipelineConfig, raw, "", errors, registry)
    if config is not None:
        errors += config.validate()
    if errors:
        raise ConfigError(errors, source)
    return config


def _substitute_env(value: Any, path: str, errors: list[str]) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name not in os.environ:
                errors.append(f"{path or 'value'}: environment variable {name} is not set")
                return ""
            return os.environ[name]

        return _ENV_REFERENCE.sub(replace, value)
    if isinstance(value, dict):
        return {k: _substitute_env(v, _join(path, str(k)), errors) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_env(v, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _build(cls: type, raw: Any, path: str, errors: list[str], registry) -> Any:
    """Builds dataclass `cls` from a mapping, appending every problem to `errors`."""
    where = path or "config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(f"{where}: expected a mapping, got {_describe(raw)}")
        return None
    start = len(errors)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values = {}
    for key, value in raw.items():
        key_path = _join(path, str(key))
        if key not in fields:
            errors.append(f"{key_path}: unknown key{_suggest(str(key), fields)}")
            continue
        values[key] = _convert(hints[key], value, key_path, errors, registry)
    for name, spec in fields.items():
        required = (
            spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        )
        if required and name not in values:
            errors.append(
                f"{_join(path, name)}: required key is missing ({spec.metadata.get('doc', '')})"
            )
    if len(errors) > start and (
        any(value is _INVALID for value in values.values())
        or any(
            spec.default is dataclasses.MISSING
            and spec.default_factory is dataclasses.MISSING
            and name not in values
            for name, spec in fields.items()
        )
    ):
        return None
    return cls(**values)


_INVALID = object()


def _convert(hint: Any, value: Any, path: str, errors: list[str], registry) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, path, errors, registry)
    if origin is list:
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {_describe(value)}")
            return _INVALID
        items = [_convert(args[0], v, f"{path}[{i}]", errors, registry) for i, v in enumerate(value)]
        # Items with errors are left out (their errors are recorded), so the rest still gets
        # its value checks and the user sees every problem in one pass.
        return [item for item in items if item is not _INVALID and item is not None]
    if origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, got {_describe(value)}")
            return _INVALID
        return {str(k): _scalar(str, v, f"{path}.{k}", errors) for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, (SourceConfig, SinkConfig, TransformConfig)):
        return _build_plugin(hint, value, path, errors, registry)
    if dataclasses.is_dataclass(hint):
        built = _build(hint, value, path, errors, registry)
        return _INVALID if built is None else built
    return _scalar(hint, value, path, errors)


def _build_plugin(base: type, value: Any, path: str, errors: list[str], registry) -> Any:
    """Builds a source, sink or transform config, choosing its class by its `type` key."""
    kinds = registry.config_classes(base)
    if not isinstance(value, dict):
        errors.append(f"{path}: expected a mapping with a 'type' key, got {_describe(value)}")
        return _INVALID
    type_name = value.get("type")
    if type_name is None:
        errors.append(f"{path}.type: required key is missing; one of {', '.join(sorted(kinds))}")
        return _INVALID
    if type_name not in kinds:
        errors.append(
            f"{path}.type: unknown type {type_name!r}{_suggest(str(type_name), kinds)}; "
            f"valid types: {', '.join(sorted(kinds))}"
        )
        return _INVALID
    start = len(errors)
    built = _build(kinds[type_name], value, path, errors, registry)
    if built is None:
        return _INVALID
    if len(errors) == start:
        errors += built.validate(path)
    return built


def _scalar(hint: Any, value: Any, path: str, errors: list[str]) -> Any:
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            parsed = _parse_size(value)
            if parsed is not None:
                return parsed
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        return value
    errors.append(f"{path}: expected {_type_word(hint)}, got {_describe(value)}")
    return _INVALID


_SIZE = re.compile(r"^\s*(\d+)\s*(k|ki|m|mi|g|gi)?b?\s*$", re.IGNORECASE)
_SIZE_UNITS = {None: 1, "k": 1000, "ki": 1024, "m": 10**6, "mi": 2**20, "g": 10**9, "gi": 2**30}


def _parse_size(text: str) -> int | None:
    """'64KiB', '1MB', '65536' -> bytes; None if not a size."""
    match = _SIZE.match(text)
    if not match:
        return None
    unit = match.group(2).lower() if match.group(2) else None
    return int(match.group(1)) * _SIZE_UNITS[unit]


def _type_word(hint: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
