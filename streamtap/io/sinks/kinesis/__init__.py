"""The Kinesis sink: a chunk per record in a versioned envelope, PutRecords within every limit.

config.py (KinesisSink: settings, checks, preflight, resume), envelope.py (the record format),
write.py (WriteChunksToKinesis), ratelimit.py (per-shard limiter), shards.py (hash keys, shard
map), read.py (verify / reassemble / resume read-back), client.py (boto3).
"""

from streamtap.io.sinks.kinesis.config import KinesisSink
from streamtap.io.sinks.kinesis.envelope import decode, encode
from streamtap.io.sinks.kinesis.read import read_kinesis_chunks
from streamtap.io.sinks.kinesis.write import WriteChunksToKinesis

__all__ = ["KinesisSink", "WriteChunksToKinesis", "decode", "encode", "read_kinesis_chunks"]
