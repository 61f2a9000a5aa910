"""KafkaService against real Kafka brokers: lifecycle, a produce/consume round trip, errors."""

from __future__ import annotations

import socket

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streamtap.services.kafka import KafkaService
from streamtap.errors import ServiceError
from tests.fixtures.kafka import free_port_block


def _round_trip(bootstrap_servers: str, topic: str) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    try:
        producer.send(
            topic, key=b"k", value=b"\x00\xffbinary", headers=[("h", b"1")], partition=0
        ).get(30)
    finally:
        producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None)
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        records = []
        for _ in range(20):
            records += consumer.poll(timeout_ms=500).get(partition, [])
            if records:
                break
    finally:
        consumer.close()
    assert [(r.key, r.value, r.headers) for r in records] == [
        (b"k", b"\x00\xffbinary", [("h", b"1")])
    ]


def test_up_produce_consume_status_down(tmp_path):
    base = free_port_block(2)
    service = KafkaService(state_dir=tmp_path, brokers=1, port=base, controller_port=base + 1)
    assert service.status() is None
    try:
        info = service.up()
        assert info == {"bootstrap_servers": f"127.0.0.1:{base}"}
        assert service.up() == info  # idempotent: the running broker is reused

        _round_trip(info["bootstrap_servers"], "service-test")

        # Another process (`streamtap services status kafka`) knows only the state dir.
        status = KafkaService(state_dir=tmp_path).status()
        assert status is not None
        assert status["bootstrap_servers"] == f"127.0.0.1:{base}"
        assert status["brokers"] == "1/1 running"
    finally:
        KafkaService(state_dir=tmp_path).down()
    assert service.status() is None
    with socket.socket() as sock:  # the ports are free again
        sock.bind(("127.0.0.1", base))


def test_port_in_use_is_a_clear_error(tmp_path):
    base = free_port_block(2)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", base))
        blocker.listen()
        service = KafkaService(state_dir=tmp_path, port=base, controller_port=base + 1)
        with pytest.raises(ServiceError, match=rf"127\.0\.0\.1:{base} is already in use"):
            service.up()


def test_java_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(ServiceError, match="java not found"):
        KafkaService(state_dir=tmp_path, port=free_port_block(2)).up()


def test_cluster_is_replicated(kafka_cluster):
    from kafka import KafkaAdminClient

    from tests.fixtures.kafka import create_topic, unique_topic

    topic = create_topic(kafka_cluster.bootstrap_servers, unique_topic(), partitions=2)
    admin = KafkaAdminClient(bootstrap_servers=kafka_cluster.bootstrap_servers)
    try:
        (described,) = admin.describe_topics([topic])
        assert len(admin.describe_cluster()["brokers"]) == 3
    finally:
        admin.close()
    assert [len(p["replica_nodes"]) for p in described["partitions"]] == [3, 3]
    _round_trip(kafka_cluster.bootstrap_servers, topic)
