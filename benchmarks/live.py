"""Runs `streamtap run CONFIG` as a subprocess the way a user does, and measures it.

The capture runs in its own process group; after `seconds` it gets SIGINT (Ctrl-C), drains and
exits. Its process tree (the Python SDK process and the Prism runner it starts) is sampled for
CPU and RSS the whole time; the final per-stream summary is parsed from its output.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from benchmarks.measure import ProcessTreeMonitor, load_average
from benchmarks import profiling

_SUMMARY = re.compile(
    r"^\s+(?P<id>\S+)\s+(?P<bytes>\d+) bytes\s+chunks (?P<chunks>\d+)\s+reconnects "
    r"(?P<reconnects>\d+)\s+discontinuities (?P<disc>\d+)\s+errors (?P<errors>\d+)"
    r"(?:.*?  last error: (?P<last_error>.*))?"
)


@dataclass
class LiveResult:
    exit_code: int
    seconds: float  # from start to SIGINT
    wall_seconds: float  # from start to exit
    cpu_seconds: float  # whole tree, start to exit
    cpu_by_process: dict
    peak_rss_bytes: int
    peak_rss_by_process: dict
    stopped_epoch: float  # wall-clock time of the SIGINT
    load_average_1m: float
    streams: dict = field(default_factory=dict)  # id -> {bytes, chunks, reconnects, ...}
    output_tail: str = ""
    profile: Path | None = None
    steady_cpu_cores: float | None = None  # CPU seconds per second between warm-up and SIGINT
    steady_cpu_by_process: dict = field(default_factory=dict)
    # Wall-clock (start, end) of the py-spy profile, left out of the steady CPU rate.
    profiled_epochs: tuple[float, float] | None = None
    processes_by_name: dict = field(default_factory=dict)  # most processes of a name at once

    @property
    def total_bytes(self) -> int:
        return sum(s["bytes"] for s in self.streams.values())

    @property
    def reconnects(self) -> int:
        return sum(s["reconnects"] for s in self.streams.values())

    def error_examples(self, most: int = 5) -> dict[str, int]:
        """The streams' last errors (from the summary), most frequent first, with their counts."""
        counts: dict[str, int] = {}
        for stream in self.streams.values():
            if stream.get("last_error"):
                counts[stream["last_error"]] = counts.get(stream["last_error"], 0) + 1
        return dict(sorted(counts.items(), key=lambda item: -item[1])[:most])


def _env() -> dict:
    """The environment of a measured subprocess: this one's, with the repo root importable.

    The subprocess runs in its work dir, so a PYTHONPATH given to the benchmark (e.g. an older
    copy of streamtap for before/after numbers) comes first, and the repo root after it.
    """
    root = str(Path(__file__).resolve().parents[1])
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, root])}


