"""The Kinesis sink's config: every error with its key, the record limit, preflight, warnings."""

from __future__ import annotations

import logging

import pytest

from streamtap.errors import ConfigError, Unreachable
from streamtap.io.sinks.kinesis import KinesisSink, WriteChunksToKinesis
from streamtap.plugins import parse_config
from streamtap.services.process import free_port
from tests.fixtures.kinesis import create_stream, kinesis_client, unique_stream


def _config(sink: dict, chunk: dict | None = None, sources: list | None = None) -> dict:
    return {
        "sources": sources or [{"id": "radio1", "type": "http", "url": "http://127.0.0.1:1/x"}],
        "chunk": chunk or {"max_bytes": 65536},
        "sinks": [{"type": "kinesis", **sink}],
    }


def _problems(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    return caught.value.errors


def test_user_story_config_loads():
    config = parse_config(
        _config(
            {
                "stream": "raw-streams",
                "region": "us-east-1",
                "endpoint_url": "http://127.0.0.1:4566",
            }
        )
    )
    (sink,) = config.sinks
    assert isinstance(sink, KinesisSink) and sink.stream == "raw-streams"


def test_bad_keys_and_values_are_errors_that_name_the_key():
    problems = _problems(_config({"strem": "raw-streams", "region": "us-east-1"}))
    assert "sinks[0].strem: unknown key; did you mean 'stream'?" in problems
    assert any(p.startswith("sinks[0].stream: required key is missing") for p in problems)
    problems = _problems(
        _config(
            {
                "stream": "raw streams!",
                "region": "Mars",
                "endpoint_url": "127.0.0.1:4566",
                "shard_count": 2,
            }
        )
    )
    assert any(p.startswith("sinks[0].stream: 'raw streams!' is not a valid") for p in problems)
    assert any(p.startswith("sinks[0].region: 'Mars' is not an AWS region") for p in problems)
    assert any(p.startswith("sinks[0].endpoint_url: '127.0.0.1:4566' is not") for p in problems)
    assert any(
        p.startswith("sinks[0].shard_count: only used when the sink creates") for p in problems
    )
    problems = _problems(_config({"stream": "s", "shards_per_stream": 0, "max_retry_seconds": -1}))
    assert "sinks[0].shards_per_stream: must be between 1 and 1000, got 0" in problems
    assert "sinks[0].max_retry_seconds: must be between 1 and 86400, got -1" in problems


def test_a_chunk_size_that_cannot_fit_a_record_is_an_error_with_the_fix():
    problems = _problems(_config({"stream": "s"}, chunk={"max_bytes": "1MiB"}))
    (problem,) = problems
    assert problem.startswith("chunk.max_bytes: chunks of up to 1048576 bytes")
    assert "over Kinesis' 1048576-byte (1 MiB) record limit (sinks[0])" in problem
    assert problem.endswith("lower chunk.max_bytes to at most 1047552")
    parse_config(_config({"stream": "s"}, chunk={"max_bytes": 1047552}))  # the largest that fits


def test_the_transform_rejects_a_bad_sink_without_io():
    with pytest.raises(ValueError, match="WriteChunksToKinesis.shards_per_stream: must be between"):
        WriteChunksToKinesis(KinesisSink(stream="s", shards_per_stream=5000))


def test_a_stream_faster_than_its_shards_is_a_warning_with_the_remedy():
    fast = {"id": "sensor1", "type": "synthetic", "rate": 500_000, "sample_format": "float64"}
    radio = {
        "id": "radio1",
        "type": "http",
        "url": "http://127.0.0.1:1/x",
        "expected_rate": "128kbit/s",
    }
    config = parse_config(_config({"stream": "s"}, sources=[fast, radio]))
    (warning,) = config.sinks[0].rate_warnings(config)
    assert "stream 'sensor1' (sources[0]) sends about 4.00 MB/s" in warning
    assert "set sinks[0].shards_per_stream: 4 (on a stream of at least 4 shards)" in warning
    config = parse_config(_config({"stream": "s", "shards_per_stream": 4}, sources=[fast, radio]))
    assert config.sinks[0].rate_warnings(config) == []
    # Too many records: a chunk every millisecond is a thousand records a second.
    config = parse_config(
        _config({"stream": "s", "shard_records_per_second": 500}, chunk={"max_seconds": 0.001})
    )
    (warning,) = config.sinks[0].rate_warnings(config)
    assert "1000 records/s" in warning and "raise chunk.max_seconds" in warning
    assert "shards_per_stream: 2" in warning


def test_preflight_names_a_missing_stream_and_creates_one_when_asked(kinesis, caplog):
    name = unique_stream("pre")
    config = parse_config(_config({"stream": name, "endpoint_url": kinesis.endpoint_url}))
    (problem,) = config.sinks[0].preflight(config)
    assert problem == (
        f"sinks[0].stream: Kinesis stream '{name}' does not exist at {kinesis.endpoint_url}: "
        f"create it (aws kinesis create-stream --stream-name {name} --shard-count N), or set "
        "sinks[0].create_stream: true"
    )
    fast = {"id": "sensor1", "type": "synthetic", "rate": 500_000, "sample_format": "float64"}
    config = parse_config(
        _config(
            {
                "stream": name,
                "endpoint_url": kinesis.endpoint_url,
                "create_stream": True,
                "shard_count": 2,
                "shards_per_stream": 3,
            },
            sources=[fast],
        )
    )
    with caplog.at_level(logging.WARNING, logger="streamtap.io.sinks.kinesis"):
        assert config.sinks[0].preflight(config) == []
    summary = kinesis_client(kinesis.endpoint_url).describe_stream_summary(StreamName=name)
    assert summary["StreamDescriptionSummary"]["OpenShardCount"] == 2
    warnings = [r.getMessage() for r in caplog.records]
    assert any(
        "shards_per_stream: 3, but Kinesis stream" in w and "2 open shard(s)" in w for w in warnings
    ), warnings
    assert any("stream 'sensor1' (sources[0]) sends about 4.00 MB/s" in w for w in warnings)


def test_preflight_of_an_endpoint_that_is_down_is_unreachable_not_an_error():
    endpoint = f"http://127.0.0.1:{free_port()}"
    config = parse_config(_config({"stream": "s", "endpoint_url": endpoint}))
    (problem,) = config.sinks[0].preflight(config)
    assert isinstance(problem, Unreachable)
    assert "streamtap services up kinesis" in problem


def test_resume_positions_read_the_stream_and_skip_a_missing_one(kinesis):
    from streamtap.chunk import make_chunk
    from streamtap.io.sinks.kinesis import envelope

    name = create_stream(kinesis.endpoint_url, unique_stream("ends"), shards=2)
    client = kinesis_client(kinesis.endpoint_url)
    for seq, size in enumerate((10, 20, 30)):
        chunk = make_chunk("radio1", "s", seq, seq * 100, b"x" * size, 1.0)
        client.put_record(StreamName=name, PartitionKey="radio1", Data=envelope.encode(chunk))
    sink = KinesisSink(stream=name, endpoint_url=kinesis.endpoint_url)
    assert sink.resume_positions(["radio1", "radio2"]) == {"radio1": (3, 230)}
    missing = KinesisSink(stream=unique_stream("none"), endpoint_url=kinesis.endpoint_url)
    assert missing.resume_positions(["radio1"]) == {}


def test_a_foreign_record_is_an_error_naming_shard_and_sequence_number(kinesis):
    from streamtap.captures import read_capture

    name = create_stream(kinesis.endpoint_url, unique_stream("foreign"))
    kinesis_client(kinesis.endpoint_url).put_record(StreamName=name, PartitionKey="k", Data=b"{}")
    with pytest.raises(
        ValueError, match=r"shardId-000000000000 sequence number \d+: not a streamtap"
    ):
        list(read_capture(f"kinesis://{name}?endpoint_url={kinesis.endpoint_url}"))


def test_locations_are_checked():
    from streamtap.captures import read_capture

    for bad in ("kinesis://", "kinesis://s/path", "kinesis://s?regoin=us-east-1"):
        with pytest.raises(ValueError, match="expected kinesis://STREAM"):
            list(read_capture(bad))


def test_example_config_loads():
    from pathlib import Path

    from streamtap.plugins import load_config

    example = Path(__file__).parents[4] / "examples" / "kinesis.yaml"
    config = load_config(example)
    (sink,) = config.sinks
    assert isinstance(sink, KinesisSink)
    assert (sink.stream, sink.region, sink.endpoint_url, sink.create_stream) == (
        "raw-streams",
        "us-east-1",
        "http://127.0.0.1:4566",
        True,
    )
    assert sink.rate_warnings(config) == []
    assert isinstance(sink.transform(config), WriteChunksToKinesis)
