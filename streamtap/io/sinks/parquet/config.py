"""`type: parquet`: the ParquetSink config, where every option of the Parquet sink lives.

ParquetSink is the plug-in (plugins.py): `validate` checks values without I/O, `plan` computes
bytes and files a day (plan.py), `preflight` checks the directory can be written and removes
stale temporary files a dead writer left (storage.py), `resume_positions` and `read_location`
read the capture back (read.py), and `transform` hands the object to `WriteChunksToParquet`
(write.py). `path` is a local directory, `hdfs://host:port/path` or `s3://bucket/prefix`
(through `streamtap.io.storage`; on remote storage preflight is the store's `check()`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterable

from streamtap.chunk import Chunk
from streamtap.config import PipelineConfig, SinkConfig, doc
from streamtap.config.capacity import Figure, StreamLoad
from streamtap.io.sinks.parquet.format import COMPRESSIONS
from streamtap.io.sinks.parquet.plan import plan_files
from streamtap.io.sinks.parquet.read import capture_ends, layouts_in, read_parquet_chunks
from streamtap.io.sinks.parquet.storage import (
    is_remote,
    remote_root,
    remove_stale_temporaries,
    split_location,
)
from streamtap.io.sinks.parquet.write import FILE_MODES, LAYOUTS, WriteChunksToParquet
from streamtap.io.storage import StorageError

__all__ = ["ParquetSink"]


@dataclass(kw_only=True)
class ParquetSink(SinkConfig):
    """`type: parquet`: files per event-time window (and stream, or of many streams) in a local
    directory, on HDFS or on S3."""

    type_name: ClassVar[str] = "parquet"
    location_schemes: ClassVar[tuple[str, ...]] = ("", "hdfs", "s3")

    path: str = doc(
        "Directory the capture is written to (created if missing): a local path, "
        "hdfs://<NameNode host>:<port>/<path> or s3://<bucket>/<prefix>.",
        "",
    )
    endpoint_url: str | None = doc(
        "Endpoint of an S3-compatible store for an s3:// path, e.g. http://127.0.0.1:9000 "
        "(MinIO); omit for AWS (or set AWS_ENDPOINT_URL). Credentials always come from the AWS "
        "chain.",
        None,
    )
    compression: str = doc(
        "Parquet codec: none, snappy, zstd, gzip or lz4. zstd saves space on sensor data; "
        "compressed audio does not shrink.",
        "zstd",
    )
    layout: str = doc(
        "'per_stream': a directory per stream, stream=<id>/date=<day>/, and a file per stream "
        "and window. 'many_streams': date=<day>/ only, each window's chunks of every stream "
        "in files of about target_file_size, sorted by stream and seq: far fewer files for "
        "many slow streams (1,000 radio streams, 10 s windows: 720 files an hour instead of "
        "360,000), at the cost of a reader of one stream reading past the others' rows.",
        "per_stream",
    )
    target_file_size: int = doc(
        "Payload bytes a file is closed at (e.g. 128MiB): a window's many_streams files are "
        "cut into files of about equal size up to this; a per_stream file of a fast stream is "
        "closed at it and the window goes on in a new file.",
        128 * 2**20,
        min=64 * 2**10,
        max=16 * 2**30,
    )
    files: str = doc(
        "How chunks are grouped into files (per_stream: of a stream; many_streams: of every "
        "stream the bundle or window holds). 'auto': when every sink of the capture is Parquet "
        "with files: auto, streams hand their chunks over a whole window at a time and each "
        "stream's window is written as it leaves the reading step, without a shuffle: one file "
        "per window and stream (several for a stream faster than ~32 MiB per window); with "
        "other sinks too, as per_window. 'per_window': one file per window and stream, after "
        "a GroupByKey (plus one per late pane).",
        "auto",
    )
    max_retry_seconds: float = doc(
        "How long a write that finds the disk full (or the quota used up), or HDFS or S3 "
        "unreachable, is retried, with backoff, before the bundle fails with one line saying "
        "so; the files written stay complete, and a new run continues after them.",
        300.0,
        min=0,
        max=86400,
    )

    def validate(self, path: str) -> list[str]:
        errors = []
        if not self.path:
            errors.append(f"{path}.path: required: the directory to write the capture to")
        elif "://" in self.path:
            scheme = self.path.split("://", 1)[0].lower()
            if scheme not in ("hdfs", "s3"):
                errors.append(
                    f"{path}.path: {self.path!r}: use a local path, hdfs://host:port/path or "
                    "s3://bucket/prefix"
                )
            elif scheme == "hdfs" and not self.path.split("://", 1)[1].split("/", 1)[0]:
                errors.append(
                    f"{path}.path: {self.path!r}: name the NameNode, e.g. "
                    "hdfs://127.0.0.1:9000/streamtap/raw"
                )
        if self.endpoint_url is not None and not self.path.startswith("s3://"):
            errors.append(
                f"{path}.endpoint_url: only for an s3:// path (got path {self.path!r})"
            )
        if self.compression not in COMPRESSIONS:
            errors.append(
                f"{path}.compression: must be one of {', '.join(COMPRESSIONS)}, "
                f"got {self.compression!r}"
            )
        if self.layout not in LAYOUTS:
            errors.append(
                f"{path}.layout: must be one of {', '.join(LAYOUTS)}, got {self.layout!r}"
            )
        if self.files not in FILE_MODES:
            errors.append(
                f"{path}.files: must be one of {', '.join(FILE_MODES)}, got {self.files!r}"
            )
        return errors

    def preflight(self, config: PipelineConfig) -> list[str]:
        if is_remote(self.path):
            root, endpoint = split_location(self.path, self.endpoint_url)
            storage = remote_root(root, endpoint)
            try:
                storage.check()
                remove_stale_temporaries(root)
                return self._other_layout(root)
            except StorageError as error:
                return [f"parquet sink: {error}"]
        try:
            Path(self.path).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            return [f"parquet sink: cannot create {self.path}: {error.strerror}"]
        if not os.access(self.path, os.W_OK):
            return [f"parquet sink: {self.path} is not writable"]
        remove_stale_temporaries(self.path)
        return self._other_layout(self.path)

    def _other_layout(self, location: str) -> list[str]:
        """One layout per directory: Spark and DuckDB refuse a directory holding both (their
        partition columns differ), so a capture is not written into the other one's."""
        others = layouts_in(location) - {self.layout}
        if not others:
            return []
        other = others.pop()
        return [
            f"parquet sink: {self.path} holds a capture in the {other} layout; write layout: "
            f"{self.layout} to another path (or set layout: {other}): Spark and DuckDB cannot "
            "read one directory holding both layouts"
        ]

    def resume_positions(self, stream_ids: list[str]) -> dict[str, tuple[int, int]]:
        location = self.path
        if is_remote(self.path):
            root, endpoint = split_location(self.path, self.endpoint_url)
            remote_root(root, endpoint)
            location = root
        elif not Path(self.path).is_dir():
            return {}
        return capture_ends(location, stream_ids)

    def plan(self, loads: list[StreamLoad], config: PipelineConfig) -> list[Figure]:
        return plan_files(self, loads, config)

    def wants_whole_windows(self) -> bool:
        return self.files == "auto"

    @classmethod
    def read_location(cls, location: str, stream_id: str | None = None) -> Iterable[Chunk]:
        return read_parquet_chunks(location, stream_id)

    def transform(self, config: PipelineConfig) -> WriteChunksToParquet:
        return WriteChunksToParquet(self, whole_windows=config.releases_whole_windows())
