"""`streamtap plan` for a Kafka sink: figures checked against cases worked by hand."""

from __future__ import annotations

import pytest

from streamtap.planning import make_plan
from streamtap.plugins import parse_config

RADIO = 16_000  # 128 kbit/s in bytes per second


def _plan(sources, chunk=None, **sink):
    config = parse_config({
        "sources": sources,
        "chunk": chunk or {"max_bytes": 65536, "max_seconds": 1.0},
        "sinks": [{"type": "kafka", "bootstrap_servers": "127.0.0.1:9092", "topic": "t", **sink}],
    })
    plan = make_plan(config, {})
    return {f.what: f for f in plan.figures if f.scope == "sinks[0] (kafka)"}


def _radios(count):
    return [{"id": f"radio{i}", "type": "http", "url": "http://127.0.0.1:1/x",
             "expected_rate": "128kbit/s"} for i in range(count)]


def test_ten_radios_and_a_fast_stream_need_three_partitions():
    # 10 radios: 16,000-byte chunks, one a second each (1 s cuts before 64 KiB fills).
    # fast: 25 MB/s in 65,536-byte chunks: 25,000,000 / 65,536 = 381.4697 a second.
    fast = {"id": "fast", "type": "tcp", "address": "127.0.0.1:9", "expected_rate": "25MB/s"}
    figures = _plan(_radios(10) + [fast], create_topic=True, partitions=2)
    assert figures["records per second"].value == pytest.approx(10 + 25_000_000 / 65_536)
    assert figures["payload bytes per second"].value == 10 * RADIO + 25_000_000
    # 25.16 MB/s at 10 MB/s per partition: ceil(2.516) = 3; the topic to create has 2.
    needed = figures["partitions needed"]
    assert needed.value == 3 and "10 MB/s per partition" in needed.basis
    assert needed.problem == "partitions: 2 is fewer than the 3 these rates need; set partitions: 3"
    assert figures["partitions for one stream each"].value == 11
    assert figures["busiest stream (fast)"].value == 25_000_000
    assert not figures["busiest stream (fast)"].problem  # under the ~100 MB/s one partition took
    # 65,536 + 1,024 bytes of key and headers: fits 1 MiB requests and Kafka's default limit.
    assert figures["largest record"].value == 66_560 and not figures["largest record"].problem


def test_one_radio_needs_one_partition_and_no_warning():
    figures = _plan(_radios(1))
    assert figures["partitions needed"].value == 1
    assert figures["records per second"].value == 1.0
    assert not [f for f in figures.values() if f.problem]


def test_a_record_above_the_brokers_default_limit_is_a_problem_that_names_the_fix():
    # 2 MiB chunks: 2,097,152 + 1,024 = 2,098,176 bytes per record.
    figures = _plan(_radios(1), chunk={"max_bytes": 2 * 2**20, "max_seconds": 1.0},
                    max_request_size=4 * 2**20)
    largest = figures["largest record"]
    assert largest.value == 2_098_176
    assert "raise the topic's max.message.bytes to at least 2,098,176" in largest.problem
    assert "lower chunk.max_bytes to at most 1,047,564" in largest.problem


def test_a_stream_faster_than_a_partition_is_a_problem():
    fast = {"id": "firehose", "type": "tcp", "address": "127.0.0.1:9",
            "expected_rate": "150MB/s"}
    figures = _plan([fast])
    assert figures["partitions needed"].value == 15  # 150 MB/s / 10 MB/s
    assert "cannot spread over partitions" in figures["busiest stream (firehose)"].problem


def test_plan_checks_the_live_topic_against_the_plan(kafka):
    """With the broker reachable, `plan` compares the topic's partitions with the plan's (a
    warning) and its max.message.bytes with the chunk size (a problem)."""
    from tests.fixtures.kafka import create_topic, unique_topic

    topic = create_topic(kafka.bootstrap_servers, unique_topic("plan"), partitions=1,
                         configs={"max.message.bytes": "50000"})
    config = parse_config({
        "sources": _radios(700),  # 700 x 16,000 B/s = 11.2 MB/s: 2 partitions at 10 MB/s each
        "chunk": {"max_bytes": 65536, "max_seconds": 4.0},  # 64 KiB records: over 50,000 bytes
        "sinks": [{"type": "kafka", "bootstrap_servers": kafka.bootstrap_servers, "topic": topic}],
    })
    plan = make_plan(config, {}, live=True)
    figures = {f.what: f for f in plan.figures if f.scope == "sinks[0] (kafka)"}
    assert figures["partitions needed"].value == 2
    now = figures["topic partitions now"]
    assert now.value == 1 and "has 1 partition(s), the plan 2" in now.warning
    (live,) = [f for f in plan.problems if f.what == "live check"]
    assert "max.message.bytes=50000" in live.problem


def test_plan_says_when_the_live_check_could_not_run(monkeypatch):
    from streamtap.io.sinks.kafka.config import KafkaSink

    monkeypatch.setattr(KafkaSink, "preflight_timeout", 2.0)
    config = parse_config({
        "sources": _radios(1),
        "sinks": [{"type": "kafka", "bootstrap_servers": "127.0.0.1:9", "topic": "t"}],
    })
    plan = make_plan(config, {}, live=True)
    (live,) = [f for f in plan.figures if f.what == "live check"]
    assert live.basis.startswith("not checked:") and not live.problem
