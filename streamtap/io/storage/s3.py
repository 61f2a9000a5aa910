"""Storage on S3 or an S3-compatible store (MinIO, Ceph, moto) through boto3.

Objects appear whole or not at all, so no temporary names: a file smaller than `part_size` is one
PUT at `publish()`; a larger one is a multipart upload whose parts go up while it is written and
which `publish()` completes (`abort()` aborts it). A crashed writer leaves an incomplete upload:
never listed, invisible to readers, costing storage until `cleanup()` aborts it (or a bucket
lifecycle rule "AbortIncompleteMultipartUpload" does).

Credentials come from the AWS chain (environment, ~/.aws, instance roles). The endpoint of an
S3-compatible store is the `endpoint_url` argument, `?endpoint_url=` on the location, or the
standard AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL variables; custom endpoints get path-style
addressing (bucket in the path), which every compatible store serves.

Retries: connection failures, timeouts, 5xx and throttling answers are retried for up to
retry_seconds (botocore's own 3 attempts inside each of ours). `check()` tries once.
"""

from __future__ import annotations

import io
import os
import posixpath
import time
import urllib.parse

from streamtap.io.storage.base import (
    DEFAULT_CLEANUP_AGE,
    DEFAULT_RETRY_SECONDS,
    FileInfo,
    Storage,
    StorageError,
    WritableFile,
    check_relative,
    is_hidden,
    retrying,
)

__all__ = ["S3Storage"]

DEFAULT_PART_SIZE = 8 << 20
_MIN_PART_SIZE = 5 << 20  # S3's smallest part but the last
_TRANSIENT_CODES = {
    "500",
    "502",
    "503",
    "504",
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
}
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}


def _transient(error: BaseException) -> bool:
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(error, StorageError):
        return error.transient
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code")) in _TRANSIENT_CODES
    return isinstance(error, (ConnectionError, HTTPClientError, TimeoutError))


def _code(error: BaseException) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class _S3File(WritableFile):
    def __init__(self, storage: S3Storage, path: str):
        super().__init__(path, storage.location(path))
        self._storage = storage
        self._key = storage._key(path)
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict] = []

    def _write(self, view: memoryview) -> None:
        self._buffer += view
        part_size = self._storage.part_size
        while len(self._buffer) >= part_size:
            self._upload_part(bytes(self._buffer[:part_size]))
            del self._buffer[:part_size]

    def _upload_part(self, body: bytes) -> None:
        storage = self._storage
        if self._upload_id is None:
            self._upload_id = storage._call(
                lambda s3: s3.create_multipart_upload(Bucket=storage.bucket, Key=self._key)[
                    "UploadId"
                ],
                f"starting the upload of {self.url}",
            )
        number = len(self._parts) + 1
        answer = storage._call(
            lambda s3: s3.upload_part(
                Bucket=storage.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=body,
            ),
            f"uploading part {number} of {self.url}",
        )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def _publish(self) -> None:
        storage = self._storage
        if self._upload_id is None:
            body = bytes(self._buffer)
            storage._call(
                lambda s3: s3.put_object(Bucket=storage.bucket, Key=self._key, Body=body),
                f"writing {self.url}",
            )
            self._buffer.clear()
            return
        if self._buffer or not self._parts:
            self._upload_part(bytes(self._buffer))
            self._buffer.clear()
        parts = {"Parts": list(self._parts)}

        def complete(s3) -> None:
            try:
                s3.complete_multipart_upload(
                    Bucket=storage.bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    MultipartUpload=parts,
                )
            except Exception as error:
                # A retry whose first attempt went through (the answer was lost)?
                if _code(error) == "NoSuchUpload" and storage._size(s3, self._key) == self._written:
                    return
                raise

        storage._call(complete, f"completing the upload of {self.url}")
        self._upload_id = None

    def _discard(self) -> None:
        self._buffer.clear()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            storage = self._storage
            storage._call(
                lambda s3: s3.abort_multipart_upload(
                    Bucket=storage.bucket, Key=self._key, UploadId=upload_id
                ),
                f"aborting the upload of {self.url}",
            )


