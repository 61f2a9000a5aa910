"""Captures into a real Kafka: round trips, a broker killed mid-capture, brokers down at start."""

import os
import subprocess
import threading
import time

from streamtap.captures import read_capture, verify
from streamtap.services.kafka import KafkaService
from tests.fixtures.kafka import create_topic, free_port_block, unique_topic
from tests.helpers import (
    STREAMTAP,
    CaptureProcess,
    TcpFeeder,
    assert_verified,
    capture,
    stream_bytes,
    wait_until,
    write_config,
)


def _kafka_verified(location: str, streams: int) -> dict:
    reports = verify(read_capture(location))
    assert len(reports) == streams, sorted(reports)
    problems = {sid: r.problems for sid, r in reports.items() if not r.ok}
    assert not problems, problems
    return reports


def test_tcp_and_radio_round_trip_byte_exact_through_kafka(kafka, icecast, tmp_path):
    topic = unique_topic("roundtrip")
    data = os.urandom(1_500_000)
    with TcpFeeder(data, piece=32768, pause=0.002) as feeder:
        capture(
            {
                "sources": [
                    feeder.source("sensor1"),
                    {"id": "radio1", "type": "http", "url": icecast.mount_url("radio1")},
                ],
                "chunk": {"max_bytes": 65536, "max_seconds": 0.5},
                "window_seconds": 2,
                "sinks": [
                    {"type": "kafka", "bootstrap_servers": kafka.bootstrap_servers,
                     "topic": topic, "create_topic": True, "partitions": 3},
                    {"type": "parquet", "path": str(tmp_path / "capture")},
                ],
            },
            duration=6,
        )
    location = f"kafka://{kafka.bootstrap_servers}/{topic}"
    _kafka_verified(location, streams=2)
    assert stream_bytes(location, "sensor1") == data
    radio = stream_bytes(location, "radio1")
    assert len(radio) > 50_000
    # The radio bytes through Kafka equal those the Parquet sink wrote in the same run, which
    # tests/io/test_icecast_capture.py proves equal to an independent listener's.
    assert radio == stream_bytes(str(tmp_path / "capture"), "radio1")

    # The CLI reads the topic the same way.
    output = tmp_path / "sensor1.bin"
    result = subprocess.run(
        [*STREAMTAP, "reassemble", location, "--stream", "sensor1", "--output", str(output)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert output.read_bytes() == data
    result = subprocess.run([*STREAMTAP, "verify", location], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 of 2 stream(s) OK" in result.stdout


def test_a_broker_killed_mid_capture_loses_nothing(kafka_cluster_healed, tmp_path):
    cluster = kafka_cluster_healed
    topic = create_topic(cluster.bootstrap_servers, unique_topic("failover"), partitions=3,
                         replication_factor=3)
    data = os.urandom(4_000_000)
    feeder = TcpFeeder(data, piece=16384, pause=0.02)  # ~5 s of sending
    config = write_config(
        tmp_path / "pipeline.yaml",
        {
            "sources": [feeder.source("sensor1")],
            "chunk": {"max_bytes": 65536, "max_seconds": 0.5},
            "window_seconds": 1,
            "sinks": [{"type": "kafka", "bootstrap_servers": cluster.bootstrap_servers,
                       "topic": topic}],
        },
    )
    run = CaptureProcess(config)
    try:
        wait_until(lambda: feeder.sent.is_set() or _records(cluster, topic) > 5, 60,
                   "records in the topic")
        cluster.kill_broker(1)  # SIGKILL, mid-capture
        wait_until(feeder.sent.is_set, 120, "the feeder to send everything")
        time.sleep(3)
        run.interrupt()
        code, output = run.wait(timeout=120)
    finally:
        feeder.close()
    assert code == 0, output
    location = f"kafka://{cluster.bootstrap_servers}/{topic}"
    reports = _kafka_verified(location, streams=1)
    assert reports["sensor1"].discontinuities == 0
    assert stream_bytes(location, "sensor1") == data


def _records(service: KafkaService, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=service.bootstrap_servers)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def test_brokers_down_at_start_are_reported_and_the_capture_goes_on_when_they_return(tmp_path):
    base = free_port_block(2)
    service = KafkaService(state_dir=tmp_path / "kafka", brokers=1, port=base,
                           controller_port=base + 1)
    service.up()
    topic = create_topic(service.bootstrap_servers, unique_topic("outage"))
    service.stop_all_brokers()
    data = os.urandom(1_000_000)
    feeder = TcpFeeder(data, piece=16384, pause=0.01)
    config = write_config(
        tmp_path / "pipeline.yaml",
        {
            "sources": [feeder.source("sensor1", max_bytes=len(data))],
            "chunk": {"max_bytes": 65536, "max_seconds": 0.5},
            "window_seconds": 1,
            "sinks": [{"type": "kafka", "bootstrap_servers": service.bootstrap_servers,
                       "topic": topic}],
        },
    )
    try:
        run = CaptureProcess(config, "--runner=FnApiRunner")
        threading.Timer(8, service.start_all_brokers).start()
        code, output = run.wait(timeout=180)
        assert code == 0, output
        assert "cannot reach Kafka" in output and "keeps retrying" in output
        location = f"kafka://{service.bootstrap_servers}/{topic}"
        _kafka_verified(location, streams=1)
        assert stream_bytes(location, "sensor1") == data
    finally:
        feeder.close()
        service.down()


def test_kafka_unreachable_mid_capture_loses_nothing_when_it_returns(tmp_path):
    """The only broker SIGKILLed mid-capture (the sink unreachable), back 8 s later: the sink
    keeps retrying, the source keeps reading (the reader holds the chunks until the runner
    commits them), and every byte reaches the topic once, with no gap."""
    base = free_port_block(2)
    service = KafkaService(state_dir=tmp_path / "kafka", brokers=1, port=base,
                           controller_port=base + 1)
    service.up()
    topic = create_topic(service.bootstrap_servers, unique_topic("unreachable"))
    data = os.urandom(3_000_000)
    feeder = TcpFeeder(data, piece=16384, pause=0.05)  # ~10 s of sending
    sensor = {"id": "sensor1", "type": "synthetic", "rate": 2000, "sample_format": "int16"}
    config = write_config(
        tmp_path / "pipeline.yaml",
        {
            "sources": [feeder.source("tcp1"), sensor],
            "chunk": {"max_bytes": 65536, "max_seconds": 0.5},
            "window_seconds": 1,
            "sinks": [{"type": "kafka", "bootstrap_servers": service.bootstrap_servers,
                       "topic": topic}],
        },
    )
    try:
        run = CaptureProcess(config)
        wait_until(lambda: _records(service, topic) > 5, 60, "records in the topic")
        service.stop_all_brokers(kill=True)  # unreachable, mid-capture
        time.sleep(8)
        service.start_all_brokers()
        wait_until(feeder.sent.is_set, 120, "the feeder to send everything")
        time.sleep(4)
        run.interrupt()
        code, output = run.wait(timeout=180)
        assert code == 0, output
        location = f"kafka://{service.bootstrap_servers}/{topic}"
        reports = _kafka_verified(location, streams=2)
        assert stream_bytes(location, "tcp1") == data
        assert reports["tcp1"].discontinuities == 0 and reports["sensor1"].discontinuities == 0
        sensor_bytes = stream_bytes(location, "sensor1")
        from streamtap.io.sources.synthetic import SyntheticSource, synthetic_bytes

        source = SyntheticSource(**{k: v for k, v in sensor.items() if k != "type"})
        assert len(sensor_bytes) > 2000 * 2 * 10
        assert sensor_bytes == synthetic_bytes(source, 0, len(sensor_bytes) // 2)
    finally:
        feeder.close()
        service.down()
