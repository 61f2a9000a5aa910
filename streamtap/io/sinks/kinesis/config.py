"""`type: kinesis`: the sink's settings, their checks, preflight, resume and read-back entry points.

Every option of the Kinesis sink lives in KinesisSink, once: the write transform, the reader and
preflight take the object itself.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlparse

from streamtap.chunk import Chunk
from streamtap.config import PipelineConfig, SinkConfig, doc, range_errors
from streamtap.config.capacity import Figure, StreamLoad
from streamtap.errors import RunError, Unreachable
from streamtap.io.sinks.kinesis.client import describe_error, error_code, is_retriable, make_client
from streamtap.io.sinks.kinesis.plan import kinesis_figures
from streamtap.io.sinks.kinesis.read import parse_location, read_kinesis_chunks, stream_ends
from streamtap.io.sinks.kinesis.write import MAX_RECORD_BYTES, WriteChunksToKinesis

__all__ = ["RECORD_OVERHEAD", "KinesisSink"]

log = logging.getLogger(__name__)

# Envelope header (40 bytes), its JSON block (stream id, session id, tags) and the partition key
# (the stream id, up to 128 bytes), on top of the payload. Generous: without tags it is ~150
# bytes; ICY titles and user tags make up the rest. The writer checks every real record too.
RECORD_OVERHEAD = 1024

_STREAM_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_REGION = re.compile(r"[a-z]{2,}(-[a-z]+)+-[0-9]{1,2}")
# Default for read.per_stream_metrics: per-stream counters up to this many streams (as ReadStreams).
_PER_STREAM_METRICS_UP_TO = 50


@dataclass(kw_only=True)
class KinesisSink(SinkConfig):
    """`type: kinesis`: writes every chunk as one record to a Kinesis data stream (PutRecords)."""

    type_name: ClassVar[str] = "kinesis"
    location_schemes: ClassVar[tuple[str, ...]] = ("kinesis",)
    # Seconds preflight waits for a stream it created to become active.
    create_timeout: ClassVar[float] = 120.0

    stream: str = doc("Kinesis data stream the chunks are written to.")
    region: str | None = doc(
        "AWS region, e.g. us-east-1. Default: the standard AWS chain (AWS_REGION, "
        "AWS_DEFAULT_REGION, the profile's region). Credentials always come from the chain.",
        None,
    )
    endpoint_url: str | None = doc(
        "Endpoint of a Kinesis-compatible service, e.g. http://127.0.0.1:4566 "
        "(`streamtap services up kinesis`); omit for AWS.",
        None,
    )
    create_stream: bool = doc(
        "Create the stream in `streamtap validate`/`run` preflight when it does not exist.", False
    )
    shard_count: int | None = doc(
        "Shards of a stream created by create_stream (default 1).", None, min=1, max=100_000
    )
    shards_per_stream: int = doc(
        "Spread each stream's records over this many shards (explicit hash keys) for streams "
        "faster than one shard takes (1 MB/s, 1,000 records/s); each shard keeps the stream's "
        "order and readers restore the whole order by seq. 1: one shard per stream (by its "
        "partition key).",
        1,
        min=1,
        max=1000,
    )
    shard_bytes_per_second: int = doc(
        "The rate limiter keeps the writes to each shard under this many bytes per second "
        "(Kinesis takes 1 MB/s per shard).",
        1000000,
        min=1,
        max=10**12,
    )
    shard_records_per_second: int = doc(
        "The rate limiter keeps the writes to each shard under this many records per second "
        "(Kinesis takes 1,000 per shard).",
        1000,
        min=1,
        max=10**9,
    )
    max_retry_seconds: float = doc(
        "How long a record may keep failing (throttled, internal errors, endpoint unreachable) "
        "before the writer fails the bundle so the runner retries it; nothing is dropped.",
        300.0,
        min=1,
        max=86400,
    )

    # -- checks without I/O --

    def validate(self, path: str) -> list[str]:
        # The loader checks the declared ranges too; this covers sinks built in code.
        errors = range_errors(self, path)
        if not _STREAM_NAME.fullmatch(self.stream or ""):
            errors.append(
                f"{path}.stream: {self.stream!r} is not a valid Kinesis stream name; use 1-128 "
                "letters, digits, '.', '_' or '-'"
            )
        if self.region is not None and not _REGION.fullmatch(self.region):
            errors.append(
                f"{path}.region: {self.region!r} is not an AWS region name like us-east-1 "
                "(omit it to take the region from the AWS chain)"
            )
        if self.endpoint_url is not None:
            parsed = urlparse(self.endpoint_url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                errors.append(
                    f"{path}.endpoint_url: {self.endpoint_url!r} is not an http:// or https:// "
                    "URL, e.g. http://127.0.0.1:4566"
                )
        if self.shard_count is not None and not self.create_stream:
            errors.append(
                f"{path}.shard_count: only used when the sink creates the stream; set "
                f"{path}.create_stream: true or remove shard_count"
            )
        return errors

    def check_chunk_size(self, max_chunk_bytes: int, path: str) -> list[str]:
        needed = max_chunk_bytes + RECORD_OVERHEAD
        if needed <= MAX_RECORD_BYTES:
            return []
        return [
            (
                f"chunk.max_bytes: chunks of up to {max_chunk_bytes} bytes plus up to {RECORD_OVERHEAD} "
                f"bytes of record envelope and partition key make Kinesis records of up to {needed} "
                f"bytes, over Kinesis' {MAX_RECORD_BYTES}-byte (1 MiB) record limit ({path}): lower "
                f"chunk.max_bytes to at most {MAX_RECORD_BYTES - RECORD_OVERHEAD}"
            )
        ]

    def rate_warnings(self, config: PipelineConfig, open_shards: int | None = None) -> list[str]:
        """Streams likely faster than the shards they go to take; each with the remedy. No I/O.

        A stream's rate is what its source declares (expected_rate; synthetic sources: samples/s
        x sample size); its
        record rate is at least one per chunk.max_seconds while it flows, more when chunks fill
        up first (rate / chunk.max_bytes).
        """
        path = _sink_path(config, self)
        spread = (
            self.shards_per_stream
            if open_shards is None
            else min(self.shards_per_stream, max(open_shards, 1))
        )
        warnings = []
        for index, source in enumerate(config.sources):
            declared = source.declared_rate()
            rate = None if declared is None else declared[0]
            records = 1 / config.chunk.max_seconds
            if rate is not None:
                records = max(records, rate / config.chunk.max_bytes)
            over_bytes = rate is not None and rate > spread * self.shard_bytes_per_second
            over_records = records > spread * self.shard_records_per_second
            if not (over_bytes or over_records):
                continue
            needed = math.ceil(
                max(
                    (rate or 0) / self.shard_bytes_per_second,
                    records / self.shard_records_per_second,
                )
            )
            what = f"{rate / 1e6:.2f} MB/s in " if rate is not None else ""
            fix = (
                f"set {path}.shards_per_stream: {needed} (on a stream of at least {needed} shards)"
            )
            if over_records:
                fix += " or raise chunk.max_seconds / chunk.max_bytes to send fewer, larger records"
            warnings.append(
                f"{path}: stream {source.id!r} (sources[{index}]) sends about {what}"
                f"{records:.0f} records/s, more than {spread} shard(s) take "
                f"({spread * self.shard_bytes_per_second / 1e6:g} MB/s, "
                f"{spread * self.shard_records_per_second} records/s): the rate limiter holds it "
                f"back and it falls behind; {fix}"
            )
        return warnings

    def plan(self, loads: list[StreamLoad], config: PipelineConfig) -> list[Figure]:
        return kinesis_figures(self, loads)

    # -- with I/O --

    def preflight(self, config: PipelineConfig) -> list[str]:
        path = _sink_path(config, self)
        where = self.endpoint_url or "AWS"
        try:
            client = make_client(self.region, self.endpoint_url)
        except ValueError as error:
            return [f"{path}.region: {error}"]
        try:
            summary = _summary(client, self.stream)
            if summary is None:
                if not self.create_stream:
                    return [
                        (
                            f"{path}.stream: Kinesis stream {self.stream!r} does not exist at {where}: "
                            f"create it (aws kinesis create-stream --stream-name {self.stream} "
                            f"--shard-count N), or set {path}.create_stream: true"
                        )
                    ]
                client.create_stream(StreamName=self.stream, ShardCount=self.shard_count or 1)
                log.info("created Kinesis stream %s at %s", self.stream, where)
                summary = _summary(client, self.stream)
            if summary is not None and summary.get("StreamStatus") == "CREATING":
                client.get_waiter("stream_exists").wait(
                    StreamName=self.stream,
                    WaiterConfig={"Delay": 1, "MaxAttempts": int(self.create_timeout)},
                )
                summary = _summary(client, self.stream)
        except Exception as error:  # noqa: BLE001 - sorted out below
            from botocore.exceptions import ClientError

            text = describe_error(error, self.stream, where)
            if is_retriable(error) and not isinstance(error, ClientError):
                return [
                    Unreachable(f"{path}: {text}: is it running? (streamtap services up kinesis)")
                ]
            return [f"{path}: {text}"]
        if summary is None or summary.get("StreamStatus") == "DELETING":
            return [f"{path}.stream: Kinesis stream {self.stream!r} at {where} is being deleted"]
        open_shards = int(summary.get("OpenShardCount") or 0)
        if self.shards_per_stream > open_shards:
            log.warning(
                "%s.shards_per_stream: %d, but Kinesis stream %r has %d open shard(s): a stream's "
                "records land on at most that many; add shards (aws kinesis update-shard-count)",
                path,
                self.shards_per_stream,
                self.stream,
                open_shards,
            )
        for warning in self.rate_warnings(config, open_shards):
            log.warning("%s", warning)
        return []

    def resume_positions(self, stream_ids: list[str]) -> dict[str, tuple[int, int]]:
        where = self.endpoint_url or "AWS"
        try:
            client = make_client(self.region, self.endpoint_url)
            if _summary(client, self.stream) is None:
                return {}
            return stream_ends(self.stream, stream_ids, client=client)
        except Exception as error:  # noqa: BLE001 - a run must not start at seq 0 by mistake
            text = (
                describe_error(error, self.stream, where)
                if not isinstance(error, (ValueError, ConnectionError))
                else str(error)
            )
            raise RunError(
                f"cannot read Kinesis stream {self.stream!r} at {where} to continue its capture "
                f"({text}); fix that, or set resume: false to start every stream at seq 0 "
                "(verify then reports the two runs' chunks with equal seq as duplicates)"
            ) from None

    @classmethod
    def read_location(cls, location: str, stream_id: str | None = None) -> Iterator[Chunk]:
        """Reads `kinesis://STREAM?region=REGION&endpoint_url=URL`."""
        stream, region, endpoint_url = parse_location(location)
        return read_kinesis_chunks(
            stream, region=region, endpoint_url=endpoint_url, stream_id=stream_id
        )

    def transform(self, config: PipelineConfig) -> WriteChunksToKinesis:
        per_stream = config.read.per_stream_metrics
        if per_stream is None:
            per_stream = len(config.sources) <= _PER_STREAM_METRICS_UP_TO
        return WriteChunksToKinesis(self, per_stream_metrics=per_stream)


def _summary(client, stream: str) -> dict[str, Any] | None:
    """DescribeStreamSummary of the stream; None if it does not exist."""
    try:
        return client.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    except Exception as error:
        if error_code(error) == "ResourceNotFoundException":
            return None
        raise


def _sink_path(config: PipelineConfig, sink: SinkConfig) -> str:
    for index, candidate in enumerate(config.sinks):
        if candidate is sink:
            return f"sinks[{index}]"
    return "kinesis sink"
