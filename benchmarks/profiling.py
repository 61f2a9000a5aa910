"""Profiles with py-spy: record a running process (or a command), summarise the samples.

py-spy's `raw` format is one collapsed stack per line (`frame;frame;... count`), root first.
`summarize()` turns it into the two tables that say where time goes: self time per function
(the leaf frame) and inclusive time per function (anywhere on the stack), as % of all samples.
Idle samples are left out by py-spy unless asked (`--idle`), so percentages are of busy time.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["py_spy", "record_pid", "summarize", "format_summary"]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    """The py-spy executable next to this Python, or on PATH."""
    candidate = Path(sys.executable).with_name("py-spy")
    if candidate.exists():
        return str(candidate)
    return shutil.which("py-spy")


def record_pid(pid: int, seconds: float, output: Path, rate: int = 100,
               subprocesses: bool = False, native: bool = False,
               gil: bool = False) -> subprocess.Popen | None:
    """Starts `py-spy record` on a running process for `seconds`; returns the Popen (or None).

    --nonblocking: the target is not paused per sample, so the measurement is not distorted.
    gil: only samples of the thread holding the GIL, i.e. where the Python CPU time goes
    (without it, threads blocked in fsync or socket waits are sampled too: wall time).
    """
    exe = py_spy()
    if exe is None:
        return None
    command = [exe, "record", "--nonblocking", "-r", str(rate), "-f", "raw", "-o", str(output),
               "-d", str(max(1, int(seconds))), "-p", str(pid), "--threads"]
    if subprocesses:
        command.append("--subprocesses")
    if native:
        command.append("--native")
    if gil:
        command.append("--gil")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    file = match.group("file")
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{match.group('func')} ({file})"


def summarize(raw: Path, top: int = 15, thread_filter: str | None = None) -> dict:
    """{"samples": n, "self": [(function, %)], "inclusive": [(function, %)]} of a raw profile."""
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in Path(raw).read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        if thread_filter and thread_filter not in stack:
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith(("thread ", "process "))]
        if not frames:
            continue
        total += n
        self_counts[frames[-1]] += n
        for name in set(frames):
            incl_counts[name] += n
    def pct(counter):
        return [(name, round(100.0 * c / total, 1)) for name, c in counter.most_common(top)] if total else []
    return {"samples": total, "self": pct(self_counts), "inclusive": pct(incl_counts)}


def format_summary(summary: dict, top: int = 12) -> str:
    lines = [f"samples: {summary['samples']}", "self time:"]
    lines += [f"  {p:5.1f}%  {name}" for name, p in summary["self"][:top]]
    lines.append("inclusive:")
    lines += [f"  {p:5.1f}%  {name}" for name, p in summary["inclusive"][:top]]
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_summary(summarize(Path(sys.argv[1]), top=int(sys.argv[2]) if len(sys.argv) > 2 else 25), 40))