class _S3Reader(io.RawIOBase):
    """A seekable reader of one object by ranged GETs (pyarrow reads a footer, then columns)."""

    def __init__(self, storage: S3Storage, key: str, size: int):
        super().__init__()
        self._storage, self._key, self._size, self._position = storage, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readall(self) -> bytes:
        return self._get(self._size)

    def readinto(self, buffer) -> int:
        data = self._get(min(self._size, self._position + len(buffer)))
        buffer[: len(data)] = data
        return len(data)

    def _get(self, end: int) -> bytes:
        """Bytes from the position to `end` in one ranged GET; advances the position."""
        if end <= self._position:
            return b""
        storage, start = self._storage, self._position
        data = storage._call(
            lambda s3: s3.get_object(
                Bucket=storage.bucket, Key=self._key, Range=f"bytes={start}-{end - 1}"
            )["Body"].read(),
            f"reading {storage.bucket}/{self._key}",
        )
        self._position += len(data)
        return data


class S3Storage(Storage):
    """Objects under s3://bucket/prefix.

    Args:
      location: s3://<bucket>/<prefix>, optionally with ?endpoint_url=<http(s)://host:port>.
      endpoint_url: S3-compatible endpoint; overrides the location's and the environment's.
      region: AWS region; default the chain's (AWS_REGION, profile), else us-east-1.
      part_size: bytes per multipart part (>= 5 MiB); smaller files are one PUT.
      retry_seconds: how long an operation is retried while the endpoint fails or throttles.
    """

    scheme = "s3"

    def __init__(
        self,
        location: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
    ):
        parsed = urllib.parse.urlsplit(location)
        if parsed.scheme not in ("s3", "s3a") or not parsed.netloc:
            raise ValueError(f"an S3 location is s3://bucket/prefix, got {location!r}")
        if part_size < _MIN_PART_SIZE:
            raise ValueError(f"part_size must be >= {_MIN_PART_SIZE} (5 MiB), got {part_size}")
        query = urllib.parse.parse_qs(parsed.query)
        self.bucket = parsed.netloc
        self.prefix = posixpath.normpath(parsed.path).strip("/") if parsed.path.strip("/") else ""
        self.endpoint_url = (
            endpoint_url
            or (query.get("endpoint_url") or [None])[0]
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        self.region = region
        self.part_size = part_size
        root = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        super().__init__(root, retry_seconds)
        self._client = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}

    def _where(self) -> str:
        return f"{self.url} (endpoint {self.endpoint_url or 'AWS'})"

    # --- clients and errors --------------------------------------------------------------------

    def _make_client(self, attempts: int, connect_timeout: float):
        import boto3
        from botocore.config import Config

        session = boto3.session.Session()
        config = Config(
            retries={"mode": "standard", "max_attempts": attempts},
            connect_timeout=connect_timeout,
            read_timeout=60,
            s3={"addressing_style": "path"} if self.endpoint_url else None,
        )
        return session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region or session.region_name or "us-east-1",
            config=config,
        )

    def _client_or_open(self):
        if self._client is None:
            self._client = self._make_client(attempts=3, connect_timeout=5)
        return self._client

    def _call(self, operation, what: str):
        try:
            return retrying(
                lambda: operation(self._client_or_open()), what, self.retry_seconds, _transient
            )
        except Exception as error:
            if isinstance(error, (StorageError, FileNotFoundError)):
                raise
            if _code(error) in _NOT_FOUND_CODES:
                raise FileNotFoundError(f"{what}: not found") from error
            raise StorageError(
                f"S3: {what} failed at {self._where()}: {error}", transient=_transient(error)
            ) from error

    def _key(self, path: str) -> str:
        relative = check_relative(path)
        return (
            posixpath.join(self.prefix, relative)
            if self.prefix and relative
            else (relative or self.prefix)
        )

    def _size(self, s3, key: str) -> int:
        try:
            return s3.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except Exception as error:
            if _code(error) in _NOT_FOUND_CODES:
                return -1
            raise

    def _list_prefix(self, prefix: str) -> str:
        key = self._key(prefix)
        return f"{key}/" if key else ""

    # --- Storage -------------------------------------------------------------------------------

    def check(self) -> None:
        from botocore.exceptions import NoCredentialsError

        s3 = self._make_client(attempts=1, connect_timeout=3)
        try:
            s3.head_bucket(Bucket=self.bucket)
        except NoCredentialsError as error:
            raise StorageError(
                f"no AWS credentials for {self._where()}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run where an instance role applies"
            ) from error
        except Exception as error:
            code = _code(error)
            if code in _NOT_FOUND_CODES or code == "NoSuchBucket":
                fix = f"the bucket {self.bucket} does not exist: create it or correct the name"
            elif code in ("403", "AccessDenied"):
                fix = "access denied: check the credentials and the bucket policy"
            else:
                fix = (
                    "the endpoint cannot be reached: check endpoint_url (or AWS_ENDPOINT_URL) "
                    "and that the store is running"
                )
            raise StorageError(
                f"S3 {self._where()}: {fix} ({error})", transient=_transient(error)
            ) from error

    def open_write(self, path: str) -> WritableFile:
        if not check_relative(path):
            raise ValueError("open_write needs a file path, not the root")
        return _S3File(self, path)

    def read(self, path: str) -> bytes:
        key = self._key(path)
        return self._call(
            lambda s3: s3.get_object(Bucket=self.bucket, Key=key)["Body"].read(),
            f"reading {self.location(path)}",
        )

    def open_read(self, path: str) -> io.RawIOBase:
        return _S3Reader(self, self._key(path), self.size(path))

    def size(self, path: str) -> int:
        key = self._key(path)
        size = self._call(lambda s3: self._size(s3, key), f"looking up {self.location(path)}")
        if size < 0:
            raise FileNotFoundError(self.location(path))
        return size

    def list(self, prefix: str = "") -> list[FileInfo]:
        start = self._list_prefix(prefix)

        def list_all(s3) -> list[dict]:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start)
            return [item for page in pages for item in page.get("Contents", [])]

        found = []
        for item in self._call(list_all, f"listing {self.location(prefix)}"):
            relative = item["Key"][len(self.prefix) + 1 :] if self.prefix else item["Key"]
            if relative and not relative.endswith("/") and not is_hidden(relative):
                found.append(FileInfo(relative, item["Size"], item["LastModified"].timestamp()))
        return sorted(found, key=lambda info: info.path)

    def delete(self, path: str) -> bool:
        key = self._key(path)

        def delete(s3) -> bool:
            if self._size(s3, key) < 0:
                return False
            s3.delete_object(Bucket=self.bucket, Key=key)
            return True

        return self._call(delete, f"deleting {self.location(path)}")

    def cleanup(self, prefix: str = "", older_than: float = DEFAULT_CLEANUP_AGE) -> list[str]:
        start = self._list_prefix(prefix)
        cutoff = time.time() - older_than

        def uploads(s3) -> list[dict]:
            pages = s3.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=start
            )
            return [upload for page in pages for upload in page.get("Uploads", [])]

        removed = []
        for upload in self._call(uploads, f"listing the uploads under {self.location(prefix)}"):
            if upload["Initiated"].timestamp() > cutoff:
                continue
            key, upload_id = upload["Key"], upload["UploadId"]
            self._call(
                lambda s3, key=key, upload_id=upload_id: s3.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                ),
                f"aborting an upload of {key}",
            )
            removed.append(key[len(self.prefix) + 1 :] if self.prefix else key)
        return sorted(removed)

    def close(self) -> None:
        self._client = None
