"""Helper processes that write many small Parquet files at once (a window of many streams).

Why: a window of 1,000 live streams closes as 1,000 files of ~160 KB within a second or two.
Written by threads of the capture process, they cost it ~1.9-2.3 ms of CPU per file (Python work
under the GIL: writer set-up, tables, futures; plus the kernel's file creation and page-cache
writes), and the threads queued for the GIL behind the readers' event loop: in the capture,
800-960 files took 2.8-4 s. Here the parent only turns each file's chunks into plain columns and
pickles them into a pipe (~0.15-0.3 ms per file), and helper processes, which import pyarrow
alone (format.py, storage.py), do the rest beside it: 560-1,000 files in 1.1-1.7 s.

Protocol: a helper reads pickled batches `[(directory, name, columns, compression), ...]` from
stdin and answers each with a pickled ("ok", [(temporary, final), ...]) or ("error", exception);
it removes its own temporary files of a failed batch. The parent renames.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future
from typing import BinaryIO

from streamtap.io.sinks.parquet.format import Columns, encode_file
from streamtap.io.sinks.parquet.storage import temporary_name, unlink_quietly

__all__ = ["BatchFuture", "FileJob", "WriterProcessError", "WriterProcesses", "write_batch"]

# (directory, name, columns, compression) of one file.
FileJob = tuple[str, str, Columns, str]


class WriterProcessError(RuntimeError):
    """A helper process could not start, or died (killed, out of memory) while writing."""


class WriterProcesses:
    """A few helper processes, each fed batches of files by its own thread.

    submit() returns a BatchFuture of [(temporary, final), ...] for the batch, or of its error.
    A helper that dies fails its batch and is started again for the next one.
    """

    def __init__(self, processes: int):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._feeders = [
            threading.Thread(
                target=self._feed, name=f"streamtap-parquet-process-{i}", daemon=True
            )
            for i in range(processes)
        ]
        for feeder in self._feeders:
            feeder.start()

    def submit(self, batch: list[FileJob]) -> "BatchFuture":
        future = BatchFuture()
        self._jobs.put((future, batch))
        return future

    def shutdown(self) -> None:
        for _ in self._feeders:
            self._jobs.put(None)
        for feeder in self._feeders:
            feeder.join(timeout=30)

    def _feed(self) -> None:
        process: subprocess.Popen | None = None
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                future, batch = job
                if not future.set_running_or_notify_cancel():
                    continue
                if process is None or process.poll() is not None:
                    try:
                        process = _start_helper()
                    except OSError as error:
                        future.set_exception(WriterProcessError(
                            f"cannot start a Parquet writer process ({sys.executable} -m "
                            f"streamtap.io.sinks.parquet.writer_processes): {error}"
                        ))
                        process = None
                        continue
                try:
                    pickle.dump(batch, process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                    process.stdin.flush()
                    status, value = pickle.load(process.stdout)
                except (OSError, EOFError, pickle.UnpicklingError) as error:
                    code = _exit_code(process)
                    future.set_exception(WriterProcessError(
                        f"a Parquet writer process ended while writing {len(batch)} files "
                        f"(exit code {code}: killed or out of memory?): {error}"
                    ))
                    _stop_helper(process)
                    process = None
                    continue
                if status == "ok":
                    future.set_result(value)
                else:
                    future.set_exception(value)
        finally:
            _stop_helper(process)


class BatchFuture(Future):
    """The future of a batch's [(temporary, final), ...]; file(i) is one file's future."""

    def file(self, index: int) -> "_BatchFile":
        return _BatchFile(self, index)


class _BatchFile:
    """One file of a batch, used like a future of its (temporary, final) path."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: Future, index: int):
        self._batch = batch
        self._index = index

    def done(self) -> bool:
        return self._batch.done()

    def result(self) -> tuple[str, str]:
        return self._batch.result()[self._index]


def _start_helper() -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "streamtap.io.sinks.parquet.writer_processes"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        bufsize=1024 * 1024,
    )


def _exit_code(process: subprocess.Popen | None) -> int | None:
    """The exit code of a helper whose pipe just broke (it may take a moment to be reaped)."""
    if process is None:
        return None
    try:
        return process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return None


def _stop_helper(process: subprocess.Popen | None) -> None:
    if process is None:
        return
    try:
        process.stdin.close()  # the helper ends at end of input
        process.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        process.kill()
        process.wait()


def write_batch(batch: list[FileJob]) -> list[tuple[str, str]]:
    """Writes every file of a batch under a temporary name, then fsyncs them all.

    On failure, no temporary file of the batch is left.
    """
    written: list[tuple[str, str]] = []
    descriptors: list[int] = []
    try:
        for directory, name, columns, compression in batch:
            data = encode_file(columns, compression)
            os.makedirs(directory, exist_ok=True)
            temporary = temporary_name(directory, name)
            descriptors.append(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            written.append((temporary, os.path.join(directory, name)))
            view = memoryview(data)
            while view:
                view = view[os.write(descriptors[-1], view):]
        for descriptor in descriptors:
            os.fsync(descriptor)
    except BaseException:
        for temporary, _ in written:
            unlink_quietly(temporary)
        raise
    finally:
        for descriptor in descriptors:
            os.close(descriptor)
    return written


def _serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """The helper's loop: a batch in, its files written and fsync'ed, their paths out."""
    while True:
        try:
            batch: list[FileJob] = pickle.load(requests)
        except EOFError:
            return
        try:
            reply = ("ok", write_batch(batch))
        except Exception as error:  # noqa: BLE001 - reported to the parent, which fails the bundle
            reply = ("error", error)
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - an error type that does not pickle
            data = pickle.dumps(("error", RuntimeError(repr(reply[1]))))
        replies.write(data)
        replies.flush()


if __name__ == "__main__":
    # Ctrl-C in a terminal reaches the whole process group: the capture then drains and its last
    # files still need writing. A helper ends when the capture closes its input.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Replies go through a private copy of stdout; anything a library prints goes to stderr.
    _replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    _serve(sys.stdin.buffer, _replies)
