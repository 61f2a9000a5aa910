import os
from pathlib import Path

import pytest

from streamtap.errors import ConfigError
from streamtap.plugins import load_config, parse_config
from streamtap.io.sources.http import HttpSource
from streamtap.io.sources.tcp import TcpSource

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))

ISSUE_EXAMPLE = """
sources:
  - id: radio1
    type: http
    url: http://127.0.0.1:8000/radio1
  - id: sensor1
    type: tcp
    address: 127.0.0.1:9000
chunk:
  max_bytes: 65536
  max_seconds: 1.0
window_seconds: 10
sinks:
  - type: parquet
    path: ./capture
"""


def test_the_documented_config_loads_as_written(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(ISSUE_EXAMPLE)
    config = load_config(path)
    assert [type(s) for s in config.sources] == [HttpSource, TcpSource]
    assert config.sources[0].url == "http://127.0.0.1:8000/radio1"
    assert config.chunk.max_bytes == 65536
    assert config.sinks[0].path == "./capture"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_config_loads(path, monkeypatch):
    monkeypatch.setenv("KAFKA_PASSWORD", "example-secret")
    load_config(path)


def _errors(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    return caught.value.errors


def _base(**overrides) -> dict:
    raw = {
        "sources": [{"id": "s1", "type": "tcp", "address": "127.0.0.1:9000"}],
        "sinks": [{"type": "parquet", "path": "/tmp/x"}],
    }
    raw.update(overrides)
    return raw


def test_misspelled_keys_are_named_with_a_suggestion_and_all_reported_at_once():
    errors = _errors(
        _base(
            sources=[{"id": "s1", "type": "tcp", "adress": "127.0.0.1:9000"}],
            chunk={"max_byte": 10},
            windw_seconds=3,
        )
    )
    text = "\n".join(errors)
    assert "sources[0].adress: unknown key; did you mean 'address'?" in text
    assert "chunk.max_byte: unknown key; did you mean 'max_bytes'?" in text
    assert "windw_seconds: unknown key; did you mean 'window_seconds'?" in text


def test_unknown_type_lists_valid_types():
    errors = _errors(_base(sources=[{"id": "s1", "type": "htttp", "url": "http://x"}]))
    (error,) = [e for e in errors if e.startswith("sources[0].type")]
    assert "sources[0].type: unknown type 'htttp'; did you mean 'http'?" in error
    assert "valid types:" in error and "tcp" in error


@pytest.mark.parametrize("bad_id", ["../etc", "a/b", "", "with space", "-leading"])
def test_unsafe_stream_ids_are_rejected(bad_id):
    errors = _errors(_base(sources=[{"id": bad_id, "type": "tcp", "address": "h:1"}]))
    assert any(e.startswith("sources[0].id:") and "not a safe stream id" in e for e in errors)


def test_duplicate_stream_ids_are_rejected():
    errors = _errors(
        _base(
            sources=[
                {"id": "s1", "type": "tcp", "address": "h:1"},
                {"id": "s1", "type": "udp", "address": "h:2"},
            ]
        )
    )
    assert any("sources[1].id: 's1' is already used by sources[0]" in e for e in errors)


def test_wrong_types_and_values_name_the_key():
    errors = _errors(
        _base(
            sources=[{"id": "s1", "type": "tcp", "address": "nohostport", "max_bytes": "lots"}],
            chunk={"max_seconds": -1},
        )
    )
    text = "\n".join(errors)
    assert "sources[0].max_bytes: expected an integer, got str 'lots'" in text


def test_value_checks_run_when_types_are_right():
    errors = _errors(
        _base(
            sources=[{"id": "s1", "type": "tcp", "address": "nohostport"}],
            chunk={"max_seconds": -1},
        )
    )
    text = "\n".join(errors)
    assert "sources[0].address: 'nohostport' is not host:port" in text
    assert "chunk.max_seconds: must be between 0.001 and 3600, got -1" in text


def test_sizes_accept_units():
    config = parse_config(_base(chunk={"max_bytes": "64KiB"}))
    assert config.chunk.max_bytes == 65536


def test_environment_variables_are_substituted(monkeypatch):
    monkeypatch.setenv("SENSOR_PORT", "9123")
    config = parse_config(
        _base(sources=[{"id": "s1", "type": "tcp", "address": "127.0.0.1:${SENSOR_PORT}"}])
    )
    assert config.sources[0].address == "127.0.0.1:9123"


def test_missing_environment_variable_is_an_error(monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    errors = _errors(
        _base(sources=[{"id": "s1", "type": "tcp", "address": "${NOT_SET_ANYWHERE}"}])
    )
    assert any("environment variable NOT_SET_ANYWHERE is not set" in e for e in errors)


def test_sources_and_sinks_are_required():
    errors = _errors({"sources": [], "sinks": []})
    assert "sources: no usable source; at least one is needed" in errors
    assert "sinks: no usable sink; at least one is needed" in errors


def test_yaml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("sources: [\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value) and "not valid YAML" in str(caught.value)


def test_chunk_align_is_checked_and_samples_needs_the_sample_size():
    assert _errors(_base(chunk={"align": "mp4"})) == [
        "chunk.align: must be one of none, auto, mp3, adts, samples, got 'mp4'"
    ]
    assert _errors(_base(chunk={"align": "samples"})) == [
        "sources[0].sample_bytes: needed by chunk.align samples; set the stream's bytes per "
        "sample (4 for float32) or use align auto"
    ]
    raw = _base(chunk={"align": "samples"})
    raw["sources"][0]["sample_bytes"] = 4
    config = parse_config(raw)
    assert (config.chunk.align, config.sources[0].sample_bytes) == ("samples", 4)
