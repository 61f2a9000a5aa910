"""The storage layer against real stores: local disk, a real HDFS, and S3 (the moto server).

One contract for every backend (atomic publish, leftovers of a crashed writer never listed and
cleaned up, byte-exact round trips), then what only a distributed store can do to a writer: a
NameNode restarted during a sequence of writes, a DataNode killed with replication 2.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamtap.io.storage import Storage, StorageError, open_storage
from streamtap.io.storage.s3 import S3Storage
from streamtap.services.hdfs import HdfsService
from streamtap.services.process import free_port
from tests.fixtures.hdfs import dfs_cat, dfs_ls, unique_hdfs_path
from tests.fixtures.s3 import s3_client

MiB = 1 << 20


@pytest.fixture(params=["local", "hdfs", "s3"])
def storage(request, tmp_path) -> Storage:
    """An empty Storage root on each backend (HDFS and S3 are the real services)."""
    if request.param == "local":
        store = open_storage(str(tmp_path / "root"))
    elif request.param == "hdfs":
        hdfs: HdfsService = request.getfixturevalue("hdfs")
        store = open_storage(f"{hdfs.url}{unique_hdfs_path('storage')}")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = request.getfixturevalue("s3_bucket")
        store = S3Storage(f"s3://{bucket}/captures", endpoint_url=endpoint, part_size=5 * MiB)
    store.check()
    yield store
    store.close()


def _crash_while_writing(store: Storage, path: str, size: int) -> None:
    """Another process opens `path`, writes `size` bytes and dies without publishing."""
    endpoint = getattr(store, "endpoint_url", None) or ""
    script = (
        "import os, sys\n"
        "from streamtap.io.storage import open_storage\n"
        "store = open_storage(sys.argv[1], endpoint_url=sys.argv[2] or None)\n"
        "file = store.open_write(sys.argv[3])\n"
        "file.write(os.urandom(int(sys.argv[4])))\n"
        "file.flush()\n"
        "os._exit(0)  # a crash: no publish, no abort, no close\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, store.url, endpoint, path, str(size)],
        check=True,
        timeout=120,
    )


# --- the contract, on every backend -----------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 3 * MiB + 7, 12 * MiB + 1])
def test_round_trip_is_byte_exact(storage: Storage, size: int):
    payload = os.urandom(size)

    storage.write(f"a/b/file-{size}.bin", payload)

    assert storage.read(f"a/b/file-{size}.bin") == payload
    assert storage.size(f"a/b/file-{size}.bin") == size
    assert [(info.path, info.size) for info in storage.list()] == [(f"a/b/file-{size}.bin", size)]


def test_streamed_writes_in_small_pieces_round_trip(storage: Storage):
    payload = os.urandom(11 * MiB + 5)
    with storage.open_write("streamed.bin") as file:
        for start in range(0, len(payload), 100_003):
            file.write(payload[start : start + 100_003])
        assert file.tell() == len(payload)
        file.publish()

    assert storage.read("streamed.bin") == payload
    with storage.open_read("streamed.bin") as reader:
        reader.seek(len(payload) - 10)
        assert reader.read(10) == payload[-10:]


def test_nothing_is_visible_before_publish(storage: Storage):
    payload = os.urandom(6 * MiB)
    file = storage.open_write("day/window.bin")
    file.write(payload)

    assert storage.list() == []
    assert not storage.exists("day/window.bin")
    with pytest.raises(FileNotFoundError):
        storage.read("day/window.bin")

    file.publish()
    assert [info.path for info in storage.list()] == ["day/window.bin"]
    assert storage.read("day/window.bin") == payload


def test_publish_replaces_a_file_whole(storage: Storage):
    storage.write("same.bin", b"old" * 1000)
    file = storage.open_write("same.bin")
    file.write(b"new" * 2000)
    assert storage.read("same.bin") == b"old" * 1000

    file.publish()

    assert storage.read("same.bin") == b"new" * 2000
    assert len(storage.list()) == 1


def test_abort_and_an_exception_leave_nothing(storage: Storage):
    file = storage.open_write("aborted.bin")
    file.write(os.urandom(6 * MiB))
    file.abort()
    with pytest.raises(RuntimeError), storage.open_write("raised.bin") as file:
        file.write(b"partial")
        raise RuntimeError("the writer failed")

    assert storage.list() == []
    assert storage.cleanup(older_than=0) == []


def test_a_crashed_writer_leaves_nothing_listed_and_cleanup_removes_it(storage: Storage):
    storage.write("kept.bin", b"published before the crash")

    _crash_while_writing(storage, "stream=a/crashed.bin", 9 * MiB)

    assert [info.path for info in storage.list()] == ["kept.bin"]
    if storage.scheme != "s3":  # moto dates every multipart upload 2010-11-10: always old
        assert storage.cleanup(older_than=3600) == []  # too young: a writer may be at it
    removed = storage.cleanup(older_than=0)
    assert len(removed) == 1 and removed[0].startswith("stream=a/")
    assert storage.cleanup(older_than=0) == []
    assert storage.read("kept.bin") == b"published before the crash"


def test_list_is_recursive_sorted_and_skips_hidden_names(storage: Storage):
    for path in ("z.bin", "p=1/b.bin", "p=1/a.bin", "p=2/deep/c.bin", "_SUCCESS", "p=1/.x"):
        storage.write(path, path.encode())

    assert [info.path for info in storage.list()] == [
        "p=1/a.bin",
        "p=1/b.bin",
        "p=2/deep/c.bin",
        "z.bin",
    ]
    assert [info.path for info in storage.list("p=1")] == ["p=1/a.bin", "p=1/b.bin"]
    assert storage.list("missing") == []


def test_delete_and_missing_files(storage: Storage):
    storage.write("gone.bin", b"x")

    assert storage.delete("gone.bin") is True
    assert storage.delete("gone.bin") is False
    with pytest.raises(FileNotFoundError):
        storage.read("gone.bin")
    with pytest.raises(ValueError, match="relative"):
        storage.read("../outside")


def test_parquet_written_and_read_through_pyarrow(storage: Storage):
    table = pa.table(
        {
            "seq": pa.array(range(5000), pa.int64()),
            "payload": pa.array([os.urandom(200) for _ in range(5000)], pa.binary()),
        }
    )
    with storage.open_write("stream=s/0.parquet") as file:
        pq.write_table(table, pa.PythonFile(file, mode="w"), row_group_size=1000)
        file.publish()

    with storage.open_read("stream=s/0.parquet") as reader:
        assert pq.ParquetFile(reader).read().equals(table)


def test_storage_pickles_without_its_client(storage: Storage):
    storage.write("before.bin", b"1")  # opens the client

    copy = pickle.loads(pickle.dumps(storage))

    assert copy.read("before.bin") == b"1"


# --- HDFS -------------------------------------------------------------------------------------


def test_hadoops_own_shell_reads_what_was_published(hdfs: HdfsService):
    directory = unique_hdfs_path("shell")
    store = open_storage(f"{hdfs.url}{directory}")
    payload = os.urandom(2 * MiB + 3)
    store.write("stream=x/date=2026-01-01/000000-000000000000.parquet", payload)
    _crash_while_writing(store, "stream=x/date=2026-01-01/leftover.parquet", MiB)

    listed = dfs_ls(hdfs, directory)
    final = f"{directory}/stream=x/date=2026-01-01/000000-000000000000.parquet"
    assert listed[final] == len(payload)
    assert dfs_cat(hdfs, final) == payload
    # Hadoop lists the leftover too, under a hidden name that readers skip.
    hidden = [path for path in listed if path != final]
    assert len(hidden) == 1 and os.path.basename(hidden[0]).startswith(".leftover.parquet.tmp-")


def test_unreachable_hdfs_is_a_clear_error_at_once():
    port = free_port()
    store = open_storage(f"hdfs://127.0.0.1:{port}/streamtap/raw")
    started = time.monotonic()

    with pytest.raises(StorageError) as raised:
        store.check()

    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert f"127.0.0.1:{port}" in message and "streamtap services up hdfs" in message


def test_a_namenode_restart_during_writes_loses_nothing_published(hdfs: HdfsService):
    store = open_storage(f"{hdfs.url}{unique_hdfs_path('nn-restart')}", retry_seconds=120)
    published: dict[str, bytes] = {}
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        index = 0
        while not stop.is_set():
            payload = os.urandom(MiB + index)
            try:
                store.write(f"file-{index:04d}.bin", payload)
            except BaseException as error:  # noqa: BLE001 - reported by the test
                errors.append(error)
                return
            published[f"file-{index:04d}.bin"] = payload
            index += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        _wait_for(lambda: len(published) >= 3, "first writes", 60)
        hdfs.restart_namenode(kill=True, down_seconds=2)
        count = len(published)
        _wait_for(lambda: len(published) >= count + 3, "writes after the restart", 120)
    finally:
        stop.set()
        thread.join(timeout=180)

    assert not errors, errors
    assert [info.path for info in store.list()] == sorted(published)
    for path, payload in published.items():
        assert store.read(path) == payload


def test_a_killed_datanode_with_replication_2_keeps_files_readable(hdfs_cluster_healed):
    cluster: HdfsService = hdfs_cluster_healed
    store = open_storage(f"{cluster.url}{unique_hdfs_path('dn-kill')}")
    files = {f"before-{i}.bin": os.urandom(2 * MiB + i) for i in range(6)}
    for path, payload in files.items():
        store.write(path, payload)

    cluster.kill_datanode(0)
    for i in range(4):  # written while the NameNode still counts the dead node live
        files[f"after-{i}.bin"] = payload = os.urandom(MiB + i)
        store.write(f"after-{i}.bin", payload)

    fresh = open_storage(store.url)  # no cached connections
    assert [info.path for info in fresh.list()] == sorted(files)
    for path, payload in files.items():
        assert fresh.read(path) == payload
    assert dfs_cat(cluster, f"{store.root}/before-0.bin") == files["before-0.bin"]


# --- S3 ---------------------------------------------------------------------------------------


def test_s3_leftover_is_an_incomplete_upload_until_cleanup(s3_endpoint, s3_bucket):
    store = open_storage(f"s3://{s3_bucket}/raw?endpoint_url={s3_endpoint}")
    client = s3_client(s3_endpoint)

    _crash_while_writing(store, "stream=a/x.parquet", 9 * MiB)

    uploads = client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert [upload["Key"] for upload in uploads] == ["raw/stream=a/x.parquet"]
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    assert store.cleanup(older_than=0) == ["stream=a/x.parquet"]
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_s3_endpoint_from_the_environment(s3_endpoint, s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    store = open_storage(f"s3://{s3_bucket}")

    store.write("k.bin", b"via AWS_ENDPOINT_URL")

    assert s3_client(s3_endpoint).get_object(Bucket=s3_bucket, Key="k.bin")["Body"].read() == (
        b"via AWS_ENDPOINT_URL"
    )


def test_s3_unreachable_or_missing_bucket_is_a_clear_error(s3_endpoint):
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StorageError, match=f"endpoint {dead}.*cannot be reached"):
        open_storage("s3://bucket/raw", endpoint_url=dead).check()
    with pytest.raises(StorageError, match="bucket no-such-bucket does not exist"):
        open_storage("s3://no-such-bucket/raw", endpoint_url=s3_endpoint).check()


def _wait_for(condition, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_local_storage_is_a_plain_directory(tmp_path):
    store = open_storage(f"file://{tmp_path}")
    store.write("a/b.bin", b"plain")

    assert (tmp_path / "a" / "b.bin").read_bytes() == b"plain"
    assert isinstance(store.open_read("a/b.bin"), io.RawIOBase)
