"""Start, find and stop the background daemons that `streamtap services` runs.

Each daemon runs in its own process group with its pid in a file under the service's state
directory and its output in a log file beside it, so `down` and `status` work from another
process (another shell, a pytest fixture, CI) than the one that started it. Where state and
downloads live (`state_dir`, `cache_dir`) and whether a pid file's daemon is alive
(`daemon_pid`) are streamtap.pipelines.runners.local's, shared with the runners, which find a
local cluster's job server the same way.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from streamtap.errors import ServiceError
from streamtap.pipelines.runners.local import cache_dir, daemon_pid, pid_alive, state_dir

__all__ = [
    "cache_dir",
    "daemon_pid",
    "free_port",
    "get_json",
    "port_open",
    "start_daemon",
    "state_dir",
    "stop_daemon",
    "wait_for_port",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout: float, log_path: Path | None = None, pid: int | None = None):
    """Waits until something accepts connections on 127.0.0.1:port; raises ServiceError if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if pid is not None and not pid_alive(pid):
            break
        time.sleep(0.2)
    hint = f"; see its log {log_path}:\n{_tail(log_path)}" if log_path else ""
    raise ServiceError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s{hint}")


def start_daemon(
    command: Sequence[str],
    pid_path: Path,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Starts `command` in a new process group, output to log_path; writes and returns its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    pid_path.write_text(str(process.pid))
    return process.pid


def stop_daemon(pid_path: Path, timeout: float = 15.0, sig: int = signal.SIGTERM) -> bool:
    """Signals the daemon's process group, waits for it to exit (SIGKILL after timeout).

    Returns True if a running daemon was stopped.
    """
    pid = daemon_pid(pid_path)
    if pid is None:
        pid_path.unlink(missing_ok=True)
        return False
    _signal_group(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        _signal_group(pid, signal.SIGKILL)
        while pid_alive(pid):
            time.sleep(0.05)
    pid_path.unlink(missing_ok=True)
    return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def get_json(url: str, timeout: float) -> dict:
    """GET of a daemon's JSON status API (Flink REST, Spark's /json/); OSError if it fails."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read().decode())
    except urllib.error.HTTPError as error:
        raise OSError(f"HTTP {error.code} from {url}") from None


def _tail(path: Path | None, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except (OSError, AttributeError):
        return "(no log)"
