"""The Kafka sink: one record per chunk, key = stream id, metadata in headers.

- `config.py`: KafkaSink: every option, its checks, the plug-in hooks
- `write.py`: WriteChunksToKafka: the idempotent producer, a bundle ends when all is acked
- `read.py`: read_kafka_chunks / read_location / stream_ends: a topic read back, lazily, for
  verify and reassemble, and its partitions' tails for resume
- `plan.py`: partitions, records and bytes per second, record size for `streamtap plan`
- `preflight.py`: reach the brokers, create the topic, check its limits (`streamtap validate`)
- `record.py`: the record layout both sides share
- `client.py`: opening kafka-python clients (every one goes through `open_client`)
- `compat.py`: what streamtap changes in kafka-python, installed when the first client opens
"""

from streamtap.io.sinks.kafka.config import KafkaSink
from streamtap.io.sinks.kafka.read import read_kafka_chunks
from streamtap.io.sinks.kafka.write import WriteChunksToKafka

__all__ = ["KafkaSink", "WriteChunksToKafka", "read_kafka_chunks"]
