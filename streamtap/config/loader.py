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
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Protocol

import yaml

from streamtap.config.schema import PipelineConfig, SinkConfig, SourceConfig, TransformConfig
from streamtap.errors import ConfigError

__all__ = ["ConfigTypes", "load_config", "parse_config"]

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigTypes(Protocol):
    """The config classes a config may name by `type`, for one base (SourceConfig, SinkConfig,
    TransformConfig): {type name: class}. `streamtap.plugins.Plugins` is one."""

    def config_classes(self, base: type) -> Mapping[str, type]: ...


def load_config(path: str | Path, plugins: ConfigTypes) -> PipelineConfig:
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
    return parse_config(raw, plugins, str(path))


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
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
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
    return cls(**values)


_INVALID = object()


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
