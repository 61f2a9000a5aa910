"""A real standalone Apache Spark cluster on loopback, plus the Beam job server that feeds it.

`SparkService(...).up()` starts one Spark Master, N Workers and (by default) a Beam Spark job
server, all bound to 127.0.0.1, each a foreground JVM tracked by a pid file in the state dir. It
returns {"spark_master_url": "spark://127.0.0.1:7077", "job_endpoint": "127.0.0.1:8098", ...}; a
bounded capture then runs on it with
`streamtap run pipeline.yaml --runner=SparkRunner --spark_master_url=spark://127.0.0.1:7077
--duration 20` (the Spark runner plug-in, streamtap.pipelines.runners.spark, finds the job server
from the state dir). Beam's portable Spark runner runs batch pipelines only: unbounded captures
need Flink or Prism.

- The cluster is Spark 3.5.9 from the PyPI sdist `pyspark`, unpacked into the streamtap cache dir
  (streamtap.pipelines.runners.distributions). pyspark 3.5 has no start-master.sh /
  start-worker.sh, so the Master and Worker are started as plain `java -cp <SPARK_HOME>/jars/*
  org.apache.spark.deploy.{master.Master, worker.Worker}` with SPARK_LOCAL_IP=127.0.0.1.
- The job server is the launcher jar the Spark runner plug-in builds (beam-runners-spark-3
  2.70.0 on the distribution's jars, with streamtap's patches), run as the Spark driver (client
  mode). Spark's own options for the driver come from JVM system properties (`-Dspark.*`,
  streamtap.pipelines.runners.spark.driver_properties), which Beam's SparkContextFactory reads:
  driver and block manager on 127.0.0.1, no driver web UI, a small executor heap.
- Executors: the runner plug-in ships only the launcher to them (`--files_to_stage`); its
  manifest names the jars by absolute file: URL (Workers run on this machine). Beam's Guava goes
  first on their class path (`spark.executor.extraClassPath`): with Spark's Guava 14 Beam's GCS
  file system registrar fails in every task (NoSuchMethodError Preconditions.checkState).

Layout of the state dir:

    cluster.json                 ports and counts (read by status/down from another process)
    conf/log4j2.properties
    master.pid  master.log
    worker-<i>.pid  worker-<i>.log  work-<i>/   (executors' working dirs and logs)
    job-server.pid  job-server.log  artifacts/
    tmp/                          spark.local.dir
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from pathlib import Path

from streamtap.errors import ServiceError
from streamtap.pipelines.runners.distributions import SPARK_VERSION, ensure_spark
from streamtap.pipelines.runners.java import SPARK_JAVA17_OPTS, java, java_home
from streamtap.pipelines.runners.jobserver import BEAM_JOB_SERVER_VERSION
from streamtap.pipelines.runners.spark import driver_properties, ensure_job_server
from streamtap.services import process

__all__ = ["SparkService", "job_server_command"]

log = logging.getLogger(__name__)

_START_TIMEOUT = 120.0

_LOG4J2 = """rootLogger.level = info
rootLogger.appenderRef.stdout.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yyyy-MM-dd HH:mm:ss,SSS} %-5p %c{1}: %m%n%ex
logger.jetty.name = org.sparkproject.jetty
logger.jetty.level = warn
logger.netty.name = org.apache.beam.vendor.grpc.v1p69p0.io.netty
logger.netty.level = warn
"""


class SparkService:
    """A standalone Spark cluster (1 Master, N Workers) and a Beam job server on loopback.

    The Master listens on spark://127.0.0.1:port (the `--spark_master_url`), its web UI on
    127.0.0.1:ui_port; the Beam job service on 127.0.0.1:job_port (the `--job_endpoint`). Workers
    use random loopback ports. `down()` stops everything.
    """

    name = "spark"

    @staticmethod
    def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--port", type=int, default=7077,
                            help="Spark Master port on 127.0.0.1, the --spark_master_url "
                            "spark://127.0.0.1:PORT (default 7077)")
        parser.add_argument("--ui-port", dest="ui_port", type=int, default=8080,
                            help="Master web UI port (default 8080)")
        parser.add_argument("--workers", type=int, default=1,
                            help="number of Worker processes (default 1)")
        parser.add_argument("--cores", type=int, default=2,
                            help="cores each Worker offers (default 2)")
        parser.add_argument("--memory", default="1g",
                            help="memory each Worker offers to executors (default 1g)")
        parser.add_argument("--job-port", dest="job_port", type=int, default=8098,
                            help="port of the Beam job service, the --job_endpoint (default 8098; "
                            "0: do not start a job server)")

    def __init__(
        self,
        state_dir: Path | None = None,
        port: int = 7077,
        ui_port: int = 8080,
        workers: int = 1,
        cores: int = 2,
        memory: str = "1g",
        job_port: int = 8098,
        executor_memory: str = "512m",
    ) -> None:
        """
        Args:
          state_dir: logs, pid files, work dirs; default `process.state_dir("spark")`.
          port: Master port on 127.0.0.1 (`--spark_master_url=spark://127.0.0.1:<port>`).
          ui_port: Master web UI port (also its JSON status API, /json/).
          workers: number of Worker processes, >= 1.
          cores / memory: what each Worker offers to executors.
          job_port: Beam job service port; 0 starts no job server (submit with
            `--spark_job_server_jar` instead, see streamtap.pipelines.runners.spark).
          executor_memory: heap of each executor of a job submitted through the job server.
        """
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if cores < 1:
            raise ValueError(f"cores must be >= 1, got {cores}")
        if not re.fullmatch(r"\d+[kmgKMG]", memory):
            raise ValueError(f"memory must look like 512m or 1g, got {memory!r}")
        for value, what in ((port, "port"), (ui_port, "ui_port"), (job_port, "job_port")):
            if not 0 <= value <= 65535 or (what == "port" and value == 0):
                raise ValueError(f"{what} must be a TCP port, got {value}")
        self.state_dir = Path(state_dir) if state_dir is not None else process.state_dir("spark")
        self.port = port
        self.ui_port = ui_port
        self.workers = workers
        self.cores = cores
        self.memory = memory
        self.job_port = job_port
        self.executor_memory = executor_memory

    # --- public API ---------------------------------------------------------------------------

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    @property
    def job_endpoint(self) -> str | None:
        return f"127.0.0.1:{self.job_port}" if self.job_port else None

    @property
    def web_ui(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    def up(self) -> dict[str, str]:
        """Starts whatever is not running yet and waits until it serves; idempotent.

        The first call fetches Spark (PyPI sdist, ~320 MB) and the job server jars (Maven
        Central, ~120 MB) into the streamtap cache dir.
        """
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._adopt_layout(starting=True)
        home = ensure_spark()
        launcher = ensure_job_server() if self.job_port else None
        try:
            self._write_config(launcher)
            if not self._pid(self._master_pid_path):
                self._check_port_free(self.port, "Master")
                self._check_port_free(self.ui_port, "Master web UI")
                self._start_master(home)
                process.wait_for_port(self.port, _START_TIMEOUT, self.master_log,
                                      self._pid(self._master_pid_path))
            for index in range(self.workers):
                if not self._pid(self._worker_pid_path(index)):
                    self._start_worker(home, index)
            if launcher is not None and not self._pid(self._js_pid_path):
                self._check_port_free(self.job_port, "Beam job service")
                self._start_job_server(launcher)
            self._wait_ready(time.monotonic() + _START_TIMEOUT)
        except BaseException:
            self.down()
            raise
        log.info("Spark %s up at %s in %.1f s", SPARK_VERSION, self.master_url,
                 time.monotonic() - started)
        return self._info()

    def down(self) -> None:
        """Stops the job server, the Workers (and their executors) and the Master."""
        self._adopt_layout()
        process.stop_daemon(self._js_pid_path, timeout=10)
        for pid_file in sorted(self.state_dir.glob("worker-*.pid")):
            process.stop_daemon(pid_file, timeout=15)
        process.stop_daemon(self._master_pid_path, timeout=15)

    def status(self) -> dict[str, str] | None:
        """None when the Master is not running; else addresses and what runs."""
        self._adopt_layout()
        if not self._pid(self._master_pid_path):
            return None
        info = self._info()
        running = sum(1 for i in range(self.workers) if self._pid(self._worker_pid_path(i)))
        info["worker_processes"] = f"{running}/{self.workers} running"
        try:
            state = self.master_state()
            info["alive_workers"] = str(state.get("aliveworkers", 0))
            info["running_applications"] = str(len(state.get("activeapps", [])))
            info["completed_applications"] = str(len(state.get("completedapps", [])))
        except (OSError, ValueError) as error:
            info["web_ui"] = f"{self.web_ui} (not answering: {error})"
        if self.job_port:
            info["job_server"] = "running" if self._pid(self._js_pid_path) else "not running"
        return info

    def master_state(self) -> dict:
        """The Master's JSON status (web UI /json/): workers, activeapps, completedapps, ..."""
        return process.get_json(f"{self.web_ui}/json/", timeout=5)

    def alive_workers(self) -> list[dict]:
        return [w for w in self.master_state().get("workers", []) if w.get("state") == "ALIVE"]

    def applications(self) -> list[dict]:
        """Running and completed applications (each {"id", "name", "state", ...})."""
        state = self.master_state()
        return [*state.get("activeapps", []), *state.get("completedapps", [])]

    # --- layout -------------------------------------------------------------------------------

    @property
    def conf_dir(self) -> Path:
        return self.state_dir / "conf"

    @property
    def _master_pid_path(self) -> Path:
        return self.state_dir / "master.pid"

    @property
    def master_log(self) -> Path:
        return self.state_dir / "master.log"

    def _worker_pid_path(self, index: int) -> Path:
        return self.state_dir / f"worker-{index}.pid"

    def worker_log(self, index: int) -> Path:
        return self.state_dir / f"worker-{index}.log"

    @property
    def _js_pid_path(self) -> Path:
        return self.state_dir / "job-server.pid"

    @property
    def job_server_log(self) -> Path:
        return self.state_dir / "job-server.log"

    @property
    def _layout_path(self) -> Path:
        return self.state_dir / "cluster.json"

    def _pid(self, path: Path) -> int | None:
        return process.daemon_pid(path)

    def _adopt_layout(self, starting: bool = False) -> None:
        """Uses the ports recorded in the state dir while that cluster runs (see FlinkService)."""
        try:
            saved = json.loads(self._layout_path.read_text())
        except (OSError, ValueError):
            return
        if not self._pid(self._master_pid_path) and starting:
            return  # nothing runs: the caller's settings win
        self.port = int(saved.get("port", self.port))
        self.ui_port = int(saved.get("ui_port", self.ui_port))
        self.job_port = int(saved.get("job_port", self.job_port))
        if not starting:
            self.workers = max(self.workers, int(saved.get("workers", 1)))

    def _info(self) -> dict[str, str]:
        info = {
            "spark_master_url": self.master_url,
            "web_ui": self.web_ui,
            "spark_version": SPARK_VERSION,
            "workers": str(self.workers),
            "cores_per_worker": str(self.cores),
            "memory_per_worker": self.memory,
        }
        if self.job_port:
            info["job_endpoint"] = self.job_endpoint
            info["beam_job_server"] = f"beam-runners-spark-3 {BEAM_JOB_SERVER_VERSION}"
        info["state_dir"] = str(self.state_dir)
        return info

    # --- starting -----------------------------------------------------------------------------

    def _check_port_free(self, port: int, what: str) -> None:
        if port and process.port_open(port):
            raise ServiceError(
                f"cannot start Spark: its {what} port 127.0.0.1:{port} is already in use by "
                "another program; choose another port (streamtap services up spark --help)"
            )

    def _write_config(self, launcher: Path | None) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("tmp", "artifacts"):
            (self.state_dir / sub).mkdir(exist_ok=True)
        (self.conf_dir / "log4j2.properties").write_text(_LOG4J2)
        self._layout_path.write_text(json.dumps({
            "port": self.port, "ui_port": self.ui_port, "job_port": self.job_port,
            "workers": self.workers, "cores": self.cores, "memory": self.memory,
            "spark_version": SPARK_VERSION,
            "launcher": str(launcher) if launcher is not None else None,
        }, indent=2) + "\n")

    def _env(self, home: Path) -> dict[str, str]:
        env = {
            "SPARK_HOME": str(home),
            "SPARK_CONF_DIR": str(self.conf_dir),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_SCALA_VERSION": "2.12",
            "SPARK_LOCAL_DIRS": str(self.state_dir / "tmp"),
        }
        home_of_java = java_home()
        if home_of_java:
            env["JAVA_HOME"] = home_of_java
        return env

    def _daemon_command(self, home: Path, heap: str, main: str, *args: str) -> list[str]:
        return [
            java("Spark"), f"-Xmx{heap}", "-XX:+UseSerialGC", "-Djava.net.preferIPv4Stack=true",
            *SPARK_JAVA17_OPTS.split(),
            f"-Dlog4j.configurationFile={self.conf_dir / 'log4j2.properties'}",
            "-cp", f"{self.conf_dir}/:{home}/jars/*", main, *args,
        ]

    def _start_master(self, home: Path) -> None:
        self.master_log.write_bytes(b"")
        command = self._daemon_command(
            home, "256m", "org.apache.spark.deploy.master.Master",
            "--host", "127.0.0.1", "--port", str(self.port), "--webui-port", str(self.ui_port),
        )
        pid = process.start_daemon(command, self._master_pid_path, self.master_log,
                                   env=self._env(home), cwd=self.state_dir)
        log.info("started Spark Master (pid %d), log %s", pid, self.master_log)

    def _start_worker(self, home: Path, index: int) -> None:
        work = self.state_dir / f"work-{index}"
        work.mkdir(parents=True, exist_ok=True)
        log_path = self.worker_log(index)
        with open(log_path, "ab") as out:
            out.write(f"--- starting Worker {index}\n".encode())
        command = self._daemon_command(
            home, "256m", "org.apache.spark.deploy.worker.Worker",
            "--host", "127.0.0.1", "--webui-port", "0", "--cores", str(self.cores),
            "--memory", self.memory, "--work-dir", str(work), self.master_url,
        )
        pid = process.start_daemon(command, self._worker_pid_path(index), log_path,
                                   env=self._env(home), cwd=self.state_dir)
        log.info("started Spark Worker %d (pid %d), log %s", index, pid, log_path)

    def _start_job_server(self, launcher: Path) -> None:
        self.job_server_log.write_bytes(b"")
        command = job_server_command(
            launcher,
            spark_master_url=self.master_url,
            job_port=self.job_port,
            artifacts_dir=self.state_dir / "artifacts",
            local_dir=self.state_dir / "tmp",
            log_config=self.conf_dir / "log4j2.properties",
            executor_memory=self.executor_memory,
        )
        pid = process.start_daemon(command, self._js_pid_path, self.job_server_log,
                                   env={"SPARK_LOCAL_IP": "127.0.0.1"}, cwd=self.state_dir)
        log.info("started Beam Spark job server (pid %d) on %s, log %s", pid, self.job_endpoint,
                 self.job_server_log)

    def _wait_ready(self, deadline: float) -> None:
        """Waits for the Master's status API, every Worker's registration and the job service."""
        last_error = ""
        while True:
            if not self._pid(self._master_pid_path):
                raise ServiceError(
                    f"the Spark Master exited; see {self.master_log}:\n"
                    f"{process._tail(self.master_log)}"
                )
            for index in range(self.workers):
                if not self._pid(self._worker_pid_path(index)):
                    raise ServiceError(
                        f"Spark Worker {index} exited; see {self.worker_log(index)}:\n"
                        f"{process._tail(self.worker_log(index))}"
                    )
            if self.job_port and not self._pid(self._js_pid_path):
                raise ServiceError(
                    f"the Beam Spark job server exited; see {self.job_server_log}:\n"
                    f"{process._tail(self.job_server_log)}"
                )
            try:
                alive = len(self.alive_workers())
                last_error = f"{alive}/{self.workers} Workers registered"
                if alive >= self.workers and (
                    not self.job_port or process.port_open(self.job_port)
                ):
                    return
            except (OSError, ValueError) as error:
                last_error = str(error)
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"Spark at {self.master_url} is not ready ({last_error}); see "
                    f"{self.master_log}:\n{process._tail(self.master_log)}"
                )
            time.sleep(0.25)



def job_server_command(
    launcher: Path,
    spark_master_url: str,
    job_port: int,
    artifacts_dir: Path,
    local_dir: Path | None = None,
    log_config: Path | None = None,
    heap: str = "512m",
    executor_memory: str = "512m",
) -> list[str]:
    """The command line of a Beam Spark job server (the Spark driver) bound to 127.0.0.1."""
    command = [
        java("Spark"), f"-Xmx{heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
        "-Djava.net.preferIPv4Stack=true", *SPARK_JAVA17_OPTS.split(),
        *driver_properties(local_dir, executor_memory, launcher),
    ]
    if log_config is not None:
        command.append(f"-Dlog4j.configurationFile={log_config}")
    command += [
        "-jar", str(launcher),
        f"--spark-master-url={spark_master_url}",
        "--job-host=127.0.0.1",
        f"--job-port={job_port}",
        "--artifact-port=0",
        "--expansion-port=-1",
        f"--artifacts-dir={artifacts_dir}",
    ]
    return command
