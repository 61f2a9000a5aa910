"""The files a local Kafka cluster runs from: its jars, each node's server.properties, logging.

- `ensure_jars`: Kafka's jars from Maven Central (`mvn dependency:copy-dependencies` on a
  generated pom, streamtap.pipelines.runners.java) into `cache_dir()/kafka-<version>`, once.
- `write_configs`: for every node of a `streamtap.services.kafka.KafkaService`, a KRaft
  server.properties (broker and controller in one process, loopback listeners, replication 3
  and min.insync.replicas 2 from 3 nodes on, few threads for a shared 2-core machine), the
  log4j2 config, and `cluster.json` with the cluster id, kept across restarts.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from pathlib import Path

from streamtap.pipelines.runners.java import copy_dependencies
from streamtap.pipelines.runners.local import cache_dir
from streamtap.services import maven

__all__ = ["KAFKA_VERSION", "ensure_jars", "write_configs"]

KAFKA_VERSION = "4.4.0"
_LOG4J_VERSION = "2.25.3"  # Kafka 4.x logs through slf4j 1.7; log4j-slf4j-impl binds it to log4j2.

_LOG4J_CONFIG = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
"""


def ensure_jars(version: str = KAFKA_VERSION) -> Path:
    """The directory of Kafka's jars, fetched from Maven Central the first time."""
    target = cache_dir() / f"kafka-{version}"
    if not target.is_dir():
        artifacts = [
            f"org.apache.kafka:kafka_2.13:{version}",
            f"org.apache.logging.log4j:log4j-core:{_LOG4J_VERSION}",
            f"org.apache.logging.log4j:log4j-slf4j-impl:{_LOG4J_VERSION}",
        ]
        copy_dependencies(maven.pom("kafka-server", artifacts), target, "kafka_2.13-*.jar",
                          f"Kafka {version}'s jars", timeout=900)
    return target


def write_configs(
    state_dir: Path,
    brokers: int,
    port: int,
    controller_port: int,
    broker_config: Mapping[str, str],
    version: str,
) -> None:
    """Writes every node's server.properties, log4j2.properties and cluster.json in state_dir.

    Node i (0-based) is `state_dir/broker-<i>`, node id i + 1, listening for clients on
    port + i and for the quorum on controller_port + i; `broker_config` entries come last.
    """
    cluster_file = state_dir / "cluster.json"
    try:
        cluster_id = json.loads(cluster_file.read_text())["cluster_id"]
    except (OSError, ValueError, KeyError):
        cluster_id = _new_cluster_id()
    replication = min(3, brokers)
    min_isr = 2 if brokers >= 3 else 1
    voters = ",".join(
        f"{i + 1}@127.0.0.1:{controller_port + i}" for i in range(brokers)
    )
    (state_dir / "log4j2.properties").write_text(_LOG4J_CONFIG)
    for index in range(brokers):
        node = state_dir / f"broker-{index}"
        (node / "data").mkdir(parents=True, exist_ok=True)
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(index + 1),
            "controller.quorum.voters": voters,
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{port + index},"
                f"CONTROLLER://127.0.0.1:{controller_port + index}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port + index}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(node / "data"),
            "num.partitions": "1",
            "default.replication.factor": str(replication),
            "min.insync.replicas": str(min_isr),
            "offsets.topic.replication.factor": str(replication),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(replication),
            "transaction.state.log.min.isr": str(min_isr),
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": str(replication),
            "share.coordinator.state.topic.min.isr": str(min_isr),
            "group.initial.rebalance.delay.ms": "0",
            "unclean.leader.election.enable": "false",
            # Two shared cores: few threads per broker.
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "4",
            # A killed broker is noticed by the controller after this long.
            "broker.session.timeout.ms": "6000",
            "broker.heartbeat.interval.ms": "1000",
            **broker_config,
        }
        text = "".join(f"{key}={value}\n" for key, value in settings.items())
        (node / "server.properties").write_text(text)
    cluster_file.write_text(
        json.dumps(
            {
                "cluster_id": cluster_id,
                "brokers": brokers,
                "port": port,
                "controller_port": controller_port,
                "version": version,
            },
            indent=2,
        )
        + "\n"
    )


def _new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's own Uuid.randomUuid(), never one starting with '-' (command lines take it for
    an option).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
