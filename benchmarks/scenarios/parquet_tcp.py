"""Scenario 1: one fast TCP stream to local Parquet (bounded) vs pyarrow alone on the same disk.

Per repeat, in this order:
1. pyarrow alone: the same number of bytes, as 64 KiB payload rows, built into tables with
   streamtap's Parquet schema and written by pq.write_table with the sink's writer options (same
   codec, no dictionary and no statistics for the payload column, the sink's row groups), one
   file per `baseline_file_bytes`, each fsync'ed (streamtap fsyncs every file too). Time includes
   building the tables from Python bytes objects, the way the sink builds them: over the bytes
   objects' own buffers, without copying the payloads (a contiguous column, pa.Table.from_pydict,
   copies every byte once more: that conventional way is measured too, for reference only).
2. streamtap: `run_capture(config, ["--runner=FnApiRunner"])` in this process (Python start-up and
   imports excluded) reading a feeder process that serves `total_bytes` over loopback TCP as fast
   as it can; the source's `max_bytes` ends the capture. After the timed run, the capture is read
   back and checked byte for byte against what the feeder sent (and with `streamtap verify`'s
   checks).
3. If streamtap's files differ in size from the baseline's by more than 25%, pyarrow is measured
   again at streamtap's median file size, and the ratio uses that (same size per file).
4. Without the socket, generated chunks (one bundle) through (i) Beam's WindowInto + GroupByKey
   alone, (ii) streamtap's sink as Parquet-only captures use it (files per bundle, no shuffle),
   (iii) the sink with `files: per_window` (GroupByKey, as before).
"""

from __future__ import annotations

import io
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
# Imported here, not in the timed run_capture() (the runner module loads on first use).
import apache_beam.runners.portability.fn_api_runner  # noqa: F401
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.measure import load_average, median
from benchmarks import profiling

NAME = "parquet_tcp"


def _payloads(total: int, chunk: int) -> list[bytes]:
    data = np.random.default_rng(7).bytes(total)
    return [data[i : i + chunk] for i in range(0, total, chunk)]


def _zero_copy_binary(payloads: list[bytes]) -> pa.ChunkedArray:
    """A binary column over the payloads' own buffers (no copy), as the sink builds it: the
    fastest way we know to hand Python bytes objects to the Parquet writer."""
    arrays = []
    for payload in payloads:
        offsets = pa.py_buffer(np.array([0, len(payload)], dtype=np.int32))
        arrays.append(pa.Array.from_buffers(pa.binary(), 1, [None, offsets, pa.py_buffer(payload)]))
    return pa.chunked_array(arrays, pa.binary())


