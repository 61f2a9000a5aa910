"""Real local services (Icecast, Kafka, ...) that streamtap starts for demos and tests.

Each module exposes one class with `up()`, `down()` and `status()`; SERVICES maps the names
`streamtap services up NAME` accepts to them.
"""

from streamtap.services.flink import FlinkService
from streamtap.services.hdfs import HdfsService
from streamtap.services.icecast import IcecastService
from streamtap.services.kafka import KafkaService
from streamtap.services.kinesis import KinesisService
from streamtap.services.spark import SparkService

SERVICES = {
    service.name: service
    for service in (KafkaService, IcecastService, FlinkService, SparkService, HdfsService,
                    KinesisService)
}
