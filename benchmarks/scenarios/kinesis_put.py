"""Scenario 7: streamtap's Kinesis sink vs a plain boto3 PutRecords loop, on one moto endpoint.

One moto server (`streamtap services up kinesis`, a separate process) on a free port; per
repeat, each contender writes the same records (`records` x `record_bytes`, spread over
`streams` partition keys) into a fresh stream of `shards` shards:

1. plain: a boto3 loop that fills PutRecords calls up to 500 records / 5 MiB and sends them one
   after the other, payloads as they are, no envelope, no retries (what a hand-written producer
   does when nothing fails). Timed from the first call to the last answer.
2. sink: `Impulse | FlatMap(make the chunks) | WriteChunksToKinesis` on the FnApiRunner in this
   process: chunks made (CRC-32C), envelopes, one record per stream per call (order), counters
   (the plain loop gets its payloads ready-made). Its per-shard rate
   limiter is lifted (moto has no shard limits, and the plain loop has no limiter), so both
   measure what they cost, not Kinesis' 1 MB/s per shard. Timed (wall and CPU) from the first
   generated chunk to the end of the pipeline; construction and runner start-up left out.
3. For information: the sink with its default limits (1 MB/s and 1,000 records/s per shard).

CPU is this process's user+system time over each contender's run (the endpoint's own CPU, in
its own process, is reported beside it); "CPU per byte" is that over the payload bytes written.
Both contenders' bytes are read back from the stream and compared with what was sent.
"""

from __future__ import annotations

import resource
import time
import uuid
from pathlib import Path

import apache_beam as beam
import numpy as np
import psutil

from benchmarks.measure import load_average, median

NAME = "kinesis_put"
_FIRST: dict[str, float] = {}


def _payloads(records: int, size: int) -> list[bytes]:
    block = np.random.default_rng(7).bytes(size * 16)
    return [block[(i % 16) * size : (i % 16 + 1) * size] for i in range(records)]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _stream(client, shards: int) -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    client.create_stream(StreamName=name, ShardCount=shards)
    client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 1})
    return name


def plain_loop(client, stream: str, payloads: list[bytes], streams: int) -> dict:
    """Full PutRecords calls, one after the other; failed records would be lost (none fail)."""
    started, cpu = time.perf_counter(), _cpu()
    batch, batch_bytes, calls, failed = [], 0, 0, 0
    for index, payload in enumerate(payloads):
        key = f"stream{index % streams}"
        size = len(payload) + len(key)
        if len(batch) == 500 or batch_bytes + size > 5 * 1024 * 1024:
            failed += client.put_records(StreamName=stream, Records=batch)["FailedRecordCount"]
            calls += 1
            batch, batch_bytes = [], 0
        batch.append({"Data": payload, "PartitionKey": key})
        batch_bytes += size
    if batch:
        failed += client.put_records(StreamName=stream, Records=batch)["FailedRecordCount"]
        calls += 1
    return _figures(
        time.perf_counter() - started, _cpu() - cpu, payloads, calls=calls, failed=failed
    )


def _generate(_, records: int, size: int, streams: int):
    from streamtap.chunk import make_chunk

    # Made here, not passed in: arguments of a DoFn are pickled (and compressed) with it.
    payloads = _payloads(records, size)
    if "t" not in _FIRST:
        _FIRST.update(t=time.perf_counter(), cpu=_cpu())
    offsets = [0] * streams
    for index, payload in enumerate(payloads):
        stream = index % streams
        yield make_chunk(
            f"stream{stream}",
            "0123456789abcdef",
            index // streams,
            offsets[stream],
            payload,
            time.time(),
        )
        offsets[stream] += len(payload)


def streamtap_sink(
    endpoint: str, stream: str, payloads: list[bytes], streams: int, limited: bool
) -> dict:
    from streamtap.io.sinks.kinesis import KinesisSink, WriteChunksToKinesis

    limits = (
        {} if limited else {"shard_bytes_per_second": 10**12, "shard_records_per_second": 10**9}
    )
    sink = KinesisSink(stream=stream, region="us-east-1", endpoint_url=endpoint, **limits)
    _FIRST.clear()
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        (
            pipeline
            | "Impulse" >> beam.Impulse()
            | "MakeChunks" >> beam.FlatMap(_generate, len(payloads), len(payloads[0]), streams)
            | "WriteChunksToKinesis" >> WriteChunksToKinesis(sink, per_stream_metrics=False)
        )
    # From the first chunk on: pipeline construction and runner start-up are left out.
    return _figures(time.perf_counter() - _FIRST["t"], _cpu() - _FIRST["cpu"], payloads)


