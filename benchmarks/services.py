"""The real services scenarios run against, in a throw-away state directory, always stopped."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from streamtap.services.icecast import IcecastService
from streamtap.services.kafka import KafkaService
from streamtap.services.process import free_port

__all__ = ["icecast", "kafka", "state_root", "create_topic", "topic_bytes"]

_ROOT: Path | None = None


def state_root() -> Path:
    """One temporary directory per benchmark run for service state and capture output."""
    global _ROOT
    if _ROOT is None:
        _ROOT = Path(tempfile.mkdtemp(prefix="streamtap-bench-"))
    return _ROOT


def cleanup() -> None:
    global _ROOT
    if _ROOT is not None:
        shutil.rmtree(_ROOT, ignore_errors=True)
        _ROOT = None


@contextlib.contextmanager
def icecast(mounts: int, listeners: int, bitrate: str = "128k") -> Iterator[IcecastService]:
    """An Icecast station with `mounts` live MP3 mounts, room for `listeners` listeners."""
    directory = Path(tempfile.mkdtemp(prefix="icecast-", dir=state_root()))
    service = IcecastService(state_dir=directory, port=free_port(), mounts=mounts,
                             bitrate=bitrate, max_clients=listeners + 100)
    try:
        service.up()
        yield service
    finally:
        service.down()
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def kafka() -> Iterator[KafkaService]:
    """One Kafka broker (KRaft) on free ports; its data is deleted afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="kafka-", dir=state_root()))
    port = free_port()
    service = KafkaService(state_dir=directory, brokers=1, port=port, controller_port=free_port())
    try:
        service.up()
        yield service
    finally:
        service.down()
        shutil.rmtree(directory, ignore_errors=True)


def create_topic(bootstrap_servers: str, topic: str, partitions: int = 1) -> str:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="streamtap-bench")
    try:
        admin.create_topics(
            {topic: {"num_partitions": partitions, "replication_factor": 1}},
            wait_for_metadata=True,
        )
    finally:
        admin.close()
    return topic


def topic_bytes(bootstrap_servers: str, topic: str, timeout: float = 120.0) -> dict:
    """Records and value bytes in a topic, counted by kcat (C, fast) or kafka-python."""
    import subprocess

    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat:
        out = subprocess.run(
            [kcat, "-C", "-b", bootstrap_servers, "-t", topic, "-e", "-q", "-f", "%S %k\n"],
            capture_output=True, text=True, timeout=timeout, check=True,
        ).stdout
        records = 0
        total = 0
        keys = set()
        for line in out.splitlines():
            size, _, key = line.partition(" ")
            if size.lstrip("-").isdigit():
                records += 1
                total += max(int(size), 0)
                keys.add(key)
        return {"records": records, "bytes": total, "keys": len(keys)}
    raise RuntimeError("kcat is needed to count a topic's bytes (apt-get install kcat)")
