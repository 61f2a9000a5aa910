"""`streamtap plan`: figures checked against cases worked by hand, and a real probe."""

from __future__ import annotations

import json

import pytest

from streamtap.cli import main
from streamtap.config.capacity import chunk_rate
from streamtap.planning import make_plan, probe_rates
from streamtap.plugins import parse_config
from tests.helpers import write_config

RADIO = 16_000  # 128 kbit/s in bytes per second


def _config(sources, **top) -> dict:
    return {"sources": sources, "sinks": [{"type": "parquet", "path": "/tmp/streamtap-plan"}], **top}


def test_chunking_turns_rates_into_chunks():
    # A radio stream fills a 64 KiB chunk in 4 s, so 1 s cuts it first: 16,000-byte chunks.
    assert chunk_rate(RADIO, 65536, 1.0) == (16_000, 1.0)
    # A 10 MB/s stream reaches 64 KiB long before 1 s.
    assert chunk_rate(10_000_000, 65536, 1.0) == pytest.approx((65536, 10_000_000 / 65536))
    # A 4-byte sample per chunk: one chunk per sample.
    assert chunk_rate(4_000, 4, 1.0) == (4, 1000)
    assert chunk_rate(0, 65536, 1.0) == (0, 0)


def test_runner_figures_add_up_the_streams():
    sources = [
        {"id": f"radio{i}", "type": "http", "url": "http://127.0.0.1:1/x", "expected_rate": "128kbit/s"}
        for i in range(10)
    ] + [{"id": "sensor1", "type": "synthetic", "rate": 1000, "sample_format": "float32"}]
    config = parse_config(_config(sources, window_seconds=10))
    plan = make_plan(config, {})
    assert [load.rate for load in plan.loads] == [RADIO] * 10 + [4000]
    assert plan.loads[-1].rate_basis == "1000 samples/s x 4 bytes (float32)"
    figures = {figure.what: figure for figure in plan.figures}
    assert figures["bytes per second, all streams"].value == 10 * RADIO + 4000
    # Parquet-only: one cut per max_seconds plus one where each 10 s window ends.
    assert figures["chunks per second to schedule"].value == pytest.approx(11 * 1.1)
    # The runner has no problem; the Parquet sink warns of small files (tests/io/sinks/parquet).
    assert not plan.unknown and not [f for f in plan.problems if f.scope == "runner"]


def test_a_stream_without_a_rate_is_listed_not_guessed():
    config = parse_config(_config([{"id": "dev", "type": "tcp", "address": "127.0.0.1:9"}]))
    plan = make_plan(config, {})
    assert plan.unknown == ["dev"] and plan.loads == []
    assert "dev" in plan.table() and "no rate: set its expected_rate" in plan.table()


def test_plan_json_carries_the_numbers_of_the_table(tmp_path, capsys):
    path = write_config(
        tmp_path / "p.yaml",
        _config([{"id": "radio1", "type": "http", "url": "http://127.0.0.1:1/x", "expected_rate": RADIO}],
                window_seconds=600),  # files of 9.6 MB: no small-file warning, exit 0
    )
    assert main(["plan", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["streams"][0]["rate"] == RADIO
    assert main(["plan", str(path)]) == 0
    table = capsys.readouterr().out
    for figure in data["figures"]:
        assert figure["what"] in table and figure["basis"] in table


def test_a_failed_probe_is_a_problem_that_names_the_stream(tmp_path):
    config = parse_config(_config([{"id": "dev", "type": "tcp", "address": "127.0.0.1:9"}]))
    plan = make_plan(config, probe_rates(config, 1.0))
    assert [(f.what, f.scope) for f in plan.problems] == [("dev", "probe")]
    assert "probe failed" in plan.problems[0].problem


def test_probe_counts_every_connection_of_a_listening_source(tmp_path):
    import socket
    import threading
    import time

    from tests.helpers import free_port

    port = free_port()
    stop = threading.Event()

    def device() -> None:  # two devices at once, 20 kB/s each
        for _ in range(100):
            try:
                connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
                break
            except ConnectionRefusedError:
                time.sleep(0.02)
        while not stop.is_set():
            for connection in connections:
                connection.sendall(b"x" * 1000)
            time.sleep(0.05)
        for connection in connections:
            connection.close()

    threading.Thread(target=device, daemon=True).start()
    config = parse_config(_config([{"id": "devices", "type": "tcp_listen",
                                    "address": f"127.0.0.1:{port}"}]))
    try:
        rate, basis = probe_rates(config, 2.0)["devices"]
    finally:
        stop.set()
    assert basis.startswith("probed"), basis
    assert 25_000 < rate < 45_000, rate


def test_probe_measures_a_real_icecast_station_within_5_percent(icecast):
    config = parse_config(
        _config([{"id": "radio1", "type": "http", "url": icecast.mount_url("radio1")}])
    )
    rate, basis = probe_rates(config, 20.0)["radio1"]
    assert rate == pytest.approx(RADIO, rel=0.05), basis


def _kinesis(sources, **sink) -> dict:
    return {
        "sources": sources,
        "sinks": [{"type": "kinesis", "stream": "raw", "region": "us-east-1", **sink}],
    }


def _radios(count: int) -> list[dict]:
    return [
        {"id": f"radio{i:03d}", "type": "http", "url": "http://127.0.0.1:1/x", "expected_rate": "128kbit/s"}
        for i in range(count)
    ]


def _figures(plan) -> dict:
    return {figure.what: figure for figure in plan.figures if figure.scope.startswith("sinks[0]")}


def test_one_kinesis_shard_holds_62_radio_streams_by_bytes():
    # 62 x (16,000 B + ~110 B of envelope and key per 1 s chunk) = 998,820 B/s < 1 MB/s; 63 is over.
    for count, shards in ((62, 1), (63, 2)):
        figures = _figures(make_plan(parse_config(_kinesis(_radios(count))), {}))
        assert figures["shards by bytes"].value == shards, count
        assert figures["shards by records"].value == 1  # 62 or 63 records/s
        assert figures["shards needed"].value == shards


def test_200_radio_streams_need_4_kinesis_shards():
    figures = _figures(make_plan(parse_config(_kinesis(_radios(200))), {}))
    assert figures["shards needed"].value == 4
    assert figures["bytes per second into Kinesis"].value == pytest.approx(200 * 16_110, rel=0.01)


def test_a_sensor_sent_a_sample_per_record_fills_a_shards_record_budget_alone():
    sensor = {"id": "temp1", "type": "synthetic", "rate": 1000, "sample_format": "float32"}
    plan = make_plan(parse_config({**_kinesis([sensor]), "chunk": {"max_bytes": 4}}), {})
    figures = _figures(plan)
    assert figures["records per second"].value == 1000
    assert figures["shards by records"].value == 1
    (problem,) = [f for f in plan.problems if f.scope.startswith("sinks[0]")]
    assert "stream temp1 alone fills its 1 shard(s) (1,000 records/s" in problem.problem
    # Chunked by time instead (1 s of samples per record), the same sensor is 1 record/s.
    chunked = _figures(make_plan(parse_config(_kinesis([sensor])), {}))
    assert chunked["records per second"].value == 1


def test_small_files_are_a_warning_not_a_failure(tmp_path, capsys):
    path = write_config(tmp_path / "p.yaml", _config(_radios(10), window_seconds=10))
    assert main(["plan", str(path), "--offline"]) == 0
    out = capsys.readouterr().out
    assert "(warning: files average" in out and "!!" not in out
