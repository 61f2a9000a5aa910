"""A real standalone Apache Flink cluster on loopback, plus the Beam job server that feeds it.

`FlinkService(...).up()` starts one JobManager, N TaskManagers and (by default) a Beam Flink job
server, all bound to 127.0.0.1, each a foreground JVM tracked by a pid file in the state dir. It
returns {"flink_master": "127.0.0.1:8081", "job_endpoint": "127.0.0.1:8099", ...}; a capture then
runs on it with `streamtap run pipeline.yaml --runner=FlinkRunner --flink_master=127.0.0.1:8081`
(the Flink runner plug-in, streamtap.pipelines.runners.flink, finds the job server from the state
dir).

The cluster is Flink 1.19.3 (newest 1.19 patch release) from the PyPI packages `apache-flink`
(bin/, conf/) and `apache-flink-libraries` (lib/), unpacked, not pip-installed
(streamtap.pipelines.runners.distributions). The job server is the launcher jar the Flink runner
plug-in builds (beam-runners-flink-1.19 2.70.0; its Flink client jars are 1.19.0, so client and
cluster share the 1.19 minor version), started as `java -jar <launcher>`. Its patched classes
(streamtap.pipelines.runners.patches) are first on the job server's class path and the first jar
it ships to the cluster, so they win in the TaskManagers too (checked: the TaskManagers' Fn API
ports are on 127.0.0.1). The cluster's configuration: streamtap.services.flink_config.

Layout of the state dir:

    cluster.json                 ports and counts (read by status/down from another process)
    conf/config.yaml             Flink configuration of this instance (loopback, memory, restarts)
    conf/log4j-console.properties
    jobmanager.pid  jobmanager.log
    taskmanager-<i>.pid  taskmanager-<i>.log  tm-<i>/tmp
    job-server.pid  job-server.log  artifacts/
    worker-pool.pid  worker-pool.log   (with worker_pool_port: Python SDK workers, EXTERNAL)
    checkpoints/  savepoints/  tmp/
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
import uuid
from pathlib import Path

from streamtap.errors import ServiceError
from streamtap.pipelines.runners.distributions import FLINK_VERSION, ensure_flink
from streamtap.pipelines.runners.flink import FLINK_MINOR_VERSION, ensure_job_server
from streamtap.pipelines.runners.java import java_home
from streamtap.pipelines.runners.jobserver import BEAM_JOB_SERVER_VERSION
from streamtap.services import process
from streamtap.services.flink_config import job_server_command, write_flink_conf

__all__ = ["FlinkService"]

log = logging.getLogger(__name__)

_START_TIMEOUT = 120.0
_REST_TIMEOUT_SECONDS = 30.0  # GETs of the JobManager REST API (see FlinkService.rest)


class FlinkService:
    """A standalone Flink cluster (1 JobManager, N TaskManagers) and a Beam job server on loopback.

    The JobManager's REST API / web UI listens on 127.0.0.1:port (the `--flink_master`), its RPC
    on rpc_port; the Beam job service on 127.0.0.1:job_port (the `--job_endpoint`). TaskManagers
    use random loopback ports. `down()` stops everything; checkpoints stay in the state dir.
    """

    name = "flink"

    @staticmethod
    def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--port", type=int, default=8081,
                            help="REST API / web UI port on 127.0.0.1, the --flink_master "
                            "(default 8081)")
        parser.add_argument("--taskmanagers", type=int, default=1,
                            help="number of TaskManager processes (default 1)")
        parser.add_argument("--slots", type=int, default=2,
                            help="task slots per TaskManager (default 2)")
        parser.add_argument("--job-port", dest="job_port", type=int, default=8099,
                            help="port of the Beam job service, the --job_endpoint (default 8099; "
                            "0: do not start a job server)")
        parser.add_argument("--worker-pool-port", dest="worker_pool_port", type=int, default=0,
                            help="also start a Beam worker pool on this port (e.g. 50000), so "
                            "captures run with --environment_type=EXTERNAL get one Python "
                            "process per task slot instead of running in `streamtap run` "
                            "(default 0: none)")

    def __init__(
        self,
        state_dir: Path | None = None,
        port: int = 8081,
        taskmanagers: int = 1,
        slots: int = 2,
        job_port: int = 8099,
        rpc_port: int | None = None,
        flink_config: dict[str, object] | None = None,
        worker_pool_port: int = 0,
    ) -> None:
        """
        Args:
          state_dir: configs, logs, pid files, checkpoints; default `process.state_dir("flink")`.
          port: REST / web UI port on 127.0.0.1 (what `--flink_master` names).
          taskmanagers: number of TaskManager processes, >= 1.
          slots: task slots per TaskManager, >= 1.
          job_port: Beam job service port; 0 starts no job server (submit with
            `--flink_job_server_jar` instead, see streamtap.pipelines.runners.flink).
          rpc_port: JobManager RPC port; default 6123 when port is 8081, else a free port.
          flink_config: extra config.yaml entries (flat keys), e.g. {"heartbeat.timeout": 10000}.
          worker_pool_port: when > 0, a Beam worker pool (streamtap.services.worker_pool) on
            127.0.0.1:worker_pool_port: a capture with `--environment_type=EXTERNAL` then runs
            its Python SDK workers as processes of that pool, one per SDK environment.
        """
        if taskmanagers < 1:
            raise ValueError(f"taskmanagers must be >= 1, got {taskmanagers}")
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        for value, what in ((port, "port"), (job_port, "job_port"),
                            (worker_pool_port, "worker_pool_port")):
            if not 0 <= value <= 65535 or (what == "port" and value == 0):
                raise ValueError(f"{what} must be a TCP port, got {value}")
        self.state_dir = Path(state_dir) if state_dir is not None else process.state_dir("flink")
        self.port = port
        self.taskmanagers = taskmanagers
        self.slots = slots
        self.job_port = job_port
        self.worker_pool_port = worker_pool_port
        self.rpc_port = rpc_port if rpc_port is not None else (
            6123 if port == 8081 else process.free_port()
        )
        self.flink_config = dict(flink_config or {})

    # --- public API ---------------------------------------------------------------------------

    @property
    def flink_master(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def job_endpoint(self) -> str | None:
        return f"127.0.0.1:{self.job_port}" if self.job_port else None

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> dict[str, str]:
        """Starts whatever is not running yet and waits until it serves; idempotent.

        The first call fetches Flink (PyPI, ~230 MB) and the job server jars (Maven Central,
        ~160 MB) into the streamtap cache dir.
        """
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._adopt_layout(starting=True)
        home = ensure_flink()
        launcher = ensure_job_server() if self.job_port else None
        try:
            if not self._pid(self._jm_pid_path):
                self._check_port_free(self.port, "REST")
                self._check_port_free(self.rpc_port, "JobManager RPC")
                self._write_config(home)
                self._start_jobmanager(home)
            else:
                self._write_config(home)  # new TaskManagers read it
            for index in range(self.taskmanagers):
                if not self._pid(self._tm_pid_path(index)):
                    self._start_taskmanager(home, index)
            if launcher is not None and not self._pid(self._js_pid_path):
                self._check_port_free(self.job_port, "Beam job service")
                self._start_job_server(launcher)
            if self.worker_pool_port and not self._pid(self._wp_pid_path):
                self._check_port_free(self.worker_pool_port, "Beam worker pool")
                self._start_worker_pool()
            self._wait_ready(time.monotonic() + _START_TIMEOUT)
        except BaseException:
            self.down()
            raise
        log.info("Flink %s up at %s in %.1f s", FLINK_VERSION, self.flink_master,
                 time.monotonic() - started)
        return self._info()

    def down(self) -> None:
        """Stops the job server, the worker pool (with its workers), the TaskManagers and the
        JobManager. Safe when nothing runs."""
        self._adopt_layout()
        process.stop_daemon(self._js_pid_path, timeout=10)
        process.stop_daemon(self._wp_pid_path, timeout=10)  # and its workers (same group)
        for pid_file in sorted(self.state_dir.glob("taskmanager-*.pid")):
            process.stop_daemon(pid_file, timeout=15)
        process.stop_daemon(self._jm_pid_path, timeout=15)

    def status(self) -> dict[str, str] | None:
        """None when the JobManager is not running; else addresses and what runs."""
        self._adopt_layout()
        if not self._pid(self._jm_pid_path):
            return None
        info = self._info()
        running = sum(1 for i in range(self.taskmanagers) if self._pid(self._tm_pid_path(i)))
        info["taskmanager_processes"] = f"{running}/{self.taskmanagers} running"
        try:
            info["registered_taskmanagers"] = str(len(self.registered_taskmanagers()))
            jobs = process.get_json(f"{self.rest_url}/jobs/overview", timeout=5).get("jobs", [])
            info["running_jobs"] = str(sum(1 for job in jobs if job.get("state") == "RUNNING"))
        except (OSError, ValueError) as error:
            info["rest"] = f"not answering ({error})"
        if self.job_port:
            info["job_server"] = "running" if self._pid(self._js_pid_path) else "not running"
        if self.worker_pool_port:
            info["worker_pool_process"] = (
                "running" if self._pid(self._wp_pid_path) else "not running"
            )
        return info

    def kill_taskmanager(self, index: int) -> None:
        """SIGKILLs TaskManager `index` (a crash: its tasks fail, the job restarts elsewhere)."""
        self._check_index(index)
        process.stop_daemon(self._tm_pid_path(index), timeout=10, sig=signal.SIGKILL)

    def start_taskmanager(self, index: int, wait: bool = True) -> None:
        """(Re)starts TaskManager `index`; with wait, returns once it registered."""
        self._check_index(index)
        if not self._pid(self._tm_pid_path(index)):
            resource_id = self._start_taskmanager(ensure_flink(), index)
            if wait:
                deadline = time.monotonic() + _START_TIMEOUT
                while resource_id not in self.registered_taskmanagers():
                    if time.monotonic() > deadline or not self._pid(self._tm_pid_path(index)):
                        raise ServiceError(
                            f"TaskManager {index} did not register; see "
                            f"{self._tm_log_path(index)}:\n"
                            f"{process._tail(self._tm_log_path(index))}"
                        )
                    time.sleep(0.2)

    def taskmanager_running(self, index: int) -> bool:
        return self._pid(self._tm_pid_path(index)) is not None

    def registered_taskmanagers(self) -> list[str]:
        """Resource ids of the TaskManagers the JobManager currently knows."""
        data = process.get_json(f"{self.rest_url}/taskmanagers", timeout=5)
        return [tm.get("id", "") for tm in data.get("taskmanagers", [])]

    def jobs(self) -> list[dict]:
        """The JobManager's job overview: [{"jid", "name", "state", ...}, ...]."""
        return self.rest("/jobs/overview").get("jobs", [])

    def rest(self, path: str) -> dict:
        """GET of the JobManager's REST API, e.g. rest("/jobs/<id>/checkpoints"); OSError if not."""
        # A generous timeout: while a job is being submitted on a busy 2-core machine, the
        # JobManager has been seen to take over 5 s to answer.
        return process.get_json(f"{self.rest_url}{path}", timeout=_REST_TIMEOUT_SECONDS)

    # --- layout -------------------------------------------------------------------------------

    @property
    def conf_dir(self) -> Path:
        return self.state_dir / "conf"

    @property
    def _jm_pid_path(self) -> Path:
        return self.state_dir / "jobmanager.pid"

    @property
    def jobmanager_log(self) -> Path:
        return self.state_dir / "jobmanager.log"

    def _tm_pid_path(self, index: int) -> Path:
        return self.state_dir / f"taskmanager-{index}.pid"

    def _tm_log_path(self, index: int) -> Path:
        return self.state_dir / f"taskmanager-{index}.log"

    @property
    def _js_pid_path(self) -> Path:
        return self.state_dir / "job-server.pid"

    @property
    def job_server_log(self) -> Path:
        return self.state_dir / "job-server.log"

    @property
    def _wp_pid_path(self) -> Path:
        return self.state_dir / "worker-pool.pid"

    @property
    def worker_pool_log(self) -> Path:
        return self.state_dir / "worker-pool.log"

    @property
    def worker_pool(self) -> str | None:
        """host:port of the Beam worker pool (the EXTERNAL --environment_config), or None."""
        return f"127.0.0.1:{self.worker_pool_port}" if self.worker_pool_port else None

    def process_ids(self) -> dict[str, int]:
        """Pids of the running daemons: jobmanager, taskmanager-<i>, job-server, worker-pool."""
        paths = {"jobmanager": self._jm_pid_path, "job-server": self._js_pid_path,
                 "worker-pool": self._wp_pid_path}
        for index in range(self.taskmanagers):
            paths[f"taskmanager-{index}"] = self._tm_pid_path(index)
        return {name: pid for name, path in paths.items() if (pid := self._pid(path))}

    @property
    def _layout_path(self) -> Path:
        return self.state_dir / "cluster.json"

    def _pid(self, path: Path) -> int | None:
        return process.daemon_pid(path)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.taskmanagers:
            raise ValueError(
                f"taskmanager index must be in 0..{self.taskmanagers - 1}, got {index}"
            )

    def _adopt_layout(self, starting: bool = False) -> None:
        """Uses the ports recorded in the state dir while that cluster runs.

        So `streamtap services down flink` (default arguments) stops a cluster started on other
        ports, and `up()` on a running cluster returns its real addresses.
        """
        try:
            saved = json.loads(self._layout_path.read_text())
        except (OSError, ValueError):
            return
        if not self._pid(self._jm_pid_path) and starting:
            return  # nothing runs: the caller's settings win
        self.port = int(saved.get("port", self.port))
        self.rpc_port = int(saved.get("rpc_port", self.rpc_port))
        self.job_port = int(saved.get("job_port", self.job_port))
        # A running cluster without a pool keeps the caller's port: `up` then adds the pool.
        self.worker_pool_port = int(saved.get("worker_pool_port") or self.worker_pool_port)
        self.slots = int(saved.get("slots", self.slots))
        if not starting:
            self.taskmanagers = max(self.taskmanagers, int(saved.get("taskmanagers", 1)))

    def _info(self) -> dict[str, str]:
        info = {
            "flink_master": self.flink_master,
            "web_ui": self.rest_url,
            "flink_version": FLINK_VERSION,
            "taskmanagers": str(self.taskmanagers),
            "slots_per_taskmanager": str(self.slots),
        }
        if self.job_port:
            info["job_endpoint"] = self.job_endpoint
            info["beam_job_server"] = (
                f"beam-runners-flink-{FLINK_MINOR_VERSION} {BEAM_JOB_SERVER_VERSION}"
            )
        if self.worker_pool_port:
            info["worker_pool"] = f"{self.worker_pool} (--environment_type=EXTERNAL)"
        info["state_dir"] = str(self.state_dir)
        return info

    # --- starting -----------------------------------------------------------------------------

    def _check_port_free(self, port: int, what: str) -> None:
        if process.port_open(port):
            raise ServiceError(
                f"cannot start Flink: its {what} port 127.0.0.1:{port} is already in use by "
                "another program; choose another port (streamtap services up flink --port N)"
            )

    def _write_config(self, home: Path) -> None:
        write_flink_conf(self.conf_dir, self.state_dir, home, port=self.port,
                         rpc_port=self.rpc_port, slots=self.slots, extra=self.flink_config)
        self._layout_path.write_text(json.dumps({
            "port": self.port, "rpc_port": self.rpc_port, "job_port": self.job_port,
            "taskmanagers": self.taskmanagers, "slots": self.slots,
            "worker_pool_port": self.worker_pool_port, "flink_version": FLINK_VERSION,
        }, indent=2) + "\n")

    def _env(self, home: Path) -> dict[str, str]:
        env = {
            "FLINK_HOME": str(home),
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LOG_DIR": str(self.state_dir / "log"),
            "FLINK_PID_DIR": str(self.state_dir / "log"),
            "MAX_LOG_FILE_NUMBER": "2",
        }
        home_of_java = java_home()
        if home_of_java:
            env["JAVA_HOME"] = home_of_java
        return env

    def _start_jobmanager(self, home: Path) -> None:
        self.jobmanager_log.write_bytes(b"")
        pid = process.start_daemon(
            ["bash", str(home / "bin" / "jobmanager.sh"), "start-foreground"],
            self._jm_pid_path, self.jobmanager_log, env=self._env(home), cwd=self.state_dir,
        )
        log.info("started Flink JobManager (pid %d), log %s", pid, self.jobmanager_log)

    def _start_taskmanager(self, home: Path, index: int) -> str:
        tm_tmp = self.state_dir / f"tm-{index}" / "tmp"
        tm_tmp.mkdir(parents=True, exist_ok=True)
        resource_id = f"tm-{index}-{uuid.uuid4().hex[:6]}"
        log_path = self._tm_log_path(index)
        with open(log_path, "ab") as out:
            out.write(f"--- starting TaskManager {index} as {resource_id}\n".encode())
        pid = process.start_daemon(
            ["bash", str(home / "bin" / "taskmanager.sh"), "start-foreground",
             f"-Dtaskmanager.resource-id={resource_id}", f"-Dio.tmp.dirs={tm_tmp}"],
            self._tm_pid_path(index), log_path, env=self._env(home), cwd=self.state_dir,
        )
        log.info("started Flink TaskManager %d (pid %d), log %s", index, pid, log_path)
        return resource_id

    def _start_job_server(self, launcher: Path) -> None:
        self.job_server_log.write_bytes(b"")
        command = job_server_command(
            launcher,
            flink_master=self.flink_master,
            job_port=self.job_port,
            artifacts_dir=self.state_dir / "artifacts",
            flink_conf_dir=self.conf_dir,
        )
        pid = process.start_daemon(command, self._js_pid_path, self.job_server_log,
                                   cwd=self.state_dir)
        log.info("started Beam Flink job server (pid %d) on %s, log %s", pid, self.job_endpoint,
                 self.job_server_log)

    def _start_worker_pool(self) -> None:
        self.worker_pool_log.write_bytes(b"")
        pid = process.start_daemon(
            [sys.executable, "-m", "streamtap.services.worker_pool",
             f"--port={self.worker_pool_port}"],
            self._wp_pid_path, self.worker_pool_log, cwd=self.state_dir,
        )
        log.info("started Beam worker pool (pid %d) on %s, log %s", pid, self.worker_pool,
                 self.worker_pool_log)

    def _wait_ready(self, deadline: float) -> None:
        """Waits for the REST API, every TaskManager's registration and the job service."""
        last_error = ""
        while True:
            if not self._pid(self._jm_pid_path):
                raise ServiceError(
                    f"the Flink JobManager exited; see {self.jobmanager_log}:\n"
                    f"{process._tail(self.jobmanager_log)}"
                )
            for index in range(self.taskmanagers):
                if not self._pid(self._tm_pid_path(index)):
                    raise ServiceError(
                        f"Flink TaskManager {index} exited; see {self._tm_log_path(index)}:\n"
                        f"{process._tail(self._tm_log_path(index))}"
                    )
            if self.job_port and not self._pid(self._js_pid_path):
                raise ServiceError(
                    f"the Beam job server exited; see {self.job_server_log}:\n"
                    f"{process._tail(self.job_server_log)}"
                )
            if self.worker_pool_port and not self._pid(self._wp_pid_path):
                raise ServiceError(
                    f"the Beam worker pool exited; see {self.worker_pool_log}:\n"
                    f"{process._tail(self.worker_pool_log)}"
                )
            try:
                registered = len(self.registered_taskmanagers())
                last_error = f"{registered}/{self.taskmanagers} TaskManagers registered"
                if registered >= self.taskmanagers and (
                    not self.job_port or process.port_open(self.job_port)
                ) and (
                    not self.worker_pool_port or process.port_open(self.worker_pool_port)
                ):
                    return
            except (OSError, ValueError) as error:
                last_error = str(error)
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"Flink at {self.flink_master} is not ready ({last_error}); see "
                    f"{self.jobmanager_log}:\n{process._tail(self.jobmanager_log)}"
                )
            time.sleep(0.25)
