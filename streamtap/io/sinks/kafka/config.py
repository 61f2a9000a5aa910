"""`type: kafka`: the KafkaSink config, where every option of the Kafka sink lives, and its checks.

KafkaSink is the plug-in (plugins.py): `validate` and `check_chunk_size` check values without
I/O, `plan` computes what the streams need of the topic (plan.py); `preflight` (preflight.py),
`transform` (write.py), `resume_positions` and `read_location` (read.py) hand the object itself
to the module that does the work, which reads the options it needs from it.
Parsing a config opens no connection and changes nothing in kafka-python.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

from streamtap.chunk import Chunk
from streamtap.config import PipelineConfig, SinkConfig, doc
from streamtap.config.capacity import Figure, StreamLoad
from streamtap.errors import RunError
from streamtap.io.sinks.kafka.client import SECURITY_SETTINGS
from streamtap.io.sinks.kafka.plan import plan_topic
from streamtap.io.sinks.kafka.preflight import check_topic, topic_partitions
from streamtap.io.sinks.kafka.read import TopicNotFound, read_location, stream_ends
from streamtap.io.sinks.kafka.record import RECORD_OVERHEAD
from streamtap.io.sinks.kafka.write import WriteChunksToKafka

__all__ = ["KafkaSink", "available_compressions"]

log = logging.getLogger(__name__)

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
        errors += _security_errors(self.security(), path)
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

    def security(self) -> dict[str, Any]:
        """The security fields by name, as `read_kafka_chunks(**...)` takes them."""
        return {name: getattr(self, name) for name in SECURITY_SETTINGS}

    def preflight(self, config: PipelineConfig) -> list[str]:
        return check_topic(
            self,
            max_chunk_bytes=config.chunk.max_bytes,
            path=_sink_path(config, self),
            timeout=self.preflight_timeout,
        )

    def resume_positions(self, stream_ids: list[str]) -> dict[str, tuple[int, int]]:
        """Where each stream ended in the topic, read from the tails of its partitions (read.py).

        Brokers that do not answer are waited for, as the writer would, up to
        max_outage_seconds: a run must not start a stream at seq 0 again by mistake.
        """
        started = time.monotonic()
        delay = 1.0
        while True:
            try:
                return stream_ends(
                    self.bootstrap_servers, self.topic, stream_ids,
                    timeout=self.preflight_timeout, **self.security(),
                )
            except TopicNotFound:
                return {}  # created by this run's preflight or its first write
            except ValueError as error:
                problem: Exception = error
                break
            except OSError as error:  # unreachable, or no progress (TimeoutError)
                problem = error
                waited = time.monotonic() - started
                limit = self.max_outage_seconds
                if limit is not None and waited + delay > limit:
                    break
                log.warning(
                    "cannot read Kafka topic %r at %s to continue its capture (%s); trying again "
                    "in %.0f s", self.topic, self.bootstrap_servers, error, delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        raise RunError(
            f"cannot read Kafka topic {self.topic!r} at {self.bootstrap_servers} to continue its "
            f"capture ({problem}); fix that, or set resume: false to start every stream at seq 0 "
            "(verify then reports the two runs' chunks with equal seq as duplicates)"
        ) from None

    def plan(self, loads: list[StreamLoad], config: PipelineConfig) -> list[Figure]:
        return plan_topic(self, loads, config)

    def plan_live(self, planned: list[Figure], config: PipelineConfig) -> list[Figure]:
        """The preflight's problems, and the topic's partition count against the plan's."""
        figures = super().plan_live(planned, config)
        needed = next((f.value for f in planned if f.what == "partitions needed"), None)
        partitions = topic_partitions(self, timeout=self.preflight_timeout)
        if partitions is not None and needed is not None:
            warning = ""
            if partitions < needed:
                warning = (f"topic {self.topic!r} has {partitions} partition(s), the plan "
                           f"{needed:g}: add partitions (kafka-topics.sh --alter --partitions "
                           f"{needed:g}) before the capture grows into them")
            figures.append(Figure("", "topic partitions now", partitions, "partitions",
                                  f"topic {self.topic!r} at {self.bootstrap_servers}",
                                  warning=warning))
        return figures

    @classmethod
    def read_location(cls, location: str, stream_id: str | None = None) -> Iterator[Chunk]:
        """Reads `kafka://host:port[,host:port]/topic`, lazily, in partition/offset order."""
        return read_location(location, stream_id)

    def transform(self, config: PipelineConfig) -> WriteChunksToKafka:
        from streamtap.io.streams import per_stream_metrics

        # Per-stream counters follow read.per_stream_metrics, like the readers' (ReadStreams).
        return WriteChunksToKafka(
            self, per_stream_metrics=per_stream_metrics(config.read, len(config.sources))
        )


def available_compressions() -> list[str]:
    """Compression codecs whose Python libraries are importable here ("none" always is)."""
    from kafka import codec

    return ["none"] + [name for name, (_, check) in _CODECS.items() if getattr(codec, check)()]


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
