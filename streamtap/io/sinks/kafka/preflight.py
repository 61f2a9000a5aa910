"""Kafka preflight: reach the brokers, create the topic if asked, check it takes chunks.

Run by `streamtap validate` and `streamtap run` before anything starts (KafkaSink.preflight),
never while a pipeline is built. Brokers that do not answer are `Unreachable` (a run starts and
the writer rides the outage out); wrong credentials, untrusted certificates and topics that
cannot take the chunks are errors that name the setting to fix. No error shows the password.
"""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path
from typing import Any, Mapping

from streamtap.errors import Unreachable
from streamtap.io.sinks.kafka.client import open_client, unreachable
from streamtap.io.sinks.kafka.record import RECORD_OVERHEAD

__all__ = ["check_topic", "topic_partitions"]

log = logging.getLogger(__name__)


def check_topic(
    sink, *, max_chunk_bytes: int, path: str = "kafka sink", timeout: float = 10.0
) -> list[str]:
    """Reaches `sink`'s brokers, creates its topic if asked, checks it takes chunks; errors.

    Args:
      sink: the KafkaSink (bootstrap_servers, topic, create_topic, partitions,
        replication_factor, batch_size and its security settings are used).
      max_chunk_bytes: the largest chunk (chunk.max_bytes).
      path: the sink's key path in the config, prefixed to every error.
      timeout: seconds to wait for the brokers.
    """
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    servers, topic, security = sink.bootstrap_servers, sink.topic, sink.security()
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if security.get(name) and not Path(security[name]).is_file():
            return [f"{path}.{name}: no such file {security[name]!r}"]
    try:
        admin = open_client(
            KafkaAdminClient,
            servers,
            security,
            client_id="streamtap-preflight",
            request_timeout_ms=int(timeout * 1000),
            bootstrap_timeout_ms=int(timeout * 1000),
        )
    except KafkaError as error:
        return [_connect_failure(servers, error, path, security)]
    try:
        if sink.create_topic:
            spec: dict[str, Any] = {}
            if sink.partitions is not None:
                spec["num_partitions"] = sink.partitions
            if sink.replication_factor is not None:
                spec["replication_factor"] = sink.replication_factor
            try:
                admin.create_topics({topic: spec}, wait_for_metadata=True)
                log.info("created Kafka topic %s at %s", topic, servers)
            except TopicAlreadyExistsError:
                pass
            except KafkaError as error:
                return [f"{path}: cannot create topic {topic!r} at {servers}: {error}"]
        (described,) = admin.describe_topics([topic])
        if described["error_code"] != 0:
            return [
                (
                    f"{path}.topic: topic {topic!r} does not exist at {servers} (error "
                    f"{described['error_code']}): create it, or set {path}.create_topic: true"
                )
            ]
        configs = admin.describe_configs(
            [ConfigResource("topic", topic, ["max.message.bytes", "min.insync.replicas"])],
            config_filter="all",
        )["topic"][topic]
    except KafkaError as error:
        return [f"{path}: checking topic {topic!r} at {servers} failed: {error}"]
    finally:
        admin.close()
    return _limit_errors(sink, configs, described, max_chunk_bytes, path)


def topic_partitions(sink, timeout: float = 10.0) -> int | None:
    """How many partitions `sink`'s topic has now; None if the brokers or the topic are not
    there (preflight says why)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = open_client(
            KafkaAdminClient, sink.bootstrap_servers, sink.security(),
            client_id="streamtap-plan", request_timeout_ms=int(timeout * 1000),
            bootstrap_timeout_ms=int(timeout * 1000),
        )
    except KafkaError:
        return None
    try:
        (described,) = admin.describe_topics([sink.topic])
    except KafkaError:
        return None
    finally:
        admin.close()
    return len(described["partitions"]) if described["error_code"] == 0 else None


def _limit_errors(
    sink, configs: Mapping, described: Mapping, max_chunk_bytes: int, path: str
) -> list[str]:
    """What the topic's max.message.bytes and min.insync.replicas rule out for this sink."""
    servers, topic = sink.bootstrap_servers, sink.topic
    errors = []
    # The topic's value is the broker's message.max.bytes unless the topic overrides it.
    max_message = int(configs["max.message.bytes"]["value"])
    record = max_chunk_bytes + RECORD_OVERHEAD
    if record > max_message:
        errors.append(
            f"{path}.topic: chunks of up to {max_chunk_bytes} bytes (chunk.max_bytes) plus "
            f"~{RECORD_OVERHEAD} bytes of headers can exceed topic {topic!r}'s max.message.bytes="
            f"{max_message} at {servers}: lower chunk.max_bytes to at most "
            f"{max_message - RECORD_OVERHEAD}, or raise the topic's max.message.bytes to at least "
            f"{record} (kafka-configs.sh --alter --entity-type topics --entity-name {topic} "
            f"--add-config max.message.bytes={record})"
        )
    elif sink.batch_size + RECORD_OVERHEAD > max_message:
        errors.append(
            f"{path}.batch_size: producer batches of {sink.batch_size} bytes can exceed topic "
            f"{topic!r}'s max.message.bytes={max_message}: lower batch_size to at most "
            f"{max_message - RECORD_OVERHEAD}"
        )
    min_isr = int(configs["min.insync.replicas"]["value"])
    replicas = min((len(p["replica_nodes"]) for p in described["partitions"]), default=0)
    if replicas and replicas < min_isr:
        errors.append(
            f"{path}.topic: topic {topic!r} has {replicas} replica(s) but min.insync.replicas="
            f"{min_isr}, so writes with acks=all always fail: recreate it with replication "
            f"factor >= {min_isr} or lower its min.insync.replicas"
        )
    return errors


