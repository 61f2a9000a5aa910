"""A real standalone Apache Spark cluster on loopback, plus the Beam job server that feeds it.

`SparkService(...).up()` starts one Spark Master, N Workers and (by default) a Beam Spark job
server, all bound to 127.0.0.1, each a foreground JVM tracked by a pid file in the state dir. It
returns {"spark_master_url": "spark://127.0.0.1:7077", "job_endpoint": "127.0.0.1:8098", ...}; a
bounded capture then runs on it with
`streamtap run pipeline.yaml --runner=SparkRunner --spark_master_url=spark://127.0.0.1:7077
--duration 20` (streamtap.pipelines.spark finds the job server from the state dir). Beam's
portable Spark runner runs batch pipelines only: unbounded captures need Flink or Prism.

Versions, and why (what Maven Central and PyPI serve here, checked 2026-11):

- Beam's shaded job-server jar `beam-runners-spark-3-job-server` is not served for any version we
  tried (2.62, 2.65, 2.70, 2.77). The plain runner `org.apache.beam:beam-runners-spark-3` is
  served at 2.62.0 and 2.70.0 (not 2.65.0, not 2.77.0), `beam-runners-java-job-service` only up
  to 2.65.0 (as for Flink). So the job server is beam-runners-spark-3:2.70.0 with its runtime
  dependencies (`mvn dependency:copy-dependencies` on a generated pom) and
  beam-runners-java-job-service 2.65.0 in place of the missing 2.70.0, the same pairing as
  streamtap.services.flink.
- The cluster is Spark 3.5.9 (newest 3.5 patch release; Beam 2.70 is built against Spark 3.5.0,
  Scala 2.12) from the PyPI sdist `pyspark` (its deps/ has bin/, sbin/ and the 252 jars of the
  distribution): downloaded with `pip download` and unpacked into the streamtap cache dir, never
  pip-installed. pyspark 3.5 has no start-master.sh / start-worker.sh, so the Master and Worker
  are started as plain `java -cp <SPARK_HOME>/jars/* org.apache.spark.deploy.{master.Master,
  worker.Worker}` with SPARK_LOCAL_IP=127.0.0.1.
- The job server is the Spark driver (client mode), so it runs on the cluster's own Spark jars:
  its launcher jar's manifest Class-Path lists Beam's jars, minus those the Spark distribution
  also ships (Spark's versions win; only Beam's newer Guava and Gson are kept), and then every jar
  of the Spark distribution. Main class `org.apache.beam.runners.spark.SparkJobServerDriver`;
  Beam's Python `--spark_job_server_jar` accepts the launcher as well.
- The launcher carries two patches, compiled with `javac --release 8` when it is built (left
  out with a warning without a JDK): streamtap's loopback patch of Beam's gRPC ServerFactory
  (from streamtap.services.flink: the job, artifact and Fn API servers bind 127.0.0.1), and
  SparkExecutableStageFunction with a bundle checkpoint handler (see _STAGE_FUNCTION_NEW):
  unpatched, every `defer_remainder` of a bounded stream (waiting for data) fails the Spark task
  with "The ActiveBundle does not have a registered bundle checkpoint handler".
- Executors: streamtap.pipelines.spark ships only the launcher to them (`--files_to_stage`); its
  manifest names the jars by absolute file: URL (Workers run on this machine). Beam's Guava goes
  first on their class path (`spark.executor.extraClassPath`): with Spark's Guava 14 Beam's GCS
  file system registrar fails in every task (NoSuchMethodError Preconditions.checkState).
- Spark's own options for the driver come from JVM system properties (`-Dspark.*`), which Beam's
  SparkContextFactory reads: driver and block manager on 127.0.0.1, no driver web UI, a small
  executor heap.

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
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

from streamtap.services import process
from streamtap.services.flink import (
    _LOOPBACK_PATCH_SOURCE,
    _PATCHED_CLASS,
    _compile,
    _fetch_sources,
    _get_json,
    _java,
    _java_home,
    _javac,
    _last_lines,
    _wrap_manifest_line,
)
from streamtap.errors import ServiceError

__all__ = [
    "SparkService",
    "SPARK_VERSION",
    "SPARK_JAVA17_OPTS",
    "BEAM_JOB_SERVER_VERSION",
    "ensure_spark",
    "ensure_job_server",
    "job_server_command",
    "driver_properties",
    "running_job_endpoint",
    "running_job_server_jar",
]

log = logging.getLogger(__name__)

SPARK_VERSION = "3.5.9"
BEAM_JOB_SERVER_VERSION = "2.70.0"
# beam-runners-java-job-service 2.70.0 is not served; 2.65.0 is the newest that is.
_JOB_SERVICE_VERSION = "2.65.0"
_JOB_SERVER_MAIN = "org.apache.beam.runners.spark.SparkJobServerDriver"
_START_TIMEOUT = 120.0
# Beam jars kept although Spark ships the same artifact: Spark's copies are much older and only
# there for Hive (Guava 14) or unused by the driver (Gson 2.2), and Beam's GCP core needs these.
_KEEP_BEAM_JARS = ("guava", "gson", "annotations")

# The module opens Spark 3.5's launcher adds on Java 17 (JavaModuleOptions), for the daemons and
# the driver; executors get them from SparkContext itself.
SPARK_JAVA17_OPTS = (
    "-XX:+IgnoreUnrecognizedVMOptions "
    "--add-opens=java.base/java.lang=ALL-UNNAMED "
    "--add-opens=java.base/java.lang.invoke=ALL-UNNAMED "
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED "
    "--add-opens=java.base/java.io=ALL-UNNAMED "
    "--add-opens=java.base/java.net=ALL-UNNAMED "
    "--add-opens=java.base/java.nio=ALL-UNNAMED "
    "--add-opens=java.base/java.util=ALL-UNNAMED "
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED "
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED "
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED "
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED "
    "--add-opens=java.base/sun.nio.cs=ALL-UNNAMED "
    "--add-opens=java.base/sun.security.action=ALL-UNNAMED "
    "--add-opens=java.base/sun.util.calendar=ALL-UNNAMED "
    "-Djdk.reflect.useDirectMethodHandle=false "
    "-Dio.netty.tryReflectionSetAccessible=true"
)

_JOB_SERVER_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>streamtap</groupId>
  <artifactId>beam-spark-job-server-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.beam</groupId>
      <artifactId>beam-runners-spark-3</artifactId>
      <version>{beam}</version>
      <exclusions>
        <exclusion>
          <groupId>org.apache.beam</groupId>
          <artifactId>beam-runners-java-job-service</artifactId>
        </exclusion>
      </exclusions>
    </dependency>
    <dependency>
      <groupId>org.apache.beam</groupId>
      <artifactId>beam-runners-java-job-service</artifactId>
      <version>{job_service}</version>
      <exclusions>
        <exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion>
      </exclusions>
    </dependency>
  </dependencies>
</project>
"""

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
            `--spark_job_server_jar` instead, see streamtap.pipelines.spark).
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
        return _get_json(f"{self.web_ui}/json/", timeout=5)

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
        java_home = _java_home()
        if java_home:
            env["JAVA_HOME"] = java_home
        return env

    def _daemon_command(self, home: Path, heap: str, main: str, *args: str) -> list[str]:
        return [
            _java(), f"-Xmx{heap}", "-XX:+UseSerialGC", "-Djava.net.preferIPv4Stack=true",
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


# --- the Beam job server ---------------------------------------------------------------------


def driver_properties(
    local_dir: Path | None = None, executor_memory: str = "512m", launcher: Path | None = None
) -> list[str]:
    """JVM system properties of the job server: Spark options of the driver it runs."""
    props = [
        "-Dspark.driver.host=127.0.0.1",
        "-Dspark.driver.bindAddress=127.0.0.1",
        "-Dspark.ui.enabled=false",
        f"-Dspark.executor.memory={executor_memory}",
        # Executors' JVMs: as small as the machine is; the Python work runs in the SDK workers.
        "-Dspark.executor.extraJavaOptions=-XX:+UseSerialGC -Djava.net.preferIPv4Stack=true",
    ]
    if launcher is not None:
        # Executors load Spark's Guava 14 (for Hive) before any shipped jar, and Beam's GCS
        # file system registrar, which Beam initialises in every task, fails on it
        # (NoSuchMethodError Preconditions.checkState): put Beam's Guava first (Spark itself
        # uses a relocated copy).
        jars = Path(launcher).parent / "jars"
        first = sorted(jars.glob("guava-*.jar")) + sorted(jars.glob("failureaccess-*.jar"))
        if first:
            props.append("-Dspark.executor.extraClassPath=" + ":".join(map(str, first)))
    if local_dir is not None:
        props.append(f"-Dspark.local.dir={local_dir}")
    return props


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
        _java(), f"-Xmx{heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
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


def running_job_endpoint(master_url: str | None, state_dir: Path | None = None) -> str | None:
    """The job endpoint of a SparkService running from `state_dir` whose master is master_url.

    None when no such cluster runs (or it has no job server). "localhost" and "127.0.0.1" are the
    same host.
    """
    saved = _running_cluster(master_url, state_dir)
    return f"127.0.0.1:{saved['job_port']}" if saved else None


def running_job_server_jar(master_url: str | None, state_dir: Path | None = None) -> Path | None:
    """The launcher jar the job server of that running SparkService was started from."""
    saved = _running_cluster(master_url, state_dir)
    launcher = Path(saved["launcher"]) if saved and saved.get("launcher") else None
    return launcher if launcher is not None and launcher.is_file() else None


def _running_cluster(master_url: str | None, state_dir: Path | None) -> dict | None:
    directory = Path(state_dir) if state_dir is not None else (
        Path(os.environ.get("STREAMTAP_STATE", ".streamtap")).resolve() / "spark"
    )
    try:
        saved = json.loads((directory / "cluster.json").read_text())
    except (OSError, ValueError):
        return None
    if not process.daemon_pid(directory / "job-server.pid") or not saved.get("job_port"):
        return None
    if master_url is not None:
        match = re.fullmatch(r"spark://([^:/]+):(\d+)/?", master_url.strip())
        if not match or match.group(1) not in ("127.0.0.1", "localhost") \
                or match.group(2) != str(saved.get("port")):
            return None
    return saved


def _artifact_name(jar: str) -> str:
    """`jackson-core-2.15.4.jar` -> `jackson-core` (Maven artifact id of a jar file name)."""
    return re.sub(r"-\d[^-]*(-.*)?\.jar$", "", jar).removesuffix(".jar")



# SDF self-checkpoints in batch: Beam 2.70's SparkExecutableStageFunction opens bundles without a
# BundleCheckpointHandler, so a bounded SDF that returns a residual (`defer_remainder`, which
# every streamtap stream does while it waits for data) fails its Spark task with
# "The ActiveBundle does not have a registered bundle checkpoint handler" and Spark retries the
# whole task (4 attempts, then the job fails). The patch collects the residuals of a bundle and
# processes them in the next bundle of the same task, after the smallest delay they asked for,
# until none is left: what Flink's batch runner does with its BundleCheckpointHandler.
_STAGE_FUNCTION = "org/apache/beam/runners/spark/translation/SparkExecutableStageFunction"
_STAGE_FUNCTION_OLD = """    try (RemoteBundle bundle =
        stageBundleFactory.getBundle(
            receiverFactory,
            timerReceiverFactory,
            stateRequestHandler,
            getBundleProgressHandler())) {
      FnDataReceiver<WindowedValue<?>> mainReceiver =
          Iterables.getOnlyElement(bundle.getInputReceivers().values());
      while (inputs.hasNext()) {
        WindowedValue<InputT> input = inputs.next();
        mainReceiver.accept(input);
      }
    }
  }
"""
_STAGE_FUNCTION_NEW = """    @SuppressWarnings("unchecked")
    Coder<WindowedValue<InputT>> residualCoder =
        (Coder<WindowedValue<InputT>>)
            (Coder<?>)
                Iterables.getOnlyElement(
                        stageBundleFactory
                            .getProcessBundleDescriptor()
                            .getRemoteInputDestinations())
                    .getCoder();
    Iterator<WindowedValue<InputT>> pending = inputs;
    while (true) {
      final List<org.apache.beam.model.fnexecution.v1.BeamFnApi.DelayedBundleApplication>
          residuals = new java.util.ArrayList<>();
      try (RemoteBundle bundle =
          stageBundleFactory.getBundle(
              receiverFactory,
              timerReceiverFactory,
              stateRequestHandler,
              getBundleProgressHandler(),
              null,
              response -> residuals.addAll(response.getResidualRootsList()))) {
        FnDataReceiver<WindowedValue<?>> mainReceiver =
            Iterables.getOnlyElement(bundle.getInputReceivers().values());
        while (pending.hasNext()) {
          WindowedValue<InputT> input = pending.next();
          mainReceiver.accept(input);
        }
      }
      if (residuals.isEmpty()) {
        return;
      }
      long delayMillis = Long.MAX_VALUE;
      List<WindowedValue<InputT>> next = new java.util.ArrayList<>();
      for (org.apache.beam.model.fnexecution.v1.BeamFnApi.DelayedBundleApplication residual :
          residuals) {
        next.add(
            org.apache.beam.sdk.util.CoderUtils.decodeFromByteArray(
                residualCoder, residual.getApplication().getElement().toByteArray()));
        long delay =
            residual.getRequestedTimeDelay().getSeconds() * 1000L
                + residual.getRequestedTimeDelay().getNanos() / 1_000_000L;
        delayMillis = Math.min(delayMillis, delay);
      }
      if (delayMillis > 0) {
        Thread.sleep(Math.min(delayMillis, 10_000L));
      }
      pending = next.iterator();
    }
  }
"""


def _compile_stage_function_patch(
    mvn: str, jars: Path, work: Path, beam_version: str
) -> dict[str, bytes]:
    """The patched SparkExecutableStageFunction classes, or {} (with a warning) if it fails."""
    javac = _javac()
    if javac is None:
        return {}
    source_path = f"{_STAGE_FUNCTION}.java"
    try:
        sources_jar = _fetch_sources(mvn, "beam-runners-spark-3", beam_version, work / "sources")
        with zipfile.ZipFile(sources_jar) as archive:
            text = archive.read(source_path).decode()
    except (OSError, KeyError, ServiceError) as error:
        log.warning("Spark SDF checkpoint patch left out: %s", error)
        return {}
    text = re.sub(r"^import edu\.umd\.cs\.findbugs\.annotations\.[A-Za-z]+;$", "", text,
                  flags=re.M)
    text = re.sub(r"@SuppressFBWarnings(\([^)]*\))?", "", text)
    if text.count(_STAGE_FUNCTION_OLD) != 1:
        log.warning("Spark SDF checkpoint patch left out: SparkExecutableStageFunction.java "
                    "does not have the text to replace")
        return {}
    text = text.replace(_STAGE_FUNCTION_OLD, _STAGE_FUNCTION_NEW)
    compiled = _compile(javac, jars, work / "stage-function", {source_path: text})
    if not compiled:
        log.warning("Spark SDF checkpoint patch left out: it did not compile")
        return {}
    return {
        path: data for path, data in compiled.items()
        if path == f"{_STAGE_FUNCTION}.class" or path.startswith(f"{_STAGE_FUNCTION}$")
    }


_LAUNCHER_LEVEL = 3


def ensure_job_server(
    beam_version: str = BEAM_JOB_SERVER_VERSION, spark_version: str = SPARK_VERSION
) -> Path:
    """The launcher jar of the Beam Spark job server, fetched from Maven Central the first time.

    `java -jar <it>` runs `SparkJobServerDriver`; its manifest's Class-Path names Beam's jars
    beside it (jars/) and the jars of the Spark distribution (ensure_spark) that the cluster runs.
    """
    home = ensure_spark(spark_version)
    name = f"beam-runners-spark-3-job-server-{beam_version}"
    target = process.cache_dir() / name
    launcher = target / f"{name}-spark-{spark_version}.jar"
    stamp = target / f"launcher-{spark_version}.txt"
    import hashlib

    digest = hashlib.sha256(
        (_LOOPBACK_PATCH_SOURCE + _STAGE_FUNCTION_OLD + _STAGE_FUNCTION_NEW).encode()
    ).hexdigest()[:16]
    wanted_stamp = f"{beam_version} {spark_version} level {_LAUNCHER_LEVEL} {digest} {target}\n"
    if launcher.is_file() and stamp.is_file() and stamp.read_text() == wanted_stamp:
        return launcher
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(
            f"the Beam Spark job server is not in {target} and Maven is not installed to fetch "
            "it: install it (apt-get install maven)"
        )
    if not (target / "jars").is_dir():
        log.info("fetching the Beam %s Spark job server jars from Maven Central into %s",
                 beam_version, target)
        with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=target.parent) as tmp:
            work = Path(tmp)
            (work / "pom.xml").write_text(_JOB_SERVER_POM.format(
                beam=beam_version, job_service=_JOB_SERVICE_VERSION,
            ))
            out = work / "out"
            result = subprocess.run(
                [mvn, "-B", "-q", "dependency:copy-dependencies", "-DincludeScope=runtime",
                 f"-DoutputDirectory={out / 'jars'}"],
                cwd=work, capture_output=True, text=True, timeout=1800,
            )
            if result.returncode != 0 or not any((out / "jars").glob("beam-runners-spark-*.jar")):
                raise ServiceError(
                    f"fetching the Beam Spark job server from Maven Central failed (mvn exit "
                    f"{result.returncode}):\n{_last_lines(result.stdout + result.stderr)}"
                )
            try:
                os.rename(out, target)
            except OSError:
                if not (target / "jars").is_dir():  # not a concurrent download that won the race
                    raise
    spark_jars = sorted(p.name for p in (home / "jars").glob("*.jar"))
    spark_names = {_artifact_name(jar) for jar in spark_jars}
    beam_jars = [
        jar for jar in sorted(p.name for p in (target / "jars").glob("*.jar"))
        if _artifact_name(jar) not in spark_names or _artifact_name(jar) in _KEEP_BEAM_JARS
    ]
    # Absolute file: URLs, so the launcher also works as the only jar Spark ships to executors
    # (which fetch it into their work dir): see streamtap.pipelines.spark (--files_to_stage).
    class_path = [(target / "jars" / jar).as_uri() for jar in beam_jars] + [
        (home / "jars" / jar).as_uri() for jar in spark_jars
    ]
    with tempfile.TemporaryDirectory(prefix=f".{name}-launcher-", dir=target) as tmp:
        work = Path(tmp)
        classes: dict[str, bytes] = {}
        javac = _javac()
        if javac is None:
            log.warning("javac not found (install a JDK): the Beam Spark job server's gRPC "
                        "servers will listen on all interfaces")
        else:
            compiled = _compile(javac, target / "jars", work / "loopback",
                                {"org/apache/beam/sdk/fn/server/ServerFactory.java":
                                 _LOOPBACK_PATCH_SOURCE})
            if compiled is not None and _PATCHED_CLASS in compiled:
                classes[_PATCHED_CLASS] = compiled[_PATCHED_CLASS]
            else:
                log.warning("the loopback patch of Beam's gRPC servers did not compile; they "
                            "will listen on all interfaces")
            # Compiled against the Spark jars too (the stage function uses Spark's API).
            compile_jars = work / "compile-jars"
            compile_jars.mkdir()
            for jar in [target / "jars" / j for j in beam_jars] + [
                home / "jars" / j for j in spark_jars
            ]:
                if not (compile_jars / jar.name).exists():
                    os.symlink(jar, compile_jars / jar.name)
            classes.update(_compile_stage_function_patch(mvn, compile_jars, work,
                                                         beam_version))
        _write_launcher(work / "launcher.jar", class_path, classes)
        os.replace(work / "launcher.jar", launcher)
    stamp.write_text(wanted_stamp)
    log.info("Beam Spark job server launcher %s built (%d Beam jars, %d Spark jars)", launcher,
             len(beam_jars), len(spark_jars))
    return launcher