def pyarrow_baseline(payloads: list[bytes], file_bytes: int, compression: str, directory: Path,
                     conventional: bool = False) -> dict:
    """pyarrow alone (see the module doc). conventional: tables by pa.Table.from_pydict (payloads
    copied into one contiguous column) and pyarrow's default writer options."""
    from streamtap.io.sinks.parquet.format import SCHEMA, WRITE_OPTIONS
    from streamtap.io.sinks.parquet.write import _BATCH_BYTES

    directory.mkdir(parents=True, exist_ok=True)
    chunk = len(payloads[0])
    rows_per_file = max(1, file_bytes // chunk)
    now = int(time.time() * 1e6)
    tags_type = SCHEMA.field("tags").type
    codec = None if compression == "none" else compression
    started = time.perf_counter()
    files = 0
    for first in range(0, len(payloads), rows_per_file):
        rows = payloads[first : first + rows_per_file]
        n = len(rows)
        path = directory / f"{files:05d}.parquet"
        if conventional:
            table = pa.Table.from_pydict(
                {"stream_id": ["fast"] * n, "session": ["0123456789abcdef"] * n,
                 "seq": list(range(first, first + n)),
                 "offset": [i * chunk for i in range(first, first + n)], "payload": rows,
                 "event_time": [now] * n, "crc32c": [0] * n, "discontinuity": [False] * n,
                 "tags": [[]] * n},
                schema=SCHEMA,
            )
            pq.write_table(table, str(path), compression=codec)
        else:
            table = pa.Table.from_arrays(
                [
                    pa.array(["fast"] * n, pa.string()),
                    pa.array(["0123456789abcdef"] * n, pa.string()),
                    pa.array(range(first, first + n), pa.int64()),
                    pa.array([i * chunk for i in range(first, first + n)], pa.int64()),
                    _zero_copy_binary(rows),
                    pa.array([now] * n, pa.timestamp("us", tz="UTC")),
                    pa.array([0] * n, pa.uint32()),
                    pa.array([False] * n, pa.bool_()),
                    pa.array([[]] * n, tags_type),
                ],
                schema=SCHEMA,
            )
            pq.write_table(table, str(path), compression=codec,
                           row_group_size=max(1, _BATCH_BYTES // chunk), **WRITE_OPTIONS)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        files += 1
    seconds = time.perf_counter() - started
    total = sum(len(p) for p in payloads)
    shutil.rmtree(directory, ignore_errors=True)
    return {"bytes": total, "seconds": round(seconds, 3), "files": files,
            "file_bytes": rows_per_file * chunk, "mb_per_s": round(total / seconds / 1e6, 1)}


class _ThreadCpu:
    """CPU seconds per thread of this process while a capture runs (sampled from /proc every
    50 ms, so a thread that ends loses at most its last 50 ms), summed by thread name."""

    def __init__(self):
        import threading

        self._threading = threading
        self._seen: dict[int, tuple[str, float]] = {}
        self._start: dict[int, float] = {}
        self._stop = threading.Event()
        self._sample()
        self._start = {tid: cpu for tid, (_, cpu) in self._seen.items()}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        names = {t.native_id: t.name for t in self._threading.enumerate()}
        tick = os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{os.getpid()}/task").iterdir():
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            tid = int(task.name)
            name = names.get(tid, "other").rstrip("0123456789_-")
            if name.startswith("Thread"):
                name = "other"
            self._seen[tid] = (name, (int(fields[11]) + int(fields[12])) / tick)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._sample()
        totals: dict[str, float] = {}
        for tid, (name, cpu) in self._seen.items():
            used = cpu - self._start.get(tid, 0.0)
            if used > 0:
                totals[name] = round(totals.get(name, 0.0) + used, 2)
        return dict(sorted(totals.items(), key=lambda item: -item[1]))


# The feeder sends this seed's 1 MiB block repeated, so the capture can be checked byte for byte.
_FEEDER_SEED = 19


def _start_feeder(total: int) -> tuple[subprocess.Popen, int]:
    from streamtap.services.process import free_port

    port = free_port()
    feeder = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.feeders", "tcp", "--port", str(port),
         "--bytes", str(total), "--hold", "120", "--seed", str(_FEEDER_SEED)],
        stdout=subprocess.PIPE, text=True, cwd=str(Path(__file__).resolve().parents[2]),
    )
    assert feeder.stdout.readline().strip() == "listening"
    return feeder, port


def streamtap_capture(cfg: dict, directory: Path, profile_to: Path | None = None) -> dict:
    from streamtap.plugins import parse_config
    from streamtap.pipelines.run import run_capture

    total = cfg["total_bytes"]
    feeder, port = _start_feeder(total)
    config = parse_config({
        "sources": [{"id": "fast", "type": "tcp", "address": f"127.0.0.1:{port}", "max_bytes": total}],
        "chunk": {"max_bytes": cfg["chunk_bytes"], "max_seconds": 1.0},
        "window_seconds": cfg["window_seconds"],
        "sinks": [{"type": "parquet", "path": str(directory), "compression": cfg["compression"]}],
    })
    profiler = None
    if profile_to is not None:
        # Only samples of the thread holding the GIL: where this process's Python time goes
        # (the socket reader, the bundles and the file writers share one GIL).
        profiler = profiling.record_pid(os.getpid(), 120, profile_to, rate=500, gil=True)
        time.sleep(1.0)  # let py-spy attach
    out = io.StringIO()
    threads = _ThreadCpu()
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    try:
        code = run_capture(config, ["--runner=FnApiRunner"], status_interval=0, out=out)
    finally:
        seconds = time.perf_counter() - started
        usage = resource.getrusage(resource.RUSAGE_SELF)
        thread_cpu = threads.stop()
        feeder.kill()
        feeder.wait()
        if profiler is not None:
            profiler.send_signal(2)  # SIGINT: py-spy writes what it has
            try:
                profiler.wait(timeout=60)
            except subprocess.TimeoutExpired:
                profiler.kill()
    if code != 0:
        raise RuntimeError(f"capture failed:\n{out.getvalue()[-2000:]}")
    files = [p for p in directory.glob("stream=*/date=*/*.parquet") if not p.name.startswith(".")]
    sizes = sorted(p.stat().st_size for p in files)
    captured = sum(pq.ParquetFile(p).metadata.num_rows for p in files)
    _check_byte_exact(directory, total)  # after the timed run
    shutil.rmtree(directory, ignore_errors=True)
    cpu = (usage.ru_utime - usage_before.ru_utime) + (usage.ru_stime - usage_before.ru_stime)
    return {"bytes": total, "seconds": round(seconds, 3), "files": len(files), "chunks": captured,
            "median_file_bytes": int(median(sizes)) if sizes else 0,
            "min_file_bytes": sizes[0] if sizes else 0, "max_file_bytes": sizes[-1] if sizes else 0,
            "cpu_seconds": round(cpu, 2), "thread_cpu_seconds": thread_cpu,
            "mb_per_s": round(total / seconds / 1e6, 1)}


def _check_byte_exact(directory: Path, total: int) -> None:
    """The capture holds exactly the feeder's bytes, in order, and verifies (streamtap verify's
    checks: checksums, contiguous seqs and offsets); raises AssertionError if not."""
    import hashlib

    from benchmarks.feeders import feeder_block
    from streamtap.captures import read_capture, reassemble, verify

    report = verify(read_capture(str(directory)), ["fast"])["fast"]
    assert report.ok, f"the capture does not verify: {report}"

    class Digest:
        def __init__(self):
            self.hash, self.size = hashlib.sha256(), 0

        def write(self, data) -> int:
            self.hash.update(data)
            self.size += len(data)
            return len(data)

    captured = Digest()
    reassemble(read_capture(str(directory), "fast"), captured)
    block = feeder_block(_FEEDER_SEED)
    expected = hashlib.sha256()
    for start in range(0, total, len(block)):
        expected.update(block[: min(len(block), total - start)])
    assert captured.size == total and captured.hash.digest() == expected.digest(), (
        f"the capture's bytes differ from the feeder's ({captured.size} of {total} bytes)"
    )


_T: dict[str, float] = {}


def _generate(_, total: int, chunk: int, spacing: float):
    """Chunks of one 'stream' with event times `spacing` s apart (windows split into files)."""
    from streamtap.chunk import make_chunk

    block = np.random.default_rng(5).bytes(16 * chunk)
    start = time.time()
    _T.setdefault("first", time.perf_counter())
    for seq in range(total // chunk):
        payload = block[(seq % 16) * chunk : (seq % 16 + 1) * chunk]
        event_time = start + seq * spacing
        yield beam.window.TimestampedValue(
            make_chunk("fast", "0123456789abcdef", seq, seq * chunk, payload, event_time), event_time)


def decomposition(cfg: dict, directory: Path) -> dict:
    """Where the time goes, without the socket: generated chunks (one bundle) through (i) Beam's
    window + GroupByKey only, (ii) streamtap's Parquet sink as Parquet-only captures use it (files
    per bundle, no shuffle), (iii) the sink with files: per_window (GroupByKey + files)."""
    from streamtap.io.sinks.parquet.config import ParquetSink
    from streamtap.io.sinks.parquet.write import WriteChunksToParquet

    total, chunk = cfg["total_bytes"], cfg["chunk_bytes"]
    out = {}
    for label in ("beam_group_by_key_only", "streamtap_parquet_sink_only",
                  "streamtap_parquet_sink_per_window"):
        _T.clear()
        with beam.Pipeline(runner="FnApiRunner") as pipeline:
            # Event times spaced so that one window holds baseline_file_bytes, like the baseline.
            spacing = cfg["window_seconds"] * chunk / cfg["baseline_file_bytes"]
            chunks = (pipeline | beam.Impulse() | beam.FlatMap(_generate, total, chunk, spacing)
                      | beam.WindowInto(beam.window.FixedWindows(cfg["window_seconds"])))
            if label == "beam_group_by_key_only":
                (chunks | beam.Map(lambda c: (c.stream_id, c)) | beam.GroupByKey()
                 | beam.Map(lambda kv: sum(len(c.payload) for c in kv[1])))
            elif label == "streamtap_parquet_sink_only":
                # One bundle with the stream's windows in order: what whole-window release gives.
                sink = ParquetSink(path=str(directory), compression=cfg["compression"])
                chunks | WriteChunksToParquet(sink, whole_windows=True)
            else:
                sink = ParquetSink(
                    path=str(directory), compression=cfg["compression"], files="per_window"
                )
                chunks | WriteChunksToParquet(sink)
        seconds = time.perf_counter() - _T["first"]
        out[label] = {"seconds": round(seconds, 3), "mb_per_s": round(total / seconds / 1e6, 1)}
        shutil.rmtree(directory, ignore_errors=True)
    return out


def run(cfg: dict, repeats: int, workdir: Path, log) -> dict:
    payloads = _payloads(cfg["total_bytes"], cfg["chunk_bytes"])
    runs = []
    for index in range(repeats):
        load = load_average()
        base = pyarrow_baseline(payloads, cfg["baseline_file_bytes"], cfg["compression"], workdir / "pa")
        ours = streamtap_capture(cfg, workdir / "st")
        same_size = None
        if ours["median_file_bytes"] and abs(ours["median_file_bytes"] / base["file_bytes"] - 1) > 0.25:
            same_size = pyarrow_baseline(payloads, ours["median_file_bytes"], cfg["compression"], workdir / "pa2")
        limit = same_size or base
        conventional = pyarrow_baseline(payloads, limit["file_bytes"], cfg["compression"],
                                        workdir / "pa3", conventional=True)
        parts = decomposition(cfg, workdir / "dec")
        row = {"load_average_1m": load, "pyarrow": base, "pyarrow_same_file_size": same_size,
               "pyarrow_conventional": conventional,
               "streamtap": ours, "ratio": round(ours["mb_per_s"] / limit["mb_per_s"], 3),
               "ratio_vs_conventional": round(ours["mb_per_s"] / conventional["mb_per_s"], 3),
               "decomposition": parts}
        log(f"{NAME} #{index + 1}: streamtap {ours['mb_per_s']} MB/s ({ours['files']} files, median "
            f"{ours['median_file_bytes'] >> 20} MiB), pyarrow {base['mb_per_s']} MB/s"
            + (f" ({same_size['mb_per_s']} MB/s at {ours['median_file_bytes'] >> 20} MiB files)" if same_size else "")
            + f", ratio {row['ratio']} (vs pyarrow with from_pydict tables {conventional['mb_per_s']} MB/s: "
            f"{row['ratio_vs_conventional']}); without the socket: Beam GroupByKey alone "
            f"{parts['beam_group_by_key_only']['mb_per_s']} MB/s, streamtap's Parquet sink "
            f"{parts['streamtap_parquet_sink_only']['mb_per_s']} MB/s (per_window "
            f"{parts['streamtap_parquet_sink_per_window']['mb_per_s']} MB/s) (load {load})")
        runs.append(row)

    def _median(key: str) -> float:
        return median([r["decomposition"][key]["mb_per_s"] for r in runs])

    result = {
        "runs": runs,
        "streamtap_mb_per_s": median([r["streamtap"]["mb_per_s"] for r in runs]),
        "pyarrow_mb_per_s": median([(r["pyarrow_same_file_size"] or r["pyarrow"])["mb_per_s"] for r in runs]),
        "pyarrow_conventional_mb_per_s": median([r["pyarrow_conventional"]["mb_per_s"] for r in runs]),
        "ratio": median([r["ratio"] for r in runs]),
        "ratio_vs_conventional": median([r["ratio_vs_conventional"] for r in runs]),
        "beam_group_by_key_only_mb_per_s": _median("beam_group_by_key_only"),
        "streamtap_parquet_sink_only_mb_per_s": _median("streamtap_parquet_sink_only"),
        "streamtap_parquet_sink_per_window_mb_per_s": _median("streamtap_parquet_sink_per_window"),
        "target_ratio": cfg["target_ratio"],
    }
    result["pass"] = result["ratio"] >= cfg["target_ratio"]
    if cfg.get("profile"):
        raw = workdir / "parquet_tcp.profile.raw"
        profiled = streamtap_capture(cfg, workdir / "st-prof", profile_to=raw)
        if raw.exists():
            result["profile_kind"] = "gil"
            result["profile_run"] = profiled
            result["profile"] = profiling.summarize(raw, top=20)
            # The bundles run in run_capture's wait thread (streamtap.pipelines.run), not in
            # MainThread, which only builds the pipeline.
            result["profile_main_thread"] = profiling.summarize(raw, top=20,
                                                                thread_filter="streamtap-wait")
            result["profile_reader_thread"] = profiling.summarize(raw, top=10, thread_filter="streamtap-io")
    return result
