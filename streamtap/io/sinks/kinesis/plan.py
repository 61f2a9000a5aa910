"""What a capture needs of Kinesis (`streamtap plan`): bytes and records per second, and shards.

A shard takes 1 MB/s and 1,000 records/s (`shard_bytes_per_second`, `shard_records_per_second`).
Kinesis counts a record's data and its partition key, so every chunk costs its payload plus the
envelope (header and JSON block, measured by encoding one) plus the stream id. A stream goes to
one shard (or `shards_per_stream`), so one stream faster than that is a problem of its own.
"""

from __future__ import annotations

from streamtap.chunk import make_chunk
from streamtap.config.capacity import Figure, StreamLoad, ceil_div
from streamtap.io.sinks.kinesis.envelope import encode

__all__ = ["kinesis_figures", "record_overhead"]


def record_overhead(stream_id: str) -> int:
    """Bytes a chunk's record costs beyond its payload: envelope plus partition key."""
    sample = make_chunk(stream_id, "0" * 16, 0, 0, b"", 0.0)
    return len(encode(sample)) + len(stream_id.encode("utf-8"))


def kinesis_figures(sink, loads: list[StreamLoad]) -> list[Figure]:
    """The figures of `sink` (a KinesisSink) for these streams."""
    byte_rate = sum(load.rate + record_overhead(load.stream_id) * load.chunks_per_second
                    for load in loads)
    records = sum(load.chunks_per_second for load in loads)
    by_bytes = ceil_div(byte_rate, sink.shard_bytes_per_second)
    by_records = ceil_div(records, sink.shard_records_per_second)
    needed = max(by_bytes, by_records)
    per_shard = f"{sink.shard_bytes_per_second:,} B/s per shard"
    figures = [
        Figure("", "bytes per second into Kinesis", byte_rate, "B/s",
               "payloads + envelope and partition key per record"),
        Figure("", "records per second", records, "records/s", "one record per chunk"),
        Figure("", "shards by bytes", by_bytes, "shards", per_shard),
        Figure("", "shards by records", by_records, "shards",
               f"{sink.shard_records_per_second:,} records/s per shard"),
    ]
    problem = ""
    if sink.create_stream and sink.shard_count is not None and sink.shard_count < needed:
        problem = (f"shard_count is {sink.shard_count}: create the stream with {needed} shards "
                   "(or UpdateShardCount an existing one)")
    figures.append(Figure("", "shards needed", needed, "shards",
                          "the larger of shards by bytes and by records", problem))
    spread = sink.shards_per_stream
    for load in loads:
        stream_bytes = load.rate + record_overhead(load.stream_id) * load.chunks_per_second
        bytes_share = stream_bytes / (spread * sink.shard_bytes_per_second)
        records_share = load.chunks_per_second / (spread * sink.shard_records_per_second)
        if max(bytes_share, records_share) < 1:
            continue
        wanted = max(ceil_div(stream_bytes, sink.shard_bytes_per_second),
                     ceil_div(load.chunks_per_second, sink.shard_records_per_second))
        figures.append(Figure(
            "", f"stream {load.stream_id}: share of its shards", 100 * max(bytes_share, records_share),
            "%", f"{spread} shard(s) per stream (shards_per_stream)",
            f"stream {load.stream_id} alone fills its {spread} shard(s) "
            f"({load.chunks_per_second:,.0f} records/s, {stream_bytes:,.0f} B/s): set "
            f"shards_per_stream: {wanted + (wanted == spread)} or send fewer, larger records "
            "(chunk.max_bytes, chunk.max_seconds)",
        ))
    return figures
