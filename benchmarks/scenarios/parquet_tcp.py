"""Scenario 1: one fast TCP stream to local Parquet (bounded) vs pyarrow alone on the same disk.

Per repeat, in this order:
1. pyarrow alone: the same number of bytes, as 64 KiB payload rows, built into tables with
   streamtap's Parquet schema and written with pq.write_table (same codec), one file per
   `baseline_file_bytes`, each fsync'ed (streamtap fsyncs every file too). Time includes building
   the tables from Python bytes objects.
2. streamtap: `run_capture(config, ["--runner=FnApiRunner"])` in this process (Python start-up and
   imports excluded) reading a feeder process that serves `total_bytes` over loopback TCP as fast
   as it can; the source's `max_bytes` ends the capture.
3. If streamtap's files differ in size from the baseline's by more than 25%, pyarrow is measured
   again at streamtap's median file size, and the ratio uses that (same size per file).
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
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.measure import load_average, median
from benchmarks import profiling

NAME = "parquet_tcp"


def _payloads(total: int, chunk: int) -> list[bytes]:
    data = np.random.default_rng(7).bytes(total)
    return [data[i : i + chunk] for i in range(0, total, chunk)]


def pyarrow_baseline(payloads: list[bytes], file_bytes: int, compression: str, directory: Path) -> dict:
    from streamtap.io.parquet import SCHEMA

    directory.mkdir(parents=True, exist_ok=True)
    chunk = len(payloads[0])
    rows_per_file = max(1, file_bytes // chunk)
    now = int(time.time() * 1e6)
    started = time.perf_counter()
    files = 0
    for first in range(0, len(payloads), rows_per_file):
        rows = payloads[first : first + rows_per_file]
        n = len(rows)
        table = pa.Table.from_pydict(
            {
                "stream_id": ["fast"] * n,
                "session": ["0123456789abcdef"] * n,
                "seq": list(range(first, first + n)),
                "offset": [i * chunk for i in range(first, first + n)],
                "payload": rows,
                "event_time": [now] * n,
                "crc32c": [0] * n,
                "discontinuity": [False] * n,
                "tags": [[]] * n,
            },
            schema=SCHEMA,
        )
        path = directory / f"{files:05d}.parquet"
        with open(path, "wb") as file:
            pq.write_table(table, file, compression=None if compression == "none" else compression)
            file.flush()
            os.fsync(file.fileno())
        files += 1
    seconds = time.perf_counter() - started
    total = sum(len(p) for p in payloads)
    shutil.rmtree(directory, ignore_errors=True)
    return {"bytes": total, "seconds": round(seconds, 3), "files": files,
            "file_bytes": rows_per_file * chunk, "mb_per_s": round(total / seconds / 1e6, 1)}


def _start_feeder(total: int) -> tuple[subprocess.Popen, int]:
    from streamtap.services.process import free_port

    port = free_port()
    feeder = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.feeders", "tcp", "--port", str(port),
         "--bytes", str(total), "--hold", "120"],
        stdout=subprocess.PIPE, text=True, cwd=str(Path(__file__).resolve().parents[2]),
    )
    assert feeder.stdout.readline().strip() == "listening"
    return feeder, port


def streamtap_capture(cfg: dict, directory: Path, profile_to: Path | None = None) -> dict:
    from streamtap.config import parse_config
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
        profiler = profiling.record_pid(os.getpid(), 120, profile_to, rate=200)
        time.sleep(1.0)  # let py-spy attach
    out = io.StringIO()
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    try:
        code = run_capture(config, ["--runner=FnApiRunner"], status_interval=0, out=out)
    finally:
        seconds = time.perf_counter() - started
        usage = resource.getrusage(resource.RUSAGE_SELF)
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
    shutil.rmtree(directory, ignore_errors=True)
    cpu = (usage.ru_utime - usage_before.ru_utime) + (usage.ru_stime - usage_before.ru_stime)
    return {"bytes": total, "seconds": round(seconds, 3), "files": len(files), "chunks": captured,
            "median_file_bytes": int(median(sizes)) if sizes else 0,
            "cpu_seconds": round(cpu, 2), "mb_per_s": round(total / seconds / 1e6, 1)}


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
    """Where the time goes, without the socket: generated chunks (i) through Beam's window +
    GroupByKey only, and (ii) through streamtap's Parquet sink (GroupByKey + files)."""
    from streamtap.io.parquet import WriteToParquet

    total, chunk = cfg["total_bytes"], cfg["chunk_bytes"]
    out = {}
    for label in ("beam_group_by_key_only", "streamtap_parquet_sink_only"):
        _T.clear()
        with beam.Pipeline(runner="FnApiRunner") as pipeline:
            # Event times spaced so that one window holds baseline_file_bytes, like the baseline.
            spacing = cfg["window_seconds"] * chunk / cfg["baseline_file_bytes"]
            chunks = (pipeline | beam.Impulse() | beam.FlatMap(_generate, total, chunk, spacing)
                      | beam.WindowInto(beam.window.FixedWindows(cfg["window_seconds"])))
            if label == "beam_group_by_key_only":
                (chunks | beam.Map(lambda c: (c.stream_id, c)) | beam.GroupByKey()
                 | beam.Map(lambda kv: sum(len(c.payload) for c in kv[1])))
            else:
                chunks | WriteToParquet(str(directory), cfg["compression"])
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
        parts = decomposition(cfg, workdir / "dec")
        row = {"load_average_1m": load, "pyarrow": base, "pyarrow_same_file_size": same_size,
               "streamtap": ours, "ratio": round(ours["mb_per_s"] / limit["mb_per_s"], 3),
               "decomposition": parts}
        log(f"{NAME} #{index + 1}: streamtap {ours['mb_per_s']} MB/s, pyarrow {base['mb_per_s']} MB/s"
            + (f" ({same_size['mb_per_s']} MB/s at {ours['median_file_bytes'] >> 20} MiB files)" if same_size else "")
            + f", ratio {row['ratio']}; without the socket: Beam GroupByKey alone "
            f"{parts['beam_group_by_key_only']['mb_per_s']} MB/s, streamtap's Parquet sink "
            f"{parts['streamtap_parquet_sink_only']['mb_per_s']} MB/s (load {load})")
        runs.append(row)
    result = {
        "runs": runs,
        "streamtap_mb_per_s": median([r["streamtap"]["mb_per_s"] for r in runs]),
        "pyarrow_mb_per_s": median([(r["pyarrow_same_file_size"] or r["pyarrow"])["mb_per_s"] for r in runs]),
        "ratio": median([r["ratio"] for r in runs]),
        "beam_group_by_key_only_mb_per_s": median([r["decomposition"]["beam_group_by_key_only"]["mb_per_s"] for r in runs]),
        "streamtap_parquet_sink_only_mb_per_s": median([r["decomposition"]["streamtap_parquet_sink_only"]["mb_per_s"] for r in runs]),
        "target_ratio": cfg["target_ratio"],
    }
    result["pass"] = result["ratio"] >= cfg["target_ratio"]
    if cfg.get("profile"):
        raw = workdir / "parquet_tcp.profile.raw"
        streamtap_capture(cfg, workdir / "st-prof", profile_to=raw)
        if raw.exists():
            result["profile"] = profiling.summarize(raw, top=20)
            result["profile_main_thread"] = profiling.summarize(raw, top=20, thread_filter="MainThread")
    return result
