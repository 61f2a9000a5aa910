"""Kafka sink: every chunk becomes one Kafka record; `read_kafka_chunks` reads them back.

Record layout (readable by any Kafka client, e.g. `kcat -f '%k %h %S'`):

- key: the stream id (UTF-8), so one stream's chunks land in one partition, in order;
- value: the payload bytes, unchanged;
- headers, all UTF-8 text: `session`, `seq`, `offset`, `event_time` (repr of the float epoch
  seconds), `crc32c` (decimal), `discontinuity` (`true`/`false`) and `tag.<name>` per tag.

Delivery is at-least-once: the producer is idempotent (acks=all, retries on), a bundle finishes
only once the brokers acknowledged all of its records, and a record that fails for good fails the
bundle so the runner retries it. A retried bundle can write a chunk twice; readers drop the
duplicates by the chunk key (stream_id, session, seq).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlparse

import apache_beam as beam
from apache_beam.metrics import Metrics

from streamtap.chunk import Chunk
from streamtap.config import PipelineConfig, SinkConfig, doc
from streamtap.errors import Unreachable

__all__ = ["KafkaSink", "WriteToKafka", "read_kafka_chunks"]

log = logging.getLogger(__name__)

# Key, headers and batch framing of one record, on top of its payload. Generous: a session id,
# six numbers and a few tags take ~200 bytes; ICY titles and user tags make up the rest.
RECORD_OVERHEAD = 1024

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# codec -> (PyPI package that provides it, kafka.codec check)
_CODECS = {
    "gzip": ("(standard library)", "has_gzip"),
    "snappy": ("python-snappy or cramjam", "has_snappy"),
    "lz4": ("lz4", "has_lz4"),
    "zstd": ("zstandard", "has_zstd"),
}
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_HOST_PORT = re.compile(r"^\[?[A-Za-z0-9._:-]+\]?:(\d{1,5})$")

# process() flushes when this many payload bytes wait for acknowledgement, bounding memory when a
# runner hands over a large bundle (the bounded FnApiRunner passes whole PCollections).
_MAX_PENDING_BYTES = 32 * 1024 * 1024
_CONNECT_ATTEMPT_MS = 10_000
_REQUEST_TIMEOUT_MS = 30_000
_DELIVERY_TIMEOUT_MS = 120_000  # a record not acknowledged by then is resent by the writer
_MAX_BACKOFF_SECONDS = 30.0


def _use_native_crc32c() -> None:
    """Makes kafka-python checksum record batches in C when the `crc32c` package is missing.

    kafka-python computes the CRC-32C of every record batch with the `crc32c` package if it is
    installed, else in pure Python: ~15 ms per 64 KiB chunk, which caps a producer or reader at
    a few MB/s. google-crc32c (a streamtap dependency already) computes the same checksum in C.
    """
    try:
        from kafka.record import default_records, util
    except ImportError:  # pragma: no cover - another kafka-python layout: leave it alone
        return
    if getattr(util, "crc32c_c", True) is not None or not hasattr(default_records, "calc_crc32c"):
        return
    import google_crc32c

    def calc_crc32c(memview) -> int:
        return google_crc32c.value(bytes(memview))

    default_records.calc_crc32c = calc_crc32c


_use_native_crc32c()


class _HidePasswords(logging.Filter):
    """Masks the SASL passwords this process uses in kafka-python's log records.

    At DEBUG kafka-python logs the admin client's whole configuration and every request, raw
    bytes included, so the password shows in clear text (always with PLAIN, whose token carries
    it). _client_config registers each password it hands to kafka-python here.
    """

    passwords: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.passwords:
            return True
        message = record.getMessage()
        masked = message
        for password in tuple(self.passwords):  # a snapshot: other threads may add one
            for form in (password, repr(password.encode("utf-8"))[2:-1]):
                masked = masked.replace(form, "********")
        if masked != message:
            record.msg, record.args = masked, None
        return True


# The loggers whose DEBUG records carry client configs or request contents.
for _name in ("kafka.admin.client", "kafka.net.connection", "kafka.protocol.parser"):
    logging.getLogger(_name).addFilter(_HidePasswords())


def available_compressions() -> list[str]:
    """Compression codecs whose Python libraries are importable here ("none" always is)."""
    from kafka import codec

    return ["none"] + [name for name, (_, check) in _CODECS.items() if getattr(codec, check)()]


# --- config ------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class KafkaSink(SinkConfig):
    """`type: kafka`: writes every chunk as one record to a Kafka topic (acks=all, idempotent)."""

    type_name: ClassVar[str] = "kafka"
    location_schemes: ClassVar[tuple[str, ...]] = ("kafka",)
    # Seconds preflight waits for the brokers to answer.
    preflight_timeout: ClassVar[float] = 10.0

    bootstrap_servers: str = doc("Comma-separated host:port list of Kafka brokers.")
    topic: str = doc("Topic the chunks are written to.")
    create_topic: bool = doc(
        "Create the topic in `streamtap validate`/`run` preflight when it does not exist.", False
    )
    partitions: int | None = doc(
        "Partitions of a topic created by create_topic (default: the broker's num.partitions).",
        None,
    )
    replication_factor: int | None = doc(
        "Replication factor of a topic created by create_topic (default: the broker's "
        "default.replication.factor).",
        None,
    )
    compression: str = doc(
        "Batch compression: none, gzip, snappy, lz4 or zstd (those whose Python library is "
        "installed). Encoded audio barely compresses: none is the default.",
        "none",
    )
    linger_ms: int = doc("Milliseconds the producer waits to fill a batch before sending it.", 5)
    batch_size: int = doc(
        "Bytes per producer batch and partition (512 KiB holds 8 chunks of 64 KiB).", 524288
    )
    max_request_size: int = doc(
        "Largest produce request in bytes; caps one record (chunk + ~1 KiB of key and headers).",
        1048576,
    )
    max_outage_seconds: float | None = doc(
        "How long the writer keeps retrying while the brokers are unreachable before it fails "
        "the bundle (null: retry forever).",
        300.0,
    )
    security_protocol: str = doc("PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.", "PLAINTEXT")
    sasl_mechanism: str | None = doc(
        "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL_* security_protocol).", None
    )
    sasl_username: str | None = doc("SASL user name.", None)
    sasl_password: str | None = doc(
        "SASL password; write it as ${ENV_VAR} rather than in the file.", None, repr=False
    )
    ssl_cafile: str | None = doc("PEM file of the CA that signed the brokers' certificates.", None)
    ssl_certfile: str | None = doc("PEM file of the client certificate (mutual TLS).", None)
    ssl_keyfile: str | None = doc("PEM file of the client certificate's private key.", None)

    def validate(self, path: str) -> list[str]:
        errors = []
        errors += _bootstrap_errors(self.bootstrap_servers, f"{path}.bootstrap_servers")
        if not _TOPIC_NAME.match(self.topic or "") or self.topic in (".", ".."):
            errors.append(
                f"{path}.topic: {self.topic!r} is not a valid Kafka topic name; use 1-249 "
                "letters, digits, '.', '_' or '-'"
            )
        for name in ("partitions", "replication_factor"):
            value = getattr(self, name)
            if value is None:
                continue
            if value < 1:
                errors.append(f"{path}.{name}: must be >= 1, got {value}")
            elif not self.create_topic:
                errors.append(
                    f"{path}.{name}: only used when the sink creates the topic; set "
                    f"{path}.create_topic: true or remove {name}"
                )
        errors += _compression_errors(self.compression, f"{path}.compression")
        if self.linger_ms < 0:
            errors.append(f"{path}.linger_ms: must be >= 0 milliseconds, got {self.linger_ms}")
        if self.batch_size < 0:
            errors.append(f"{path}.batch_size: must be >= 0 bytes, got {self.batch_size}")
        if self.max_request_size < RECORD_OVERHEAD + 1:
            errors.append(
                f"{path}.max_request_size: must be > {RECORD_OVERHEAD} bytes, "
                f"got {self.max_request_size}"
            )
        if self.max_outage_seconds is not None and self.max_outage_seconds < 0:
            errors.append(
                f"{path}.max_outage_seconds: must be >= 0 seconds or null, "
                f"got {self.max_outage_seconds}"
            )
        errors += _security_errors(self._security(), path)
        return errors

    def check_chunk_size(self, max_chunk_bytes: int, path: str) -> list[str]:
        needed = max_chunk_bytes + RECORD_OVERHEAD
        if needed <= self.max_request_size:
            return []
        return [
            (
                f"{path}.max_request_size: a chunk of up to {max_chunk_bytes} bytes "
                f"(chunk.max_bytes) plus ~{RECORD_OVERHEAD} bytes of key and headers is "
                f"{needed} bytes, more than max_request_size={self.max_request_size}: "
                f"lower chunk.max_bytes to at most "
                f"{self.max_request_size - RECORD_OVERHEAD} or raise {path}.max_request_size to at "
                f"least {needed} (and the topic's max.message.bytes with it)"
            )
        ]

    def preflight(self, config: PipelineConfig) -> list[str]:
        path = _sink_path(config, self)
        return check_topic(
            self.bootstrap_servers,
            self.topic,
            max_chunk_bytes=config.chunk.max_bytes,
            batch_size=self.batch_size,
            create=self.create_topic,
            partitions=self.partitions,
            replication_factor=self.replication_factor,
            path=path,
            timeout=self.preflight_timeout,
            **self._security(),
        )

    @classmethod
    def read_location(cls, location: str, stream_id: str | None = None) -> Iterator[Chunk]:
        """Reads `kafka://host:port[,host:port]/topic`."""
        parsed = urlparse(location)
        topic = parsed.path.strip("/")
        if not parsed.netloc or not topic:
            raise ValueError(f"{location!r}: expected kafka://host:port[,host:port]/topic")
        return read_kafka_chunks(parsed.netloc, topic, stream_id=stream_id)

    def transform(self, config: PipelineConfig) -> WriteToKafka:
        return WriteToKafka(
            self.bootstrap_servers,
            self.topic,
            compression=self.compression,
            linger_ms=self.linger_ms,
            batch_size=self.batch_size,
            max_request_size=self.max_request_size,
            max_outage_seconds=self.max_outage_seconds,
            **self._security(),
        )

    def _security(self) -> dict[str, Any]:
        return {
            "security_protocol": self.security_protocol,
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_username": self.sasl_username,
            "sasl_password": self.sasl_password,
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }


def _sink_path(config: PipelineConfig, sink: SinkConfig) -> str:
    for index, candidate in enumerate(config.sinks):
        if candidate is sink:
            return f"sinks[{index}]"
    return "kafka sink"


def _bootstrap_errors(bootstrap_servers: str, path: str) -> list[str]:
    servers = [s.strip() for s in (bootstrap_servers or "").split(",") if s.strip()]
    if not servers:
        return [f"{path}: at least one host:port is needed, e.g. 127.0.0.1:9092"]
    errors = []
    for server in servers:
        match = _HOST_PORT.match(server)
        if not match or not 1 <= int(match.group(1)) <= 65535:
            errors.append(f"{path}: {server!r} is not host:port (e.g. 127.0.0.1:9092)")
    return errors


def _compression_errors(compression: str, path: str) -> list[str]:
    if compression == "none":
        return []
    if compression not in _CODECS:
        return [f"{path}: must be one of none, {', '.join(_CODECS)}; got {compression!r}"]
    if compression not in available_compressions():
        package = _CODECS[compression][0]
        return [
            (
                f"{path}: {compression} needs the Python package {package}, which is not installed "
                f"(pip install {package.split()[0]}); available here: "
                f"{', '.join(available_compressions())}"
            )
        ]
    return []


def _security_errors(security: dict[str, Any], path: str) -> list[str]:
    errors = []
    protocol = security["security_protocol"]
    if protocol not in SECURITY_PROTOCOLS:
        errors.append(
            f"{path}.security_protocol: must be one of {', '.join(SECURITY_PROTOCOLS)}, "
            f"got {protocol!r}"
        )
        return errors
    sasl_fields = ("sasl_mechanism", "sasl_username", "sasl_password")
    if protocol.startswith("SASL_"):
        if security["sasl_mechanism"] not in SASL_MECHANISMS:
            errors.append(
                f"{path}.sasl_mechanism: {protocol} needs one of {', '.join(SASL_MECHANISMS)}, "
                f"got {security['sasl_mechanism']!r}"
            )
        for name in ("sasl_username", "sasl_password"):
            if not security[name]:
                errors.append(f"{path}.{name}: required with security_protocol {protocol}")
    else:
        for name in sasl_fields:
            if security[name] is not None:
                errors.append(
                    f"{path}.{name}: only used with security_protocol SASL_PLAINTEXT or "
                    f"SASL_SSL (it is {protocol})"
                )
    if not protocol.endswith("SSL"):
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if security[name] is not None:
                errors.append(
                    f"{path}.{name}: only used with security_protocol SSL or SASL_SSL "
                    f"(it is {protocol})"
                )
    if (security["ssl_certfile"] is None) != (security["ssl_keyfile"] is None):
        errors.append(f"{path}.ssl_keyfile: ssl_certfile and ssl_keyfile go together")
    return errors


def _client_config(bootstrap_servers: str, **security: Any) -> dict[str, Any]:
    """kafka-python settings for our security field names (unset ones left out)."""
    names = {
        "security_protocol": "security_protocol",
        "sasl_mechanism": "sasl_mechanism",
        "sasl_username": "sasl_plain_username",
        "sasl_password": "sasl_plain_password",
        "ssl_cafile": "ssl_cafile",
        "ssl_certfile": "ssl_certfile",
        "ssl_keyfile": "ssl_keyfile",
    }
    unknown = set(security) - set(names)
    if unknown:
        raise TypeError(f"unknown Kafka security option(s): {', '.join(sorted(unknown))}")
    settings: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in bootstrap_servers.split(",") if s.strip()]
    }
    for ours, theirs in names.items():
        if security.get(ours) is not None:
            settings[theirs] = security[ours]
    if security.get("sasl_password"):
        _HidePasswords.passwords.add(security["sasl_password"])
    return settings


def _unreachable(bootstrap_servers: str, error: BaseException) -> str:
    return (
        f"cannot reach Kafka at {bootstrap_servers}: is it running? (streamtap services up "
        f"kafka) [{error}]"
    )


def _connect_failure(
    bootstrap_servers: str, error: BaseException, path: str, security: dict[str, Any]
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
        return Unreachable(f"{path}: {_unreachable(bootstrap_servers, error)}")
    protocol = security.get("security_protocol") or "PLAINTEXT"
    if protocol.endswith("SSL"):
        import ssl

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
        f"{path}: {_unreachable(bootstrap_servers, error)}; {server} accepts connections though: "
        f"if its listener requires TLS or SASL authentication, set security_protocol (it is "
        f"{protocol}) and the ssl_*/sasl_* settings to match"
    )


def _split_host_port(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    return host.strip("[]"), int(port)


def _accepts_tcp(server: str, timeout: float = 2.0) -> bool:
    import socket

    try:
        with socket.create_connection(_split_host_port(server), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _tls_error(server: str, security: dict[str, Any], timeout: float = 5.0) -> Exception | None:
    """The error of a TLS handshake with `server` as kafka-python makes it; None if it works."""
    import socket
    import ssl

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


# --- preflight ---------------------------------------------------------------------------------


def check_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    max_chunk_bytes: int,
    batch_size: int = 0,
    create: bool = False,
    partitions: int | None = None,
    replication_factor: int | None = None,
    path: str = "kafka sink",
    timeout: float = 10.0,
    **security: Any,
) -> list[str]:
    """Reaches the brokers, creates the topic if asked, checks it takes chunks; returns errors."""
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if security.get(name) and not Path(security[name]).is_file():
            return [f"{path}.{name}: no such file {security[name]!r}"]
    try:
        admin = KafkaAdminClient(
            client_id="streamtap-preflight",
            request_timeout_ms=int(timeout * 1000),
            bootstrap_timeout_ms=int(timeout * 1000),
            **_client_config(bootstrap_servers, **security),
        )
    except KafkaError as error:
        return [_connect_failure(bootstrap_servers, error, path, security)]
    try:
        if create:
            spec: dict[str, Any] = {}
            if partitions is not None:
                spec["num_partitions"] = partitions
            if replication_factor is not None:
                spec["replication_factor"] = replication_factor
            try:
                admin.create_topics({topic: spec}, wait_for_metadata=True)
                log.info("created Kafka topic %s at %s", topic, bootstrap_servers)
            except TopicAlreadyExistsError:
                pass
            except KafkaError as error:
                return [f"{path}: cannot create topic {topic!r} at {bootstrap_servers}: {error}"]
        (described,) = admin.describe_topics([topic])
        if described["error_code"] != 0:
            return [
                (
                    f"{path}.topic: topic {topic!r} does not exist at {bootstrap_servers} (error "
                    f"{described['error_code']}): create it, or set {path}.create_topic: true"
                )
            ]
        configs = admin.describe_configs(
            [ConfigResource("topic", topic, ["max.message.bytes", "min.insync.replicas"])],
            config_filter="all",
        )["topic"][topic]
    except KafkaError as error:
        return [f"{path}: checking topic {topic!r} at {bootstrap_servers} failed: {error}"]
    finally:
        admin.close()

    errors = []
    # The topic's value is the broker's message.max.bytes unless the topic overrides it.
    max_message = int(configs["max.message.bytes"]["value"])
    record = max_chunk_bytes + RECORD_OVERHEAD
    if record > max_message:
        errors.append(
            f"{path}.topic: chunks of up to {max_chunk_bytes} bytes (chunk.max_bytes) plus "
            f"~{RECORD_OVERHEAD} bytes of headers can exceed topic {topic!r}'s max.message.bytes="
            f"{max_message} at {bootstrap_servers}: lower chunk.max_bytes to at most "
            f"{max_message - RECORD_OVERHEAD}, or raise the topic's max.message.bytes to at least "
            f"{record} (kafka-configs.sh --alter --entity-type topics --entity-name {topic} "
            f"--add-config max.message.bytes={record})"
        )
    elif batch_size + RECORD_OVERHEAD > max_message:
        errors.append(
            f"{path}.batch_size: producer batches of {batch_size} bytes can exceed topic "
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


# --- writing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ProducerSettings:
    bootstrap_servers: str
    topic: str
    compression: str
    linger_ms: int
    batch_size: int
    max_request_size: int
    max_outage_seconds: float | None
    security: dict[str, Any]

    def __repr__(self) -> str:  # never show the SASL password
        return f"_ProducerSettings({self.bootstrap_servers!r}, {self.topic!r})"

    def producer_config(self) -> dict[str, Any]:
        return {
            **_client_config(self.bootstrap_servers, **self.security),
            "client_id": "streamtap-kafka-sink",
            "acks": "all",
            "enable_idempotence": True,
            "retries": 2**31 - 1,
            "max_in_flight_requests_per_connection": 5,
            "compression_type": None if self.compression == "none" else self.compression,
            "linger_ms": self.linger_ms,
            "batch_size": self.batch_size,
            "max_request_size": self.max_request_size,
            "bootstrap_timeout_ms": _CONNECT_ATTEMPT_MS,
            # Brokers that come back are found within ~5 s (kafka-python's default backs off to
            # 30 s between connection attempts).
            "reconnect_backoff_max_ms": 5000,
            "max_block_ms": 30_000,
            "request_timeout_ms": _REQUEST_TIMEOUT_MS,
            "delivery_timeout_ms": _DELIVERY_TIMEOUT_MS,
        }


_UNDECIDED = object()


def _close_producer(producer, timeout: float, where: str) -> None:
    """Closes a KafkaProducer, also one whose flush() cannot finish.

    kafka-python's close() flushes first and, when a batch never completes (see _drain), raises
    before it stops the sender thread; stop that thread directly then.
    """
    try:
        producer.close(timeout=timeout)
        return
    except Exception as error:  # noqa: BLE001 - closing must not mask the real failure
        log.debug("closing the Kafka producer for %s: %s; forcing it", where, error)
    try:
        sender = getattr(producer, "_sender", None)
        if sender is not None and sender.is_alive():
            sender.force_close()
        producer._closed = True  # its __del__ would otherwise try (and fail) to close it again
    except Exception as error:  # noqa: BLE001
        log.warning("could not close the Kafka producer for %s: %s", where, error)


def _undecided_error(where: str) -> BaseException:
    from kafka.errors import KafkaTimeoutError

    return KafkaTimeoutError(f"no delivery report for a record to {where} in time")


def chunk_headers(chunk: Chunk) -> list[tuple[str, bytes]]:
    """The Kafka headers of a chunk: every field but stream_id and payload, as UTF-8 text."""
    headers = [
        ("session", chunk.session.encode()),
        ("seq", str(chunk.seq).encode()),
        ("offset", str(chunk.offset).encode()),
        ("event_time", repr(float(chunk.event_time)).encode()),
        ("crc32c", str(chunk.crc32c).encode()),
        ("discontinuity", b"true" if chunk.discontinuity else b"false"),
    ]
    headers += [(f"tag.{name}", value.encode("utf-8")) for name, value in chunk.tags.items()]
    return headers


class _WriteChunksFn(beam.DoFn):
    """Sends chunks with an idempotent producer; a bundle ends when all its records are acked."""

    def __init__(self, settings: _ProducerSettings):
        self._settings = settings
        self._producer = None

    def setup(self) -> None:
        self._counters: dict[str, Any] = {}
        self._pending: list[tuple[Any, Chunk]] = []
        self._pending_bytes = 0
        self._outage_since: float | None = None
        self._backoff = 1.0
        self._producer = self._connect()

    def start_bundle(self) -> None:
        self._pending = []
        self._pending_bytes = 0

    def process(self, chunk: Chunk):
        self._send(chunk)
        if self._pending_bytes >= _MAX_PENDING_BYTES:
            self._drain()
        return ()

    def finish_bundle(self) -> None:
        self._drain()

    def teardown(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            _close_producer(producer, timeout=10, where=self._where())

    # -- internals --

    def _where(self) -> str:
        return f"topic {self._settings.topic!r} at {self._settings.bootstrap_servers}"

    def _connect(self):
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        while True:
            attempt_started = time.monotonic()
            try:
                producer = KafkaProducer(**self._settings.producer_config())
                if self._outage_since is not None:
                    log.warning("reached Kafka at %s again", self._settings.bootstrap_servers)
                self._outage_since = None
                self._backoff = 1.0
                return producer
            except KafkaError as error:
                if not error.retriable:
                    raise RuntimeError(
                        f"cannot connect to Kafka at {self._settings.bootstrap_servers}: {error}"
                    ) from error
                self._wait_out(error, "connecting", since=attempt_started)

    def _wait_out(self, error: BaseException, doing: str, since: float | None = None) -> None:
        """Logs a retriable failure, sleeps with backoff; raises once the outage is too long.

        `since`: when the failed attempt began (the start of the outage if it is the first).
        """
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now if since is None else since
        elapsed = now - self._outage_since
        limit = self._settings.max_outage_seconds
        if limit is not None and elapsed >= limit:
            raise RuntimeError(
                f"{_unreachable(self._settings.bootstrap_servers, error)}; gave up {doing} after "
                f"{elapsed:.0f} s (max_outage_seconds={limit}); the runner retries the bundle"
            ) from error
        log.error(
            "%s; still retrying %s (for %.0f s so far, next try in %.0f s)",
            _unreachable(self._settings.bootstrap_servers, error),
            doing,
            elapsed,
            self._backoff,
        )
        time.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, _MAX_BACKOFF_SECONDS)

    def _send(self, chunk: Chunk) -> None:
        from kafka.errors import KafkaError

        while True:
            if self._producer is None:
                self._producer = self._connect()
            attempt_started = time.monotonic()
            try:
                future = self._producer.send(
                    self._settings.topic,
                    key=chunk.stream_id.encode("utf-8"),
                    value=bytes(chunk.payload),
                    headers=chunk_headers(chunk),
                )
            except KafkaError as error:  # no metadata within max_block_ms
                if not error.retriable:
                    raise self._rejected(chunk, error, at_send=True) from error
                self._wait_out(error, "sending", since=attempt_started)
                continue
            self._pending.append((future, chunk))
            self._pending_bytes += len(chunk.payload)
            return

    def _drain(self) -> None:
        """Flushes and checks every pending record; resends the retriable failures."""
        while self._pending:
            started = time.monotonic()
            # Every record is decided within delivery_timeout_ms; the margin covers a request
            # in flight at that moment. Past it a record counts as lost and is sent again.
            deadline = time.monotonic() + (_DELIVERY_TIMEOUT_MS + _REQUEST_TIMEOUT_MS) / 1000 + 5
            self._flush(deadline)
            failed: list[Chunk] = []
            last_error: BaseException | None = None
            stuck = False
            for future, chunk in self._pending:
                error = self._outcome(future, deadline)
                if error is None:
                    self._count(chunk.stream_id, "kafka_records", 1)
                    self._count(chunk.stream_id, "kafka_bytes", len(chunk.payload))
                    continue
                if error is _UNDECIDED:
                    stuck = True
                    error = _undecided_error(self._where())
                if not getattr(error, "retriable", False):
                    self._pending = []
                    self._reset_producer()
                    raise self._rejected(chunk, error) from error
                failed.append(chunk)
                last_error = error
                self._count(chunk.stream_id, "kafka_retries", 1)
            self._pending = []
            self._pending_bytes = 0
            if not failed:
                if self._outage_since is not None:
                    log.warning(
                        "Kafka at %s accepts writes again", self._settings.bootstrap_servers
                    )
                self._outage_since = None
                self._backoff = 1.0
                return
            if stuck:
                # kafka-python can lose track of a batch that was in flight when its broker
                # died: its records never complete and every later flush() would wait for them.
                # A fresh producer (a new idempotent producer id) starts clean.
                log.warning(
                    "Kafka producer for %s has records without a delivery report after %.0f s; "
                    "replacing the producer and sending them again",
                    self._where(),
                    (_DELIVERY_TIMEOUT_MS + _REQUEST_TIMEOUT_MS) / 1000,
                )
                self._reset_producer()
            self._wait_out(last_error, f"sending {len(failed)} record(s)", since=started)
            for chunk in failed:
                self._send(chunk)

    def _flush(self, deadline: float) -> None:
        from kafka.errors import KafkaError

        while time.monotonic() < deadline:
            try:
                self._producer.flush(timeout=max(deadline - time.monotonic(), 0.001))
                return
            except KafkaError as error:
                # kafka-python 3's flush() returns early with "Future not done" when the sender
                # splits a batch the broker found too large, and raises KafkaTimeoutError at the
                # deadline. _outcome() checks each record either way.
                log.debug("Kafka producer flush for %s: %s", self._where(), error)
                time.sleep(0.01)

    def _outcome(self, future, deadline: float):
        """Waits until `deadline` for one record's delivery: None on success, else the error.

        Returns _UNDECIDED when the record has no outcome by then.
        """
        from kafka.errors import KafkaError

        if not future.is_done:
            try:
                future.get(timeout=max(deadline - time.monotonic(), 0.001))
            except KafkaError:
                pass  # a failure or the timeout: read below
        if not future.is_done:
            return _UNDECIDED
        return None if future.succeeded() else future.exception

    def _reset_producer(self) -> None:
        """Drops the producer after a fatal error: the next send starts with a fresh one."""
        producer, self._producer = self._producer, None
        if producer is not None:
            _close_producer(producer, timeout=0, where=self._where())

    def _rejected(self, chunk: Chunk, error: BaseException, at_send: bool = False) -> RuntimeError:
        from kafka.errors import MessageSizeTooLargeError

        what = f"chunk {chunk.stream_id} seq {chunk.seq} ({len(chunk.payload)} bytes)"
        if isinstance(error, MessageSizeTooLargeError) and at_send:
            return RuntimeError(
                f"{what} does not fit the producer's max_request_size="
                f"{self._settings.max_request_size} for {self._where()}: lower chunk.max_bytes or "
                "raise the sink's max_request_size (and the topic's max.message.bytes with it)"
            )
        if isinstance(error, MessageSizeTooLargeError):
            return RuntimeError(
                f"Kafka rejected {what} for {self._where()}: the record is larger than the "
                "topic's max.message.bytes (or the broker's message.max.bytes): lower "
                "chunk.max_bytes, or raise the topic's max.message.bytes "
                "(`streamtap validate` checks this before a run)"
            )
        return RuntimeError(f"Kafka rejected {what} for {self._where()}: {error}")

    def _count(self, stream_id: str, what: str, amount: int) -> None:
        name = f"{stream_id}.{what}"
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = Metrics.counter("streamtap", name)
        counter.inc(amount)


class WriteToKafka(beam.PTransform):
    """Writes a PCollection of Chunks (any windowing) to a Kafka topic, one record per chunk.

    Key: stream id; value: payload; headers: the other chunk fields (see the module docstring).
    Unit of parallelism: one idempotent KafkaProducer per DoFn instance (worker thread).
    Delivery: at-least-once. Each bundle waits for acks=all of all its records; a record rejected
    for good (too large, not authorized) fails the bundle with the reason, and while the brokers
    are unreachable the writer retries with backoff for up to `max_outage_seconds`, then fails
    the bundle so the runner retries it. Readers drop duplicates by (stream_id, session, seq).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        compression: str = "none",
        linger_ms: int = 5,
        batch_size: int = 524288,
        max_request_size: int = 1048576,
        max_outage_seconds: float | None = 300.0,
        security_protocol: str = "PLAINTEXT",
        sasl_mechanism: str | None = None,
        sasl_username: str | None = None,
        sasl_password: str | None = None,
        ssl_cafile: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        label: str | None = None,
    ):
        """
        Args:
          bootstrap_servers: comma-separated host:port list.
          topic: the topic to write to (it must exist unless the brokers auto-create topics).
          compression: "none", "gzip", "snappy", "lz4" or "zstd" (if its library is installed).
          linger_ms: milliseconds the producer waits to fill a batch.
          batch_size: bytes per producer batch and partition.
          max_request_size: largest produce request in bytes; caps one record.
          max_outage_seconds: seconds to keep retrying unreachable brokers before failing the
            bundle; None retries forever.
          security_protocol, sasl_*, ssl_*: as in KafkaSink.
        """
        super().__init__(label)
        sink = KafkaSink(
            type="kafka",
            bootstrap_servers=bootstrap_servers,
            topic=topic,
            compression=compression,
            linger_ms=linger_ms,
            batch_size=batch_size,
            max_request_size=max_request_size,
            max_outage_seconds=max_outage_seconds,
            security_protocol=security_protocol,
            sasl_mechanism=sasl_mechanism,
            sasl_username=sasl_username,
            sasl_password=sasl_password,
            ssl_cafile=ssl_cafile,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
        )
        errors = sink.validate("WriteToKafka")
        if errors:
            raise ValueError("; ".join(errors))
        self._settings = _ProducerSettings(
            bootstrap_servers=bootstrap_servers,
            topic=topic,
            compression=compression,
            linger_ms=linger_ms,
            batch_size=batch_size,
            max_request_size=max_request_size,
            max_outage_seconds=max_outage_seconds,
            security=sink._security(),
        )

    def expand(self, chunks):
        return chunks | "WriteRecords" >> beam.ParDo(_WriteChunksFn(self._settings))

    def display_data(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self._settings.bootstrap_servers,
            "topic": self._settings.topic,
            "compression": self._settings.compression,
        }


