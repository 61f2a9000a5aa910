"""WriteChunksToKinesis against the real moto endpoint, directly and through the fault proxy."""

from __future__ import annotations

import random

import apache_beam as beam
import pytest

from streamtap.chunk import Chunk, make_chunk
from streamtap.io.sinks.kinesis import KinesisSink, WriteChunksToKinesis, read_kinesis_chunks
from streamtap.io.sinks.kinesis.shards import HASH_SPACE
from tests.fixtures.kinesis import create_stream, kinesis_client, unique_stream

STREAMS = ("radio1", "radio2", "sensor.7")


def make_chunks(count: int, sizes=(1, 7, 65536, 4096, 0x8000 + 3)) -> list[Chunk]:
    """`count` chunks of three interleaved streams, each stream contiguous from seq 0."""
    chunks = []
    offsets = dict.fromkeys(STREAMS, 0)
    for index in range(count):
        stream = STREAMS[index % len(STREAMS)]
        seq = index // len(STREAMS)
        payload = random.Random(index).randbytes(sizes[seq % len(sizes)])
        tags = {"content_type": "audio/mpeg"}
        if seq % 4 == 1:
            tags["icy_title"] = "Ünïcode — a, b=c;d"
        chunks.append(
            make_chunk(
                stream,
                f"session-{stream}",
                seq,
                offsets[stream],
                payload,
                1_796_000_000.0 + index / 7,
                discontinuity=(seq == 0),
                tags=tags,
            )
        )
        offsets[stream] += len(payload)
    return chunks


def write(chunks: list[Chunk], sink: KinesisSink) -> None:
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        _ = pipeline | beam.Create(chunks) | WriteChunksToKinesis(sink)


def records_by_shard(endpoint_url: str, stream: str) -> dict[str, list[Chunk]]:
    chunks_by_shard: dict[str, list[Chunk]] = {}
    client = kinesis_client(endpoint_url)
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        iterator = client.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records = client.get_records(ShardIterator=iterator, Limit=10000)["Records"]
        from streamtap.io.sinks.kinesis.envelope import decode

        chunks_by_shard[shard["ShardId"]] = [decode(record["Data"]) for record in records]
    return chunks_by_shard


def assert_each_shard_in_seq_order(by_shard: dict[str, list[Chunk]]) -> None:
    """In every shard, each stream's chunks appear (first copies) in increasing seq."""
    for shard_id, chunks in by_shard.items():
        last: dict[str, int] = {}
        for chunk in chunks:
            if chunk.seq <= last.get(chunk.stream_id, -1):
                assert chunk.seq in {
                    c.seq for c in chunks[: chunks.index(chunk)] if c.stream_id == chunk.stream_id
                }, (
                    f"{shard_id}: {chunk.stream_id} seq {chunk.seq} after seq "
                    f"{last[chunk.stream_id]}"
                )
            last[chunk.stream_id] = max(chunk.seq, last.get(chunk.stream_id, -1))


def test_round_trip_is_byte_exact_over_several_shards(kinesis):
    stream = create_stream(kinesis.endpoint_url, unique_stream("rt"), shards=3)
    chunks = make_chunks(60)
    write(chunks, KinesisSink(stream=stream, endpoint_url=kinesis.endpoint_url))
    back = list(read_kinesis_chunks(stream, endpoint_url=kinesis.endpoint_url))
    assert back == sorted(chunks, key=lambda c: (c.stream_id, c.seq))
    by_shard = records_by_shard(kinesis.endpoint_url, stream)
    assert_each_shard_in_seq_order(by_shard)


def test_partial_failures_and_throttled_calls_lose_nothing_and_keep_order(kinesis, kinesis_faults):
    stream = create_stream(kinesis.endpoint_url, unique_stream("faults"), shards=2)
    kinesis_faults.set_faults(records=0.35, throttle=0.2, errors=0.05)
    chunks = make_chunks(90)
    write(chunks, KinesisSink(stream=stream, endpoint_url=kinesis_faults.endpoint_url))
    # The proxy failed records (never stored) and refused whole calls: the writer retried them.
    assert kinesis_faults.stats["records_failed"] > 10
    assert kinesis_faults.stats["calls_throttled"] > 0
    back = list(read_kinesis_chunks(stream, endpoint_url=kinesis.endpoint_url))
    first_copies = {chunk.key: chunk for chunk in back}
    assert sorted(first_copies.values(), key=lambda c: (c.stream_id, c.seq)) == sorted(
        chunks, key=lambda c: (c.stream_id, c.seq)
    )
    assert all(chunk == first_copies[chunk.key] for chunk in back)  # repeats are exact copies
    assert_each_shard_in_seq_order(records_by_shard(kinesis.endpoint_url, stream))


