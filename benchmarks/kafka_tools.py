"""Kafka's own load generator, `org.apache.kafka.tools.ProducerPerformance`, for scenario 3.

The broker jars that streamtap.services.kafka caches (`ensure_jars`) have no kafka-tools jar, so
this fetches `org.apache.kafka:kafka-tools:<same version>` and its runtime dependencies from Maven
Central the same way (mvn dependency:copy-dependencies on a small pom) into a separate cache
directory, `cache_dir()/bench-kafka-tools-<version>`, leaving the service's cache untouched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from streamtap.services import process
from streamtap.services.kafka import KAFKA_VERSION, ensure_jars

__all__ = ["ensure_tools_jars", "producer_performance"]

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>streamtap</groupId>
  <artifactId>bench-kafka-tools</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>{kafka}</version>
    </dependency>
  </dependencies>
</project>
"""

# "4000 records sent, 1234.5 records/sec (77.16 MB/sec), 12.3 ms avg latency, ..."
_SUMMARY = re.compile(
    r"(?P<records>\d+) records sent, (?P<rps>[\d.]+) records/sec \((?P<mbps>[\d.]+) MB/sec\), "
    r"(?P<avg>[\d.]+) ms avg latency, (?P<max>[\d.]+) ms max latency"
)


def ensure_tools_jars(version: str = KAFKA_VERSION) -> Path:
    target = process.cache_dir() / f"bench-kafka-tools-{version}"
    if target.is_dir() and any(target.glob("kafka-tools-*.jar")):
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("Maven is needed to fetch kafka-tools (apt-get install maven)")
    with tempfile.TemporaryDirectory(prefix=".bench-kafka-tools-", dir=target.parent) as tmp:
        work = Path(tmp)
        (work / "pom.xml").write_text(_POM.format(kafka=version))
        result = subprocess.run(
            [mvn, "-B", "-q", "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={work / 'jars'}"],
            cwd=work, capture_output=True, text=True, timeout=900, check=False,
        )
        if result.returncode != 0 or not any((work / "jars").glob("kafka-tools-*.jar")):
            raise RuntimeError(f"fetching kafka-tools {version} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        shutil.rmtree(target, ignore_errors=True)
        os.rename(work / "jars", target)
    return target


def producer_performance(bootstrap_servers: str, topic: str, records: int, record_bytes: int,
                         extra_props: tuple[str, ...] = (), timeout: float = 600) -> dict:
    """Runs ProducerPerformance (acks=all, unthrottled); returns its summary numbers.

    extra_props: more producer properties (key=value), e.g. streamtap's batch.size.
    """
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java not found")
    classpath = f"{ensure_jars()}/*:{ensure_tools_jars()}/*"
    command = [
        java, "-Xmx512m", "-cp", classpath, "org.apache.kafka.tools.ProducerPerformance",
        "--topic", topic, "--num-records", str(records), "--record-size", str(record_bytes),
        "--throughput", "-1",
        "--producer-props", f"bootstrap.servers={bootstrap_servers}", "acks=all", *extra_props,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    matches = list(_SUMMARY.finditer(result.stdout))
    if result.returncode != 0 or not matches:
        raise RuntimeError(f"ProducerPerformance failed ({result.returncode}):\n{result.stdout[-1500:]}\n{result.stderr[-1500:]}")
    last = matches[-1]
    return {
        "records": int(last.group("records")),
        "records_per_s": float(last.group("rps")),
        "mb_per_s_kafka": float(last.group("mbps")),  # Kafka prints MiB/s (bytes / 1024 / 1024)
        "mb_per_s": round(float(last.group("rps")) * record_bytes / 1e6, 1),
        "avg_latency_ms": float(last.group("avg")),
        "max_latency_ms": float(last.group("max")),
        "command": " ".join(command[:3] + ["'<kafka jars>/*:<kafka-tools jars>/*'"] + command[4:]),
    }