# --- reading back ------------------------------------------------------------------------------


def chunk_from_record(key: bytes | None, value: bytes | None, headers) -> Chunk:
    """Rebuilds a Chunk from a record written by WriteToKafka; ValueError if it is not one."""
    fields: dict[str, str] = {}
    tags: dict[str, str] = {}
    for name, raw in headers or ():
        text = (raw or b"").decode("utf-8")
        if name.startswith("tag."):
            tags[name[4:]] = text
        else:
            fields[name] = text
    missing = [
        name
        for name in ("session", "seq", "offset", "event_time", "crc32c", "discontinuity")
        if name not in fields
    ]
    if key is None or missing:
        raise ValueError(
            f"not a streamtap chunk record (key {key!r}, missing headers: "
            f"{', '.join(missing) or 'none'})"
        )
    return Chunk(
        stream_id=key.decode("utf-8"),
        session=fields["session"],
        seq=int(fields["seq"]),
        offset=int(fields["offset"]),
        payload=bytes(value or b""),
        event_time=float(fields["event_time"]),
        crc32c=int(fields["crc32c"]),
        discontinuity=fields["discontinuity"] == "true",
        tags=tags,
    )


def read_kafka_chunks(
    bootstrap_servers: str,
    topic: str,
    stream_id: str | None = None,
    *,
    sort: bool = True,
    timeout: float = 30.0,
    **security: Any,
) -> Iterator[Chunk]:
    """Reads a topic from the beginning to its current end offsets and yields the chunks.

    Args:
      stream_id: only this stream's chunks (the record key).
      sort: yield sorted by (stream_id, seq), duplicates kept (this holds every chunk in memory);
        with False, chunks come in partition/offset order, which is per-stream seq order except
        for chunks a retried write sent again.
      timeout: seconds without progress before TimeoutError.
      security: security_protocol, sasl_mechanism, sasl_username, sasl_password, ssl_* as in
        KafkaSink.
    """
    chunks = _read(bootstrap_servers, topic, stream_id, timeout, security)
    if sort:
        yield from sorted(chunks, key=lambda c: (c.stream_id, c.seq))
    else:
        yield from chunks


