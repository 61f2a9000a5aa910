"""YAML -> typed, validated config objects, every problem reported at once with its key path.

Loading never stops at the first problem: it collects every error with the key path that caused it
(`sources[1].adress: unknown key; did you mean 'address'?`), so a user fixes a config in one pass.
`${VAR}` anywhere in a string value is replaced by the environment variable VAR. Which source, sink
and transform types a config may name comes from the caller's plug-ins (`streamtap.plugins`), so
this module imports none of them.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Protocol

import yaml

from streamtap.config.schema import (
    PipelineConfig,
    SinkConfig,
    SourceConfig,
    TransformConfig,
    range_errors,
)
from streamtap.config.units import RATE_FORMS, BytesPerSecond, parse_rate, parse_size
from streamtap.errors import ConfigError

__all__ = ["ConfigTypes", "load_config", "parse_config", "parse_yaml"]

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigTypes(Protocol):
    """The config classes a config may name by `type`, for one base (SourceConfig, SinkConfig,
    TransformConfig): {type name: class}. `streamtap.plugins.Plugins` is one."""

    def config_classes(self, base: type) -> Mapping[str, type]: ...


def load_config(path: str | Path, plugins: ConfigTypes) -> PipelineConfig:
    """Reads and validates a YAML config file. Raises ConfigError listing every problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError([f"cannot read {path}: {error.strerror}"], str(path)) from None
    return parse_config(parse_yaml(data, str(path)), plugins, str(path))


def parse_yaml(data: bytes | str, source: str = "config") -> Any:
    """YAML text -> plain data, refusing what would hang or mislead: bytes that are not UTF-8,
    duplicate keys, nesting too deep, aliases that expand beyond any real config."""
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            [f"{len(data):,} bytes: configs of up to {MAX_CONFIG_BYTES // 2**20} MiB are read "
             "(~80,000 sources); split the capture into several configs"],
            source,
        )
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError(
                [f"not UTF-8 text: byte {error.object[error.start]:#04x} at offset {error.start}; "
                 "save the file as UTF-8"],
                source,
            ) from None
    loader = _StrictLoader(data)
    try:
        raw = loader.get_single_data()
    except yaml.YAMLError as error:
        raise ConfigError([f"not valid YAML: {error}"], source) from None
    except RecursionError:
        raise ConfigError(["nested too deeply: a config is a few levels of mappings and lists"],
                          source) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError(loader.duplicates, source)
    budget = _VALUES_PER_CHARACTER * len(data) + 100_000
    if _size_beyond(raw, budget):
        raise ConfigError(
            [f"its YAML aliases expand to more than {budget:,} values (aliases repeating "
             "aliases, a 'billion laughs'?); write the repeated parts out or reference them once"],
            source,
        )
    return raw


# Parsing YAML takes ~1 s per MB even with the C parser; no capture needs a config this large.
MAX_CONFIG_BYTES = 8 * 2**20
# Without aliases a config has fewer values than characters; aliases that expand it ten times
# over are no config's shape, but a "billion laughs" (a few lines, 9**9 values) is.
_VALUES_PER_CHARACTER = 10
# The C parser when PyYAML has it: a 50 MB file parsed in seconds instead of over a minute.
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):
    """Safe YAML that records duplicate keys (YAML keeps the last silently) with their line."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = key_node.value
                if key in seen:
                    self.duplicates.append(
                        f"line {key_node.start_mark.line + 1}: duplicate key {key!r}; "
                        "YAML would silently keep only the last one"
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    lambda loader, node: loader.construct_mapping(node),
)


def _size_beyond(value: Any, budget: int) -> bool:
    """True if `value`, with shared (aliased) parts counted every time, has over `budget` values.

    Walks iteratively and stops at the budget, so a YAML alias bomb costs at most `budget` steps.
    """
    stack = [value]
    count = 0
    while stack:
        item = stack.pop()
        count += 1
        if count > budget:
            return True
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_config(raw: Any, plugins: ConfigTypes, source: str = "config") -> PipelineConfig:
    """Builds a validated PipelineConfig from already-parsed YAML (a dict)."""
    errors: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError(["the top level must be a mapping with 'sources' and 'sinks'"], source)
    raw = _substitute_env(raw, "", errors)
    config = _build(PipelineConfig, raw, "", errors, plugins)
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


def _build(cls: type, raw: Any, path: str, errors: list[str], plugins) -> Any:
    """Builds dataclass `cls` from a mapping, appending every problem to `errors`."""
    where = path or "config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(f"{where}: expected a mapping, got {_describe(raw)}")
        return None
    start = len(errors)
    hints, fields = _fields(cls)
    values = {}
    for key, value in raw.items():
        key_path = _join(path, str(key))
        if key not in fields:
            errors.append(f"{key_path}: unknown key{_suggest(str(key), fields)}")
            continue
        values[key] = _convert(hints[key], value, key_path, errors, plugins)
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
    built = cls(**values)
    errors += range_errors(built, path)
    return built


_INVALID = object()


@functools.cache
def _fields(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field]]:
    """Type hints and init fields of a config class (resolving hints is slow: once per class)."""
    return typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls) if f.init}


def _convert(hint: Any, value: Any, path: str, errors: list[str], plugins) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, path, errors, plugins)
    if origin is list:
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {_describe(value)}")
            return _INVALID
        items = [_convert(args[0], v, f"{path}[{i}]", errors, plugins) for i, v in enumerate(value)]
        # Items with errors are left out (their errors are recorded), so the rest still gets
        # its value checks and the user sees every problem in one pass.
        return [item for item in items if item is not _INVALID and item is not None]
    if origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, got {_describe(value)}")
            return _INVALID
        return {str(k): _scalar(str, v, f"{path}.{k}", errors) for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, (SourceConfig, SinkConfig, TransformConfig)):
        return _build_plugin(hint, value, path, errors, plugins)
    if dataclasses.is_dataclass(hint):
        built = _build(hint, value, path, errors, plugins)
        return _INVALID if built is None else built
    return _scalar(hint, value, path, errors)


def _build_plugin(base: type, value: Any, path: str, errors: list[str], plugins) -> Any:
    """Builds a source, sink or transform config, choosing its class by its `type` key."""
    kinds = plugins.config_classes(base)
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
    built = _build(kinds[type_name], value, path, errors, plugins)
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
            parsed = parse_size(value)
            if parsed is not None:
                return parsed
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int beyond any float
                number = math.inf
            if math.isfinite(number):
                return number
            errors.append(f"{path}: must be a finite number, got {value}")
            return _INVALID
    elif hint is BytesPerSecond:
        rate = parse_rate(value)
        if rate is not None:
            return rate
        errors.append(f"{path}: expected {RATE_FORMS}; got {_describe(value)}")
        return _INVALID
    elif hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        return value
    errors.append(f"{path}: expected {_type_word(hint)}, got {_describe(value)}")
    return _INVALID


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
