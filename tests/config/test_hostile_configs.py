"""Configs that used to pass `validate` and then broke `run`, or broke `validate` itself.

Each case here was reproduced on main before its fix (issue #14): a value `validate` accepts must
work at run time, and any input ends in the project's own error with the key it is about, never
in a traceback or a hang.
"""

from __future__ import annotations

import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamtap.config.loader import MAX_CONFIG_BYTES, parse_yaml
from streamtap.errors import ConfigError
from streamtap.plugins import load_config, parse_config


def _config(**top) -> dict:
    base = {
        "sources": [{"id": "s1", "type": "tcp", "address": "127.0.0.1:9000"}],
        "sinks": [{"type": "parquet", "path": "/tmp/streamtap-never-written"}],
    }
    return {**base, **top}


def _errors(raw) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config(raw)
    return raised.value.errors


@pytest.mark.parametrize(
    "value, message",
    [
        (float("nan"), "window_seconds: must be a finite number, got nan"),
        (float("inf"), "window_seconds: must be a finite number, got inf"),
        (1e300, "window_seconds: must be between 0.01 and 86400, got 1e+300"),
        (1e-9, "window_seconds: must be between 0.01 and 86400, got 1e-09"),
        (10**400, "window_seconds: must be a finite number, got 1000"),
    ],
)
def test_window_seconds_must_be_a_usable_length(value, message):
    assert _errors(_config(window_seconds=value))[0].startswith(message)


def test_a_nan_reconnect_delay_is_refused_where_it_is_declared():
    raw = _config()
    raw["sources"][0]["reconnect"] = {"initial_delay": float("nan")}
    assert _errors(raw) == [
        "sources[0].reconnect.initial_delay: must be a finite number, got nan",
        "sources: no usable source; at least one is needed",
    ]


@pytest.mark.parametrize(
    "source, message",
    [
        ({"type": "synthetic", "seed": -1}, "sources[0].seed: must be between 0 and 4.29497e+09, got -1"),
        ({"type": "udp", "address": "127.0.0.1:9000", "receive_buffer_bytes": 10**20},
         "sources[0].receive_buffer_bytes: must be between 1 and 2.14748e+09, got 1e+20"),
        ({"type": "file", "path": "/dev/null", "start_offset": 10**23},
         "sources[0].start_offset: must be between 0 and 4.61169e+18, got 1e+23"),
        ({"type": "tcp", "address": "127.0.0.1:9000", "max_bytes": 0},
         "sources[0].max_bytes: must be between 1 and 4.61169e+18, got 0"),
    ],
)
def test_source_numbers_outside_their_range_are_refused(source, message):
    assert _errors(_config(sources=[{"id": "s1", **source}])) == [message]


def test_a_stream_id_with_a_trailing_newline_is_refused():
    errors = _errors(_config(sources=[{"id": "abc\n", "type": "tcp", "address": "127.0.0.1:1"}]))
    assert errors[0].startswith("sources[0].id: 'abc\\n' is not a safe stream id")


def test_sizes_take_ascii_digits_only():
    # '²' is a Unicode digit: a regex \d accepted it and int() then failed with a traceback.
    errors = _errors(_config(chunk={"max_bytes": "²KiB"}))
    assert errors == ["chunk.max_bytes: expected an integer, got str '²KiB'"]


def test_not_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"sources:\n  - id: caf\xe9\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert raised.value.errors == ["not UTF-8 text: byte 0xe9 at offset 20; save the file as UTF-8"]


def test_deep_nesting_is_a_clear_error():
    with pytest.raises(ConfigError, match="exceeded maximum nesting depth|nested too deeply"):
        parse_yaml("sources: " + "[" * 20_000 + "]" * 20_000)


def test_an_alias_bomb_is_refused_quickly():
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    started = time.monotonic()
    with pytest.raises(ConfigError, match="aliases expand to more than"):
        parse_yaml("\n".join(lines))
    assert time.monotonic() - started < 30  # it used to grow without limit


def test_aliases_of_a_real_config_still_work():
    raw = parse_yaml(
        "defaults: &tcp {type: tcp, reconnect: {initial_delay: 1}}\n"
        "sources:\n"
        "  - {<<: *tcp, id: a, address: '127.0.0.1:1'}\n"
        "  - {<<: *tcp, id: b, address: '127.0.0.1:2'}\n"
    )
    assert raw["sources"][1] == {
        "type": "tcp", "reconnect": {"initial_delay": 1}, "id": "b", "address": "127.0.0.1:2"
    }


def test_a_huge_config_is_refused_before_parsing(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    started = time.monotonic()
    with pytest.raises(ConfigError, match="configs of up to 8 MiB are read"):
        load_config(path)
    assert time.monotonic() - started < 5


def test_duplicate_keys_are_errors_with_their_line():
    with pytest.raises(ConfigError) as raised:
        parse_yaml("window_seconds: 10\nsinks: []\nwindow_seconds: 20\n")
    assert raised.value.errors == [
        "line 3: duplicate key 'window_seconds'; YAML would silently keep only the last one"
    ]


_YAML_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20)
)
_YAML_VALUES = st.recursive(
    _YAML_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=25,
)
_KEYS = st.sampled_from(
    ["sources", "sinks", "chunk", "read", "window_seconds", "resume", "transforms", "id", "type",
     "address", "path", "url", "max_bytes", "max_seconds", "tcp", "parquet", "kafka", "http"]
)
_CONFIG_LIKE = st.dictionaries(_KEYS, _YAML_VALUES, max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_CONFIG_LIKE, _YAML_VALUES))
def test_any_data_gives_a_config_or_a_config_error(raw):
    try:
        parse_config(raw)
    except ConfigError as error:
        assert error.errors and all(isinstance(line, str) and line for line in error.errors)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_give_yaml_data_or_a_config_error(data):
    try:
        parse_yaml(data)
    except ConfigError as error:
        assert error.errors


@settings(max_examples=100, deadline=None)
@given(_CONFIG_LIKE)
def test_any_dumped_config_reads_back_as_parse_config_reads_it(raw):
    """A config written as YAML and loaded through the file path behaves like the same data."""
    text = yaml.safe_dump(raw)
    try:
        expected = parse_config(raw)
    except ConfigError as error:
        with pytest.raises(ConfigError) as raised:
            parse_config(parse_yaml(text))
        assert sorted(raised.value.errors) == sorted(error.errors)
    else:
        assert parse_config(parse_yaml(text)) == expected