def _read(
    bootstrap_servers: str, topic: str, stream_id: str | None, timeout: float, security: dict
) -> Iterator[Chunk]:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    wanted_key = stream_id.encode("utf-8") if stream_id is not None else None
    try:
        consumer = KafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="streamtap-reader",
            bootstrap_timeout_ms=int(timeout * 1000),
            **_client_config(bootstrap_servers, **security),
        )
    except KafkaError as error:
        raise ConnectionError(_unreachable(bootstrap_servers, error)) from error
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"topic {topic!r} does not exist at {bootstrap_servers}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        remaining = {tp for tp in tps if consumer.position(tp) < end[tp]}
        last_progress = time.monotonic()
        while remaining:
            batches = consumer.poll(timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= end[tp]:
                        break
                    if wanted_key is not None and record.key != wanted_key:
                        continue
                    try:
                        yield chunk_from_record(record.key, record.value, record.headers)
                    except ValueError as error:
                        raise ValueError(
                            f"{topic}[{tp.partition}] offset {record.offset}: {error}"
                        ) from None
                last_progress = time.monotonic()
            for tp in list(remaining):
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
            if remaining and time.monotonic() - last_progress > timeout:
                raise TimeoutError(
                    f"reading {topic} at {bootstrap_servers}: no progress for {timeout:.0f} s on "
                    f"partition(s) {sorted(tp.partition for tp in remaining)}"
                )
    finally:
        consumer.close()
