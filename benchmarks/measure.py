"""What every scenario measures with: machine facts, load average, CPU and memory of process trees.

CPU is user+system seconds from the kernel (psutil), summed over a process and all of its
descendants; a descendant that exits keeps the CPU it had at its last sample, so sample often
(`ProcessTreeMonitor(interval=...)`). RSS is the sum over the tree, peak over the samples.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

__all__ = ["ProcessTreeMonitor", "load_average", "machine_info", "median", "Stopwatch"]


def load_average() -> float:
    """The 1-minute load average (runnable + uninterruptible tasks) right now."""
    return round(os.getloadavg()[0], 2)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _java_version() -> str | None:
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        return (out.stderr or out.stdout).splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - not installed
        return None


def machine_info() -> dict:
    """Cores, memory, CPU model, kernel and the versions of everything measured."""
    from streamtap.services.kafka import KAFKA_VERSION

    memory = psutil.virtual_memory()
    disk = psutil.disk_usage(str(Path(__file__).resolve().parent))
    return {
        "hostname": platform.node(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory.total / 2**30, 1),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "disk_free_gib": round(disk.free / 2**30, 1),
        "python": platform.python_version(),
        "apache_beam": _version("apache-beam"),
        "pyarrow": _version("pyarrow"),
        "kafka_python": _version("kafka-python"),
        "kafka_broker": KAFKA_VERSION,
        "java": _java_version(),
        "load_average_1m": load_average(),
    }


@dataclass
class TreeSample:
    cpu_seconds: float
    rss_bytes: int
    processes: int


@dataclass
class ProcessTreeMonitor:
    """Samples CPU seconds and RSS of a process tree in a background thread.

    Usage: `with ProcessTreeMonitor(pid) as m: ...`; then m.cpu_seconds, m.peak_rss_bytes,
    m.per_name (CPU seconds by process name). `extra_pids` adds processes outside the tree.
    """

    pid: int
    interval: float = 0.5
    extra_pids: list[int] = field(default_factory=list)
    include_root: bool = True

    def __post_init__(self) -> None:
        self._last: dict[tuple[int, float], tuple[str, float]] = {}
        self._start: dict[tuple[int, float], float] = {}
        self.peak_rss_bytes = 0
        self.peak_rss_by_name: dict[str, int] = {}
        self.most_processes_by_name: dict[str, int] = {}  # most processes of a name at once
        self.rss_samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-monitor", daemon=True)
        self.started = 0.0
        self.stopped = 0.0

    def _processes(self) -> list[psutil.Process]:
        found = []
        for pid in [self.pid, *self.extra_pids]:
            try:
                root = psutil.Process(pid)
            except psutil.NoSuchProcess:
                continue
            if self.include_root or pid != self.pid:
                found.append(root)
            try:
                found.extend(root.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
        return found

    def sample(self) -> None:
        rss = 0
        by_name: dict[str, int] = {}
        count: dict[str, int] = {}
        for proc in self._processes():
            try:
                with proc.oneshot():
                    key = (proc.pid, proc.create_time())
                    times = proc.cpu_times()
                    cpu = times.user + times.system
                    proc_rss = proc.memory_info().rss
                    rss += proc_rss
                    name = proc.name()
                    by_name[name] = by_name.get(name, 0) + proc_rss
                    count[name] = count.get(name, 0) + 1
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            self._start.setdefault(key, cpu if self._baseline_pending else 0.0)
            self._last[key] = (name, cpu)
        self._baseline_pending = False
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
        for name, value in by_name.items():
            self.peak_rss_by_name[name] = max(self.peak_rss_by_name.get(name, 0), value)
        for name, value in count.items():
            self.most_processes_by_name[name] = max(self.most_processes_by_name.get(name, 0), value)
        self.rss_samples.append(rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> "ProcessTreeMonitor":
        # CPU a process already used before the measurement starts is not counted.
        self._baseline_pending = True
        self.sample()
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.sample()
        self.stopped = time.monotonic()
        self._stop.set()
        self._thread.join()

    @property
    def cpu_seconds(self) -> float:
        return sum(cpu - self._start.get(key, 0.0) for key, (_, cpu) in self._last.items())

    @property
    def per_name(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for key, (name, cpu) in self._last.items():
            totals[name] = totals.get(name, 0.0) + cpu - self._start.get(key, 0.0)
        return {name: round(value, 2) for name, value in sorted(totals.items())}

    @property
    def wall_seconds(self) -> float:
        return (self.stopped or time.monotonic()) - self.started


class Stopwatch:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def python() -> str:
    return sys.executable