def _figures(seconds: float, cpu: float, payloads: list[bytes], **extra) -> dict:
    total = sum(map(len, payloads))
    return {
        "records": len(payloads),
        "bytes": total,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "mb_per_s": round(total / seconds / 1e6, 2),
        "cpu_us_per_kb": round(cpu / total * 1e9, 3),
        **extra,
    }


def _landed(client, stream: str, decode: bool) -> list[bytes]:
    """Every record's payload in the stream, per partition key in shard order, joined."""
    from streamtap.io.sinks.kinesis import read_kinesis_chunks

    if decode:
        return sorted(chunk.payload for chunk in read_kinesis_chunks(stream, client=client))
    found = []
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        iterator = client.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            answer = client.get_records(ShardIterator=iterator, Limit=10000)
            found += [record["Data"] for record in answer["Records"]]
            iterator = answer.get("NextShardIterator") if answer["Records"] else None
    return sorted(found)


def run(cfg: dict, repeats: int, workdir: Path, log) -> dict:
    from streamtap.io.sinks.kinesis.client import make_client
    from streamtap.services.kinesis import KinesisService
    from streamtap.services.process import daemon_pid, free_port

    payloads = _payloads(cfg["records"], cfg["record_bytes"])
    expected = sorted(payloads)
    service = KinesisService(state_dir=workdir / "kinesis", port=free_port())
    service.up()
    runs = []
    try:
        endpoint = service.endpoint_url
        client = make_client("us-east-1", endpoint)
        moto = psutil.Process(daemon_pid(service.state_dir / "moto.pid"))
        for index in range(repeats):
            load = load_average()
            row: dict = {"load_average_1m": load}
            for name, write in (
                ("plain_boto3", lambda s: plain_loop(client, s, payloads, cfg["streams"])),
                (
                    "streamtap_sink",
                    lambda s: streamtap_sink(endpoint, s, payloads, cfg["streams"], limited=False),
                ),
                (
                    "streamtap_sink_default_limits",
                    lambda s: streamtap_sink(endpoint, s, payloads, cfg["streams"], limited=True),
                ),
            ):
                if name.endswith("default_limits") and not cfg.get("with_default_limits", True):
                    continue
                stream = _stream(client, cfg["shards"])
                endpoint_cpu = sum(moto.cpu_times()[:2])
                figures = write(stream)
                figures["endpoint_cpu_seconds"] = round(sum(moto.cpu_times()[:2]) - endpoint_cpu, 2)
                figures["byte_exact"] = (
                    _landed(client, stream, decode=name != "plain_boto3") == expected
                )
                row[name] = figures
            row["throughput_ratio"] = round(
                row["streamtap_sink"]["mb_per_s"] / row["plain_boto3"]["mb_per_s"], 3
            )
            row["cpu_per_byte_ratio"] = round(
                row["streamtap_sink"]["cpu_us_per_kb"] / row["plain_boto3"]["cpu_us_per_kb"], 3
            )
            log(
                f"{NAME} #{index + 1}: plain boto3 {row['plain_boto3']['mb_per_s']} MB/s "
                f"({row['plain_boto3']['cpu_us_per_kb']} CPU-µs/kB), streamtap sink "
                f"{row['streamtap_sink']['mb_per_s']} MB/s ({row['streamtap_sink']['cpu_us_per_kb']}"
                f" CPU-µs/kB), ratios {row['throughput_ratio']} / {row['cpu_per_byte_ratio']} "
                f"(load {load})"
            )
            runs.append(row)
    finally:
        service.down()
    result = {
        "runs": runs,
        "plain_mb_per_s": median([r["plain_boto3"]["mb_per_s"] for r in runs]),
        "streamtap_mb_per_s": median([r["streamtap_sink"]["mb_per_s"] for r in runs]),
        "plain_cpu_us_per_kb": median([r["plain_boto3"]["cpu_us_per_kb"] for r in runs]),
        "streamtap_cpu_us_per_kb": median([r["streamtap_sink"]["cpu_us_per_kb"] for r in runs]),
        "throughput_ratio": median([r["throughput_ratio"] for r in runs]),
        "cpu_per_byte_ratio": median([r["cpu_per_byte_ratio"] for r in runs]),
        "byte_exact": all(
            r[name]["byte_exact"] for r in runs for name in r if isinstance(r[name], dict)
        ),
    }
    result["pass"] = result["byte_exact"]
    return result