def _write_launcher(path: Path, class_path: list[str], classes: dict[str, bytes]) -> None:
    lines = [
        "Manifest-Version: 1.0",
        f"Main-Class: {_JOB_SERVER_MAIN}",
        "Created-By: streamtap",
        "Class-Path: " + " ".join(class_path),
    ]
    manifest = "".join(_wrap_manifest_line(line) for line in lines) + "\r\n"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as jar:
        jar.writestr("META-INF/MANIFEST.MF", manifest)
        for name, data in sorted(classes.items()):
            jar.writestr(name, data)


# --- the Spark distribution ------------------------------------------------------------------


def ensure_spark(version: str = SPARK_VERSION) -> Path:
    """SPARK_HOME of Spark `version`, unpacked from the PyPI sdist `pyspark` the first time.

    The sdist's deps/ holds the distribution's bin/, sbin/ and jars/; only those are unpacked
    (into the streamtap cache dir), pyspark is not installed.
    """
    target = process.cache_dir() / f"spark-{version}"
    if (target / "jars").is_dir() and (target / "RELEASE").is_file():
        return target
    log.info("fetching Spark %s (PyPI pyspark sdist) into %s", version, target)
    with tempfile.TemporaryDirectory(prefix=f".spark-{version}-", dir=target.parent) as tmp:
        work = Path(tmp)
        downloads = work / "downloads"
        command = [sys.executable, "-m", "pip", "download", "--no-deps",
                   "--disable-pip-version-check", "-q", "--no-binary=:all:", "-d", str(downloads),
                   f"pyspark=={version}"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        if result.returncode != 0:
            raise ServiceError(
                f"downloading Spark from PyPI failed (pyspark=={version}):\n"
                f"{_last_lines(result.stdout + result.stderr)}"
            )
        sdist = next(downloads.glob("pyspark-*.tar.gz"))
        home = work / "home"
        with tarfile.open(sdist) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts
                if len(parts) < 4 or parts[1] != "deps" or not member.isfile():
                    continue
                if parts[2] not in ("jars", "bin", "sbin"):
                    continue
                destination = home.joinpath(*parts[2:])
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.extractfile(member) as source, open(destination, "wb") as out:
                    shutil.copyfileobj(source, out)
                if member.mode & 0o111:
                    destination.chmod(0o755)
        if not any((home / "jars").glob("spark-core_*.jar")):
            raise ServiceError(f"pyspark {version} has no spark-core jar in deps/jars")
        (home / "conf").mkdir(exist_ok=True)
        (home / "RELEASE").write_text(
            f"Spark {version} (unpacked from PyPI pyspark by streamtap)\n"
        )
        try:
            os.rename(home, target)
        except OSError:
            if not (target / "RELEASE").is_file():
                raise
    return target
