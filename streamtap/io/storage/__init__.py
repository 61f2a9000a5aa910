"""One interface over where captures are stored: local disk, HDFS (`hdfs://`) and S3 (`s3://`).

`open_storage(location)` returns a `Storage` rooted at a directory or prefix; every path it takes
is relative to that root, "/"-separated. What it guarantees on every backend:

- **Atomic publish.** `open_write(path)` returns a `WritableFile` that nobody sees under `path`
  until `publish()`; then the whole file appears at once (replacing a file of that name), or,
  if publish fails, nothing does. Local disk and HDFS write a hidden temporary name in the final
  directory (".<name>.tmp-<8 hex>") and rename it; local disk fsyncs before the rename. S3
  writes one PUT, or a multipart upload that is completed only by `publish()`. `abort()`, or
  leaving the `with` block without publishing, discards the file.
- **Leftovers are never data.** `list()` skips hidden names (starting with "." or "_": Spark,
  Hive and pyarrow skip them too), so a temporary left by a crashed writer is never listed;
  `cleanup()` removes temporaries (and aborts S3 multipart uploads) older than a given age.
- **Bounded retries, clear errors.** A store that goes away briefly (an HDFS NameNode restart,
  an S3 endpoint returning 503) is retried for up to `retry_seconds` (default 60) before the
  operation fails with StorageError. `check()` fails at once on a store that cannot be reached,
  naming the address and what to do: call it before a capture starts.

A Storage opens its client lazily and pickles without it, so a DoFn can carry one and use it in
`setup()` on a worker. Nothing here imports Beam.
"""

from __future__ import annotations

from streamtap.io.storage.base import (
    DEFAULT_CLEANUP_AGE,
    DEFAULT_RETRY_SECONDS,
    FileInfo,
    Storage,
    StorageError,
    WritableFile,
    is_hidden,
    is_temporary,
    temporary_path,
)

__all__ = [
    "DEFAULT_CLEANUP_AGE",
    "DEFAULT_RETRY_SECONDS",
    "FileInfo",
    "Storage",
    "StorageError",
    "WritableFile",
    "is_hidden",
    "is_temporary",
    "open_storage",
    "temporary_path",
]


def open_storage(
    location: str,
    endpoint_url: str | None = None,
    retry_seconds: float = DEFAULT_RETRY_SECONDS,
) -> Storage:
    """The Storage for `location`: a local path or file:// URL, hdfs://host:port/path, s3://b/p.

    Args:
      location: where the files go. S3 may carry `?endpoint_url=http://host:port`.
      endpoint_url: S3-compatible endpoint (overrides the URL's and AWS_ENDPOINT_URL[_S3]).
      retry_seconds: how long an operation is retried while the store is unreachable.
    """
    scheme = location.split("://", 1)[0].lower() if "://" in location else "file"
    if scheme == "file":
        from streamtap.io.storage.local import LocalStorage

        return LocalStorage(location, retry_seconds=retry_seconds)
    if scheme == "hdfs":
        from streamtap.io.storage.hdfs import HdfsStorage

        return HdfsStorage(location, retry_seconds=retry_seconds)
    if scheme in ("s3", "s3a"):
        from streamtap.io.storage.s3 import S3Storage

        return S3Storage(location, endpoint_url=endpoint_url, retry_seconds=retry_seconds)
    raise ValueError(
        f"unsupported storage location {location!r}: use a local path, hdfs://host:port/path "
        "or s3://bucket/prefix"
    )
