"""Start, find and stop the background daemons that `streamtap services` runs.

Each daemon runs in its own process group with its pid in a file under the service's state
directory and its output in a log file beside it, so `down` and `status` work from another
process (another shell, a pytest fixture, CI) than the one that started it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Mapping, Sequence

from streamtap.errors import ServiceError

__all__ = [
    "cache_dir",
    "state_dir",
    "free_port",
    "port_open",
    "wait_for_port",
    "start_daemon",
    "daemon_pid",
    "stop_daemon",
]


def cache_dir() -> Path:
    """Downloads that outlive services (Maven jars): $STREAMTAP_CACHE or ~/.cache/streamtap."""
    path = Path(os.environ.get("STREAMTAP_CACHE", Path.home() / ".cache" / "streamtap"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_dir(service: str) -> Path:
    """Data, logs and pid files of running services: $STREAMTAP_STATE/<service>, default ./.streamtap."""
    path = Path(os.environ.get("STREAMTAP_STATE", ".streamtap")).resolve() / service
    path.mkdir(parents=True, exist_ok=True)
    return path


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
        if pid is not None and not _alive(pid):
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


def daemon_pid(pid_path: Path) -> int | None:
    """The pid in pid_path if that process is still alive, else None."""
    try:
        pid = int(pid_path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


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
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        _signal_group(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)
    pid_path.unlink(missing_ok=True)
    return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our own child that has exited, so it does not linger as a zombie.
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except OSError:
        return True


def _tail(path: Path | None, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except (OSError, AttributeError):
        return "(no log)"