def run_live_capture(config: dict, workdir: Path, seconds: float, drain_timeout: float = 180.0,
                     profile_seconds: float = 0.0, profile_after: float = 0.0,
                     warmup: float = 20.0, extra_args: tuple[str, ...] = ()) -> LiveResult:
    """Runs a capture for `seconds`, stops it with SIGINT and waits for it to drain.

    profile_seconds > 0: py-spy (non-blocking) samples the tree for that long, starting
    `profile_after` seconds into the capture.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "pipeline.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    command = [sys.executable, "-m", "streamtap.cli", "run", str(config_path),
               "--status-interval", "10", *extra_args]
    return run_monitored(command, workdir, seconds, drain_timeout, profile_seconds, profile_after,
                         warmup)


def run_monitored(command: list[str], workdir: Path, seconds: float, drain_timeout: float = 180.0,
                  profile_seconds: float = 0.0, profile_after: float = 0.0,
                  warmup: float = 20.0) -> LiveResult:
    """Runs `command` in its own process group for `seconds`, then SIGINT; measures its tree."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "output.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=str(workdir), env=_env(),
        )
    profile_path = None
    profiler = None
    # CPU samples (time, cpu, per process, wall clock) where py-spy started and stopped:
    # sampling costs the target CPU too, so the steady rate leaves that stretch out.
    profiled: list[tuple[float, float, dict, float]] = []
    started = time.monotonic()
    try:
        with ProcessTreeMonitor(proc.pid, interval=0.5) as monitor:
            deadline = started + seconds
            loads = []
            steady_start = None
            while time.monotonic() < deadline and proc.poll() is None:
                if profile_seconds and profiler is None and time.monotonic() - started >= profile_after:
                    profile_path = workdir / "profile.raw"
                    profiler = profiling.record_pid(proc.pid, profile_seconds, profile_path,
                                                   rate=50, subprocesses=True, gil=True)
                if profiler is not None and len(profiled) == (0 if profiler.poll() is None else 1):
                    monitor.sample()
                    profiled.append((time.monotonic(), monitor.cpu_seconds,
                                     dict(monitor.per_name), time.time()))
                time.sleep(min(1.0, max(deadline - time.monotonic(), 0.01)))
                if steady_start is None and time.monotonic() - started >= min(warmup, seconds / 2):
                    monitor.sample()
                    steady_start = (time.monotonic(), monitor.cpu_seconds, monitor.per_name)
                if time.monotonic() - started > seconds / 2 and not loads:
                    loads.append(load_average())
            stopped_at = time.monotonic()
            stopped_epoch = time.time()
            monitor.sample()
            steady_end = (stopped_at, monitor.cpu_seconds, monitor.per_name)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=drain_timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if profiler is not None:
            try:
                profiler.wait(timeout=60)
            except subprocess.TimeoutExpired:
                profiler.kill()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log_path.read_text(errors="replace")
    steady = steady_by = None
    if steady_start is not None and steady_end[0] > steady_start[0]:
        span = steady_end[0] - steady_start[0]
        cpu = steady_end[1] - steady_start[1]
        by = {name: used - steady_start[2].get(name, 0.0) for name, used in steady_end[2].items()}
        if profiled:
            begin = max(profiled[0], steady_start, key=lambda sample: sample[0])
            end = profiled[1] if len(profiled) > 1 else steady_end
            if 0 < end[0] - begin[0] < span:
                span -= end[0] - begin[0]
                cpu -= end[1] - begin[1]
                by = {name: used - (end[2].get(name, 0.0) - begin[2].get(name, 0.0))
                      for name, used in by.items()}
        steady = cpu / span
        steady_by = {name: round(used / span, 3) for name, used in by.items()}
    streams = {}
    summary = output.split("streamtap: summary", 1)
    if len(summary) == 2:
        for line in summary[1].splitlines():
            match = _SUMMARY.match(line)
            if match:
                streams[match.group("id")] = {
                    "bytes": int(match.group("bytes")),
                    "chunks": int(match.group("chunks")),
                    "reconnects": int(match.group("reconnects")),
                    "discontinuities": int(match.group("disc")),
                    "errors": int(match.group("errors")),
                    "last_error": match.group("last_error"),
                }
    return LiveResult(
        exit_code=proc.returncode,
        seconds=stopped_at - started,
        wall_seconds=time.monotonic() - started,
        cpu_seconds=monitor.cpu_seconds,
        cpu_by_process=monitor.per_name,
        peak_rss_bytes=monitor.peak_rss_bytes,
        peak_rss_by_process={k: round(v / 2**20, 1) for k, v in monitor.peak_rss_by_name.items()},
        stopped_epoch=stopped_epoch,
        load_average_1m=loads[0] if loads else load_average(),
        streams=streams,
        output_tail="\n".join(output.splitlines()[-15:]),
        profile=profile_path if profile_path and profile_path.exists() else None,
        steady_cpu_cores=steady,
        steady_cpu_by_process=steady_by or {},
        processes_by_name=dict(monitor.most_processes_by_name),
        profiled_epochs=((profiled[0][3], profiled[1][3] if len(profiled) > 1 else stopped_epoch)
                         if profiled else None),
    )