def test_a_record_failing_past_max_retry_seconds_fails_the_bundle(kinesis, kinesis_faults):
    stream = create_stream(kinesis.endpoint_url, unique_stream("giveup"))
    kinesis_faults.set_faults(throttle=1.0)
    sink = KinesisSink(stream=stream, endpoint_url=kinesis_faults.endpoint_url, max_retry_seconds=2)
    with pytest.raises(Exception, match="still not written .* max_retry_seconds=2"):
        write(make_chunks(3), sink)


def test_a_missing_stream_fails_the_bundle_with_the_fix(kinesis):
    sink = KinesisSink(stream=unique_stream("absent"), endpoint_url=kinesis.endpoint_url)
    with pytest.raises(
        Exception, match="does not exist: create it, or set the sink's create_stream"
    ):
        write(make_chunks(2), sink)


def test_a_record_over_one_mib_fails_with_the_reason(kinesis):
    stream = create_stream(kinesis.endpoint_url, unique_stream("big"))
    chunk = make_chunk("radio1", "s", 0, 0, b"x" * 1_047_000, 1.0, tags={"t": "y" * 2000})
    with pytest.raises(Exception, match="over the 1048576-byte record limit"):
        write([chunk], KinesisSink(stream=stream, endpoint_url=kinesis.endpoint_url))


def test_a_stream_spread_over_shards_lands_on_each_in_order(kinesis):
    stream = create_stream(kinesis.endpoint_url, unique_stream("spread"), shards=4)
    chunks = [c for c in make_chunks(120) if c.stream_id == "radio1"]
    write(
        chunks, KinesisSink(stream=stream, endpoint_url=kinesis.endpoint_url, shards_per_stream=4)
    )
    by_shard = records_by_shard(kinesis.endpoint_url, stream)
    assert sorted(len(found) for found in by_shard.values()) == [10, 10, 10, 10]
    for found in by_shard.values():
        assert len({chunk.seq % 4 for chunk in found}) == 1
    assert_each_shard_in_seq_order(by_shard)
    back = list(read_kinesis_chunks(stream, endpoint_url=kinesis.endpoint_url, stream_id="radio1"))
    assert b"".join(c.payload for c in back) == b"".join(c.payload for c in chunks)


def test_explicit_hash_keys_stay_in_the_hash_space():
    from streamtap.io.sinks.kinesis.shards import hash_key, partition_hash

    for spread in (1, 2, 3, 7, 1000):
        for position in range(min(spread, 10)):
            assert 0 <= hash_key("radio1", position, spread) < HASH_SPACE
    assert hash_key("radio1", 0, 1) == partition_hash("radio1")


def test_beam_counters_count_records_put_retried_and_throttled(kinesis, kinesis_faults):
    from apache_beam.metrics.metric import MetricsFilter

    stream = create_stream(kinesis.endpoint_url, unique_stream("metrics"), shards=2)
    kinesis_faults.set_faults(records=0.3, throttle=0.2)
    chunks = make_chunks(30)
    pipeline = beam.Pipeline(runner="FnApiRunner")
    _ = (
        pipeline
        | beam.Create(chunks)
        | WriteChunksToKinesis(KinesisSink(stream=stream, endpoint_url=kinesis_faults.endpoint_url))
    )
    result = pipeline.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("streamtap"))["counters"]
    }
    assert counters["kinesis.records_put"] == len(chunks)  # no timeouts here: no repeats
    assert counters["kinesis.bytes_put"] == sum(len(c.payload) for c in chunks)
    assert counters["kinesis.records_retried"] >= counters["kinesis.records_throttled"] > 0
    assert counters["radio1.kinesis.records_put"] == 10