def _connect_failure(
    bootstrap_servers: str, error: BaseException, path: str, security: Mapping[str, Any]
) -> str:
    """The preflight error for a client that could not bootstrap.

    kafka-python reports every failed bootstrap as a timeout ("Unable to bootstrap"): a wrong
    password or an untrusted certificate looks like brokers that are down. A broker whose port
    accepts TCP connections is up, though, so then the TLS or SASL handshake failed: TLS problems
    show in a handshake of our own with the settings kafka-python uses, and with SASL the broker
    turned the credentials down (or speaks another protocol): not an outage to ride out but a
    setting to fix. The rest stays `Unreachable` (a PLAINTEXT broker that accepts connections
    may still be starting). Never includes the password.
    """
    servers = [s.strip() for s in bootstrap_servers.split(",") if s.strip()]
    server = next((s for s in servers if _accepts_tcp(s)), None)
    if server is None:
        return Unreachable(f"{path}: {unreachable(bootstrap_servers, error)}")
    protocol = security.get("security_protocol") or "PLAINTEXT"
    if protocol.endswith("SSL"):
        tls_error = _tls_error(server, security)
        if tls_error is not None:
            if isinstance(tls_error, ssl.SSLCertVerificationError):
                return (
                    f"{path}.ssl_cafile: the TLS certificate of Kafka at {server} failed "
                    f"verification ({tls_error}): set ssl_cafile to the PEM file of the CA that "
                    "signed the brokers' certificates (they must name the host you connect to)"
                )
            return (
                f"{path}: the TLS handshake with Kafka at {server} failed ({tls_error}): is "
                f"this a TLS listener (security_protocol {protocol}), and are ssl_cafile, "
                "ssl_certfile and ssl_keyfile right?"
            )
    if protocol.startswith("SASL_"):
        return (
            f"{path}: Kafka at {server} accepts connections but SASL authentication failed "
            f"(user {security.get('sasl_username')!r}, mechanism "
            f"{security.get('sasl_mechanism')}): check sasl_username, sasl_password and "
            f"sasl_mechanism, and that the listener uses security_protocol {protocol} [{error}]"
        )
    # Perhaps a broker that is still starting: keep it an outage the sink rides out.
    return Unreachable(
        f"{path}: {unreachable(bootstrap_servers, error)}; {server} accepts connections though: "
        f"if its listener requires TLS or SASL authentication, set security_protocol (it is "
        f"{protocol}) and the ssl_*/sasl_* settings to match"
    )


def _split_host_port(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    return host.strip("[]"), int(port)


def _accepts_tcp(server: str, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection(_split_host_port(server), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _tls_error(server: str, security: Mapping[str, Any], timeout: float = 5.0) -> Exception | None:
    """The error of a TLS handshake with `server` as kafka-python makes it; None if it works."""
    host, port = _split_host_port(server)
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if security.get("ssl_cafile"):
            context.load_verify_locations(security["ssl_cafile"])
        else:
            context.load_default_certs()
        if security.get("ssl_certfile"):
            context.load_cert_chain(security["ssl_certfile"], security.get("ssl_keyfile"))
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with context.wrap_socket(sock, server_hostname=host):
                return None
    except (OSError, ValueError) as tls_error:  # ssl.SSLError is an OSError
        return tls_error
