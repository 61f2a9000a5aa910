"""Where streamtap keeps things on this machine, and whether a local cluster's daemon is alive.

- `cache_dir()`: downloads that outlive any run (Maven jars, Flink and Spark from PyPI, job-server
  launchers): $STREAMTAP_CACHE, default ~/.cache/streamtap.
- `state_dir(service)`: configs, logs and pid files of the services `streamtap services up`
  starts: $STREAMTAP_STATE/<service>, default ./.streamtap/<service>.
- `running_cluster(service, pid_file, port_key)`: the `cluster.json` a running local cluster
  wrote into its state dir, which is how a runner finds that cluster's job server or worker
  pool without the services package.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["cache_dir", "daemon_pid", "pid_alive", "running_cluster", "state_dir", "state_root"]


def cache_dir() -> Path:
    """Downloads that outlive services (Maven jars): $STREAMTAP_CACHE or ~/.cache/streamtap."""
    path = Path(os.environ.get("STREAMTAP_CACHE", Path.home() / ".cache" / "streamtap"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_root() -> Path:
    """$STREAMTAP_STATE (default ./.streamtap), absolute; not created."""
    return Path(os.environ.get("STREAMTAP_STATE", ".streamtap")).resolve()


def state_dir(service: str) -> Path:
    """Data, logs and pid files of services: $STREAMTAP_STATE/<service>, default ./.streamtap."""
    path = state_root() / service
    path.mkdir(parents=True, exist_ok=True)
    return path


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie does not; our own exited child is reaped)."""
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


def daemon_pid(pid_path: Path) -> int | None:
    """The pid in pid_path if that process is still alive, else None."""
    try:
        pid = int(pid_path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def running_cluster(
    service: str, pid_file: str, port_key: str, state_dir: Path | None = None
) -> dict | None:
    """cluster.json of the local `service` cluster in `state_dir` (default: its dir under
    $STREAMTAP_STATE), if its daemon `pid_file` runs and the file has a `port_key`; else None."""
    directory = Path(state_dir) if state_dir is not None else state_root() / service
    try:
        saved = json.loads((directory / "cluster.json").read_text())
    except (OSError, ValueError):
        return None
    if not daemon_pid(directory / pid_file) or not saved.get(port_key):
        return None
    return saved
