"""What a capture's streams need of a Kafka topic (`streamtap plan`): KafkaSink.plan.

No I/O: the figures come from the streams' rates, the chunk settings and the sink's options;
`preflight` checks the live topic (its partitions' leaders, max.message.bytes).
"""

from __future__ import annotations

from streamtap.config import PipelineConfig
from streamtap.config.capacity import Figure, StreamLoad, ceil_div
from streamtap.io.sinks.kafka.record import RECORD_OVERHEAD

__all__ = ["PARTITION_BYTES_PER_SECOND", "plan_topic"]

# The producer rate to plan per partition: a tenth of what one partition took from this sink in
# BENCHMARKS.md scenario 3 (~100 MB/s of 64 KiB records, acks=all, one broker), leaving room for
# replication to other brokers, consumers reading the partition, and the cluster's other topics.
PARTITION_BYTES_PER_SECOND = 10_000_000
# What one partition took in that benchmark: a single stream (one key, one partition) above it
# cannot be captured into Kafka at its rate.
_MEASURED_PARTITION_BYTES_PER_SECOND = 100_000_000
# Kafka's default message.max.bytes (broker) and max.message.bytes (topic).
_DEFAULT_MESSAGE_MAX_BYTES = 1_048_588
_PLANNING_BASIS = (
    "10 MB/s per partition: a tenth of the ~100 MB/s one partition took from this sink in "
    "BENCHMARKS.md scenario 3, for replication, consumers and other topics"
)


def plan_topic(sink, loads: list[StreamLoad], config: PipelineConfig) -> list[Figure]:
    """Records and bytes per second, partitions, and the largest record against the limits."""
    total_rate = sum(load.rate for load in loads)
    records = sum(load.chunks_per_second for load in loads)
    needed = max(1, ceil_div(total_rate, PARTITION_BYTES_PER_SECOND))
    figures = [
        Figure("", "records per second", records, "records/s", "one record per chunk"),
        Figure("", "payload bytes per second", total_rate, "B/s",
               "sum of the streams' rates; key and headers add ~200 B per record"),
        Figure("", "partitions needed", needed, "partitions",
               f"{total_rate / 1e6:,.2f} MB/s at {_PLANNING_BASIS}",
               problem=_partitions_problem(sink, needed)),
        Figure("", "partitions for one stream each", len(config.sources), "partitions",
               "a stream's key keeps it in one partition, in order; with at least one partition "
               "per stream, consumers can read that many streams in parallel (keys hash, so "
               "some partitions still get two); fewer partitions only mix streams"),
    ]
    if loads:
        busiest = max(loads, key=lambda load: load.rate)
        problem = ""
        if busiest.rate > _MEASURED_PARTITION_BYTES_PER_SECOND:
            problem = (
                f"{busiest.stream_id} alone is more than one partition took in BENCHMARKS.md "
                "(~100 MB/s), and one stream cannot spread over partitions (its key): capture "
                "it to Parquet, or to Kinesis with shards_per_stream"
            )
        figures.append(Figure("", f"busiest stream ({busiest.stream_id})", busiest.rate, "B/s",
                              "one partition carries it all", problem=problem))
    figures.append(_record_size(sink, config.chunk.max_bytes))
    return figures


def _partitions_problem(sink, needed: int) -> str:
    if sink.create_topic and sink.partitions is not None and sink.partitions < needed:
        return (
            f"partitions: {sink.partitions} is fewer than the {needed} these rates need; "
            f"set partitions: {needed}"
        )
    return ""


def _record_size(sink, max_chunk_bytes: int) -> Figure:
    largest = max_chunk_bytes + RECORD_OVERHEAD
    problem = ""
    if largest > sink.max_request_size:
        problem = (
            f"above max_request_size ({sink.max_request_size:,}): lower chunk.max_bytes to at most "
            f"{sink.max_request_size - RECORD_OVERHEAD:,} or raise max_request_size to {largest:,}"
        )
    elif largest > _DEFAULT_MESSAGE_MAX_BYTES:
        problem = (
            f"above Kafka's default message.max.bytes ({_DEFAULT_MESSAGE_MAX_BYTES:,}): raise the "
            f"topic's max.message.bytes to at least {largest:,} (preflight checks it) or lower "
            f"chunk.max_bytes to at most {_DEFAULT_MESSAGE_MAX_BYTES - RECORD_OVERHEAD:,}"
        )
    return Figure(
        "", "largest record", largest, "B",
        f"chunk.max_bytes {max_chunk_bytes:,} + {RECORD_OVERHEAD:,} B of key and headers; limits: "
        f"max_request_size {sink.max_request_size:,}, the broker's message.max.bytes (Kafka's "
        f"default {_DEFAULT_MESSAGE_MAX_BYTES:,}; preflight reads the live topic's)",
        problem=problem,
    )
