"""A real standalone Apache Flink cluster on loopback, plus the Beam job server that feeds it.

`FlinkService(...).up()` starts one JobManager, N TaskManagers and (by default) a Beam Flink job
server, all bound to 127.0.0.1, each a foreground JVM tracked by a pid file in the state dir. It
returns {"flink_master": "127.0.0.1:8081", "job_endpoint": "127.0.0.1:8099", ...}; a capture then
runs on it with `streamtap run pipeline.yaml --runner=FlinkRunner --flink_master=127.0.0.1:8081`
(streamtap.pipelines.flink finds the job server from the state dir).

Versions, and why (what Maven Central and PyPI serve here, checked 2026-11):

- Beam's shaded job-server jars `beam-runners-flink-<X.Y>-job-server` are not served for any
  version we tried (2.62..2.77); the plain runner `org.apache.beam:beam-runners-flink-1.19` is
  served at 2.62.0 and 2.70.0 only (no 1.20 / 2.x runner at all). `beam-runners-java-job-service`
  is served up to 2.65.0. So the job server here is beam-runners-flink-1.19:2.70.0 with all its
  dependencies (`mvn dependency:copy-dependencies` on a generated pom), and
  beam-runners-java-job-service 2.65.0 in place of the missing 2.70.0 (a small jar of job-service
  plumbing; the Python 2.77 SDK submits and runs pipelines through it fine).
- The cluster is Flink 1.19.3 (newest 1.19 patch release) from the PyPI packages `apache-flink`
  (bin/, conf/) and `apache-flink-libraries` (lib/), unpacked, not pip-installed. The runner's
  Flink client jars are 1.19.0; client and cluster share the 1.19 minor version.
- The job server is started as `java -jar <launcher jar>`: a tiny jar whose manifest names the main
  class `org.apache.beam.runners.flink.FlinkJobServerDriver` and lists every dependency jar in
  `Class-Path`, so Beam's Python `--flink_job_server_jar` accepts it too.
- Beam's gRPC servers (job service, artifact service, and the Fn API servers that TaskManagers
  open for SDK workers) bind every interface (`NettyServerBuilder.forPort`). The launcher jar
  carries a one-class patch of `ServerFactory$InetSocketAddressServerFactory` that binds the
  address Beam already advertises (loopback) instead.
- Beam 2.70's portable Flink runner leaks keyed state on every SDF self-checkpoint
  (`defer_remainder`, which every streamtap stream does every 0.2 s): Beam issue #27648, fixed
  upstream by PR #39191 in a release Maven Central does not serve here. Checkpoints then slow
  down and TaskManagers die of OutOfMemoryError within minutes. The launcher jar carries a
  backport of that fix (BundleCheckpointHandlers, ExecutableStageDoFnOperator,
  FlinkExecutableStageFunction), made from Beam's 2.70.0 sources jars by exact text edits.
- Both patches are compiled with `javac --release 8` when the launcher is built (needs a JDK);
  the launcher is first on the job server's class path and the first jar it ships to the
  cluster, so the patched classes win in the job server and in the TaskManagers (checked: the
  TaskManagers' Fn API ports are on 127.0.0.1). Without javac, or when an edit does not match,
  the patch is left out with a warning.

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
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

import yaml

from streamtap.services import process
from streamtap.errors import ServiceError

__all__ = [
    "FlinkService",
    "FLINK_VERSION",
    "JAVA17_OPTS",
    "FLINK_MINOR_VERSION",
    "BEAM_JOB_SERVER_VERSION",
    "ensure_flink",
    "ensure_job_server",
    "job_server_command",
    "running_job_endpoint",
    "running_worker_pool",
]

log = logging.getLogger(__name__)

FLINK_VERSION = "1.19.3"
FLINK_MINOR_VERSION = "1.19"
BEAM_JOB_SERVER_VERSION = "2.70.0"
# beam-runners-java-job-service 2.70.0 is not served; 2.65.0 is the newest that is.
_JOB_SERVICE_VERSION = "2.65.0"
_SLF4J_VERSION = "2.0.16"
_JOB_SERVER_MAIN = "org.apache.beam.runners.flink.FlinkJobServerDriver"
_START_TIMEOUT = 120.0
_REST_TIMEOUT_SECONDS = 30.0  # GETs of the JobManager REST API (see FlinkService.rest)

# JVM options Flink 1.19 uses on Java 17 (from its default config.yaml), also used for the job
# server: Kryo and Flink's closure cleaner reflect into these packages.
JAVA17_OPTS = (
    "--add-exports=java.base/sun.net.util=ALL-UNNAMED "
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED "
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED "
    "--add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.net=ALL-UNNAMED "
    "--add-opens=java.base/java.io=ALL-UNNAMED --add-opens=java.base/java.nio=ALL-UNNAMED "
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED "
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED "
    "--add-opens=java.base/java.text=ALL-UNNAMED --add-opens=java.base/java.time=ALL-UNNAMED "
    "--add-opens=java.base/java.util=ALL-UNNAMED "
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED "
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED "
    "--add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED"
)

_JOB_SERVER_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>streamtap</groupId>
  <artifactId>beam-flink-job-server-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.beam</groupId>
      <artifactId>beam-runners-flink-{flink_minor}</artifactId>
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
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>{slf4j}</version>
    </dependency>
  </dependencies>
</project>
"""

# Beam's ServerFactory.InetSocketAddressServerFactory with one change: the gRPC server binds the
# address it advertises (allocateAddressAndCreate: the loopback address; create: the host of the
# given URL) instead of every interface. The enclosing class is a stub so that javac emits the
# same synthetic constructors the real ServerFactory calls; only the nested class is kept.
_LOOPBACK_PATCH_SOURCE = """
package org.apache.beam.sdk.fn.server;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import org.apache.beam.model.pipeline.v1.Endpoints;
import org.apache.beam.sdk.fn.channel.SocketAddressFactory;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.BindableService;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.Server;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.ServerInterceptors;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.netty.NettyServerBuilder;

public abstract class ServerFactory {
  public static ServerFactory createDefault() {
    return new InetSocketAddressServerFactory(UrlFactory.createDefault());
  }

  public static ServerFactory createWithPortSupplier(Supplier<Integer> portSupplier) {
    return new InetSocketAddressServerFactory(UrlFactory.createDefault(), portSupplier);
  }

  public abstract Server allocateAddressAndCreate(
      List<BindableService> services, Endpoints.ApiServiceDescriptor.Builder descriptor)
      throws IOException;

  public abstract Server create(
      List<BindableService> services, Endpoints.ApiServiceDescriptor descriptor)
      throws IOException;

  public interface UrlFactory {
    String createUrl(String address, int port);

    static UrlFactory createDefault() {
      return (host, port) -> host + ":" + port;
    }
  }

  public static class InetSocketAddressServerFactory extends ServerFactory {
    private final UrlFactory urlFactory;
    private final Supplier<Integer> portSupplier;

    private InetSocketAddressServerFactory(UrlFactory urlFactory) {
      this(urlFactory, () -> 0);
    }

    private InetSocketAddressServerFactory(UrlFactory urlFactory, Supplier<Integer> portSupplier) {
      this.urlFactory = urlFactory;
      this.portSupplier = portSupplier;
    }

    @Override
    public Server allocateAddressAndCreate(
        List<BindableService> services, Endpoints.ApiServiceDescriptor.Builder descriptor)
        throws IOException {
      InetSocketAddress address =
          new InetSocketAddress(InetAddress.getLoopbackAddress(), portSupplier.get());
      Server server = createServer(services, address);
      descriptor.setUrl(urlFactory.createUrl(address.getHostName(), server.getPort()));
      return server;
    }

    @Override
    public Server create(List<BindableService> services, Endpoints.ApiServiceDescriptor descriptor)
        throws IOException {
      SocketAddress address = SocketAddressFactory.createFrom(descriptor.getUrl());
      if (!(address instanceof InetSocketAddress)) {
        throw new IllegalArgumentException(
            getClass().getSimpleName() + " requires a host:port socket address, got "
                + descriptor.getUrl());
      }
      return createServer(services, (InetSocketAddress) address);
    }

    private static Server createServer(List<BindableService> services, InetSocketAddress address)
        throws IOException {
      NettyServerBuilder builder =
          NettyServerBuilder.forAddress(address)
              .maxInboundMessageSize(Integer.MAX_VALUE)
              .permitKeepAliveTime(20, TimeUnit.SECONDS);
      for (BindableService service : services) {
        builder.addService(
            ServerInterceptors.intercept(service, GrpcContextHeaderAccessorProvider.interceptor()));
      }
      return builder.build().start();
    }
  }
}
"""
_PATCHED_CLASS = "org/apache/beam/sdk/fn/server/ServerFactory$InetSocketAddressServerFactory.class"

_LOG4J_CONSOLE = """monitorInterval=0
rootLogger.level = INFO
rootLogger.appenderRef.console.ref = ConsoleAppender
logger.pekko.name = org.apache.pekko
logger.pekko.level = WARN
logger.netty.name = org.jboss.netty.channel.DefaultChannelPipeline
logger.netty.level = OFF
logger.beam.name = org.apache.beam
logger.beam.level = INFO
appender.console.name = ConsoleAppender
appender.console.type = CONSOLE
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yyyy-MM-dd HH:mm:ss,SSS} %-5p %-50c{1.} %x - %m%n
"""


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
            `--flink_job_server_jar` instead, see streamtap.pipelines.flink).
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
            jobs = _get_json(f"{self.rest_url}/jobs/overview", timeout=5).get("jobs", [])
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
        data = _get_json(f"{self.rest_url}/taskmanagers", timeout=5)
        return [tm.get("id", "") for tm in data.get("taskmanagers", [])]

    def jobs(self) -> list[dict]:
        """The JobManager's job overview: [{"jid", "name", "state", ...}, ...]."""
        return self.rest("/jobs/overview").get("jobs", [])

    def rest(self, path: str) -> dict:
        """GET of the JobManager's REST API, e.g. rest("/jobs/<id>/checkpoints"); OSError if not."""
        # A generous timeout: while a job is being submitted on a busy 2-core machine, the
        # JobManager has been seen to take over 5 s to answer.
        return _get_json(f"{self.rest_url}{path}", timeout=_REST_TIMEOUT_SECONDS)

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
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("checkpoints", "savepoints", "tmp", "artifacts", "log"):
            (self.state_dir / sub).mkdir(exist_ok=True)
        settings: dict[str, object] = {
            # Loopback only: every listening socket of the cluster on 127.0.0.1.
            "jobmanager.rpc.address": "127.0.0.1",
            "jobmanager.rpc.port": self.rpc_port,
            "jobmanager.bind-host": "127.0.0.1",
            "rest.address": "127.0.0.1",
            "rest.bind-address": "127.0.0.1",
            "rest.port": self.port,
            "taskmanager.host": "127.0.0.1",
            "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.rpc.port": "0",
            "taskmanager.data.port": 0,
            "blob.server.port": "0",
            "metrics.internal.query-service.port": "0",
            # Modest memory on a shared 2-core machine.
            "jobmanager.memory.process.size": "1g",
            "taskmanager.memory.process.size": "1536m",
            "taskmanager.memory.managed.fraction": 0.2,
            # Each job loads Beam's classes anew in its user class loader.
            "taskmanager.memory.jvm-metaspace.size": "384m",
            "taskmanager.numberOfTaskSlots": self.slots,
            "parallelism.default": 1,
            "cluster.evenly-spread-out-slots": True,
            # Checkpoints and recovery: a killed TaskManager is noticed within seconds and its
            # job restarts from the last checkpoint.
            "state.backend.type": "hashmap",
            "state.checkpoints.dir": (self.state_dir / "checkpoints").as_uri(),
            "state.savepoints.dir": (self.state_dir / "savepoints").as_uri(),
            "execution.checkpointing.externalized-checkpoint-retention":
                "RETAIN_ON_CANCELLATION",
            "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": 30,
            "restart-strategy.fixed-delay.delay": "2 s",
            "jobmanager.execution.failover-strategy": "region",
            "heartbeat.interval": 1000,
            "heartbeat.timeout": 6000,
            # TaskManagers started with the JobManager retry registering every second at most
            # (default: backing off to 30 s, which added ~10 s to every `up`).
            "cluster.registration.initial-timeout": 100,
            "cluster.registration.max-timeout": 1000,
            "io.tmp.dirs": str(self.state_dir / "tmp"),
            "web.tmpdir": str(self.state_dir / "tmp"),
            "blob.storage.directory": str(self.state_dir / "tmp"),
            # Beam's SDK harness threads outlive a job's class loader briefly.
            "classloader.check-leaked-classloader": False,
            "env.java.opts.all": _java17_opts(home),
            **self.flink_config,
        }
        (self.conf_dir / "config.yaml").write_text(
            "# Written by streamtap.services.flink; rewritten on every `up`.\n"
            + yaml.safe_dump(settings, sort_keys=False, width=10_000)
        )
        (self.conf_dir / "log4j-console.properties").write_text(_LOG4J_CONSOLE)
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
        java_home = _java_home()
        if java_home:
            env["JAVA_HOME"] = java_home
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


# --- the Beam job server ---------------------------------------------------------------------


def job_server_command(
    launcher: Path,
    flink_master: str,
    job_port: int,
    artifacts_dir: Path,
    flink_conf_dir: Path | None = None,
    heap: str = "768m",
) -> list[str]:
    """The command line of a Beam Flink job server bound to 127.0.0.1:job_port."""
    command = [
        _java(), f"-Xmx{heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
        "-Djava.net.preferIPv4Stack=true", *JAVA17_OPTS.split(),
        "-Dorg.slf4j.simpleLogger.showDateTime=true",
        "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss,SSS",
        "-Dorg.slf4j.simpleLogger.log.org.apache.flink.configuration.GlobalConfiguration=warn",
        "-jar", str(launcher),
        f"--flink-master={flink_master}",
        "--job-host=127.0.0.1",
        f"--job-port={job_port}",
        "--artifact-port=0",
        "--expansion-port=-1",
        f"--artifacts-dir={artifacts_dir}",
    ]
    if flink_conf_dir is not None:
        command.append(f"--flink-conf-dir={flink_conf_dir}")
    return command


def running_job_endpoint(flink_master: str | None, state_dir: Path | None = None) -> str | None:
    """The job endpoint of a FlinkService running from `state_dir` whose master is flink_master.

    None when no such cluster runs (or it has no job server). `flink_master` may carry an
    http:// scheme; "localhost" and "127.0.0.1" are the same host.
    """
    saved = _running_cluster(flink_master, state_dir, "job-server.pid", "job_port")
    return f"127.0.0.1:{saved['job_port']}" if saved else None


def running_worker_pool(
    flink_master: str | None, state_dir: Path | None = None
) -> tuple[str, int] | None:
    """(host:port of the Beam worker pool, task slots per TaskManager) of a FlinkService running
    from `state_dir` whose master is flink_master, or None when it has no worker pool."""
    saved = _running_cluster(flink_master, state_dir, "worker-pool.pid", "worker_pool_port")
    if not saved:
        return None
    return f"127.0.0.1:{saved['worker_pool_port']}", int(saved.get("slots") or 1)


def _running_cluster(
    flink_master: str | None, state_dir: Path | None, pid_file: str, port_key: str
) -> dict | None:
    """cluster.json of the cluster at flink_master, if its daemon `pid_file` runs and it has
    `port_key`."""
    directory = Path(state_dir) if state_dir is not None else (
        Path(os.environ.get("STREAMTAP_STATE", ".streamtap")).resolve() / "flink"
    )
    try:
        saved = json.loads((directory / "cluster.json").read_text())
    except (OSError, ValueError):
        return None
    if not process.daemon_pid(directory / pid_file) or not saved.get(port_key):
        return None
    if flink_master is not None:
        host, _, port = flink_master.split("://")[-1].rstrip("/").rpartition(":")
        if host not in ("127.0.0.1", "localhost") or port != str(saved.get("port")):
            return None
    return saved


def ensure_job_server(
    beam_version: str = BEAM_JOB_SERVER_VERSION, flink_minor: str = FLINK_MINOR_VERSION
) -> Path:
    """The launcher jar of the Beam Flink job server, fetched from Maven Central the first time.

    `java -jar <it>` runs `FlinkJobServerDriver`; its manifest's Class-Path names the dependency
    jars beside it (in jars/). The launcher also carries streamtap's patches of Beam classes
    (see _PATCHES); it is rebuilt, without fetching the jars again, when they change.
    """
    name = f"beam-runners-flink-{flink_minor}-job-server-{beam_version}"
    target = process.cache_dir() / name
    launcher = target / f"{name}.jar"
    stamp = target / "patches.txt"
    if launcher.is_file() and stamp.is_file() and stamp.read_text() == _patch_stamp():
        return launcher
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(
            f"the Beam Flink job server is not in {target} and Maven is not installed to fetch "
            "it: install it (apt-get install maven)"
        )
    if not (target / "jars").is_dir():
        log.info("fetching the Beam %s Flink %s job server jars from Maven Central into %s",
                 beam_version, flink_minor, target)
        with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=target.parent) as tmp:
            work = Path(tmp)
            (work / "pom.xml").write_text(_JOB_SERVER_POM.format(
                flink_minor=flink_minor, beam=beam_version, job_service=_JOB_SERVICE_VERSION,
                slf4j=_SLF4J_VERSION,
            ))
            out = work / "out"
            result = subprocess.run(
                [mvn, "-B", "-q", "dependency:copy-dependencies", "-DincludeScope=runtime",
                 f"-DoutputDirectory={out / 'jars'}"],
                cwd=work, capture_output=True, text=True, timeout=1800,
            )
            if result.returncode != 0 or not any((out / "jars").glob("beam-runners-flink-*.jar")):
                raise ServiceError(
                    f"fetching the Beam Flink job server from Maven Central failed (mvn exit "
                    f"{result.returncode}):\n{_last_lines(result.stdout + result.stderr)}"
                )
            try:
                os.rename(out, target)
            except OSError:
                if not (target / "jars").is_dir():  # not a concurrent download that won the race
                    raise
    with tempfile.TemporaryDirectory(prefix=f".{name}-patch-", dir=target.parent) as tmp:
        work = Path(tmp)
        classes, applied = _compile_patches(mvn, target / "jars", work, beam_version, flink_minor)
        jars = sorted(p.name for p in (target / "jars").glob("*.jar"))
        _write_launcher(work / "launcher.jar", jars, classes)
        os.replace(work / "launcher.jar", launcher)
        stamp.write_text(_patch_stamp())
        log.info("Beam job server launcher %s built with patches: %s", launcher,
                 ", ".join(applied) or "none")
    return launcher


# --- patches of Beam classes, compiled into the launcher jar ------------------------------------
#
# Each patch names the Beam sources jar it edits, the source files, exact text replacements (a
# replacement that does not match leaves the whole patch out, with a warning), and the classes
# to ship. The launcher jar is first on the job server's class path and first among the jars it
# stages to the cluster, so these classes win in the job server and in the TaskManagers.

_SDF_STATE_TAG_METHOD = """
    /** All SDF self-checkpoint residuals of a key and window, keyed by their checkpoint id. */
    public static <T> org.apache.beam.runners.core.StateTag<
            org.apache.beam.sdk.state.MapState<String, WindowedValue<T>>>
        residualStateTag(Coder<WindowedValue<T>> residualCoder) {
      return StateTags.map(
          "sdf_checkpoint_residuals",
          org.apache.beam.sdk.coders.StringUtf8Coder.of(),
          residualCoder);
    }

    private static String constructSdfCheckpointId(String id, int index) {"""

_PATCHES = [
    {
        # Beam issue #27648, fixed upstream by PR #39191 (after 2.75): a polling SDF
        # (defer_remainder) on the portable Flink runner registered a new keyed ValueState per
        # self-checkpoint, never cleared: heap and checkpoint size grow until the TaskManager
        # dies, and checkpoints stall long before that. Backport: one MapState per key/window,
        # an entry removed when its timer fires.
        "name": "bounded SDF residual state (Beam PR #39191)",
        "sources": {
            "beam-runners-java-fn-execution": [
                "org/apache/beam/runners/fnexecution/control/BundleCheckpointHandlers.java",
            ],
            "beam-runners-flink-{flink_minor}": [
                "org/apache/beam/runners/flink/translation/wrappers/streaming/"
                "ExecutableStageDoFnOperator.java",
                "org/apache/beam/runners/flink/translation/functions/"
                "FlinkExecutableStageFunction.java",
            ],
        },
        "edits": {
            "BundleCheckpointHandlers.java": [
                ("\n    private static String constructSdfCheckpointId(String id, int index) {",
                 _SDF_STATE_TAG_METHOD),
                (".state(stateNamespace, StateTags.value(tag, residualCoder))\n"
                 "                .write(\n",
                 ".state(stateNamespace, residualStateTag(residualCoder))\n"
                 "                .put(\n                    tag,\n"),
            ],
            "ExecutableStageDoFnOperator.java": [
                ("        WindowedValue stateValue =\n"
                 "            keyedStateInternals.state(namespace, StateTags.value(timerId, "
                 "residualCoder)).read();\n"
                 "        processElement(stateValue);\n",
                 "        org.apache.beam.sdk.state.MapState<String, WindowedValue<InputT>> "
                 "residuals =\n"
                 "            keyedStateInternals.state(\n"
                 "                namespace,\n"
                 "                StateAndTimerBundleCheckpointHandler.residualStateTag("
                 "residualCoder));\n"
                 "        WindowedValue stateValue = residuals.get(timerId).read();\n"
                 "        residuals.remove(timerId);\n"
                 "        if (stateValue != null) {\n"
                 "          processElement(stateValue);\n"
                 "        }\n"),
            ],
            "FlinkExecutableStageFunction.java": [
                ("            WindowedValue stateValue =\n"
                 "                sdfStateInternals\n"
                 "                    .state(timer.getNamespace(), StateTags.value("
                 "timer.getTimerId(), inputCoder))\n"
                 "                    .read();\n",
                 "            org.apache.beam.sdk.state.MapState<String, WindowedValue<InputT>> "
                 "residualMap =\n"
                 "                sdfStateInternals.state(\n"
                 "                    timer.getNamespace(),\n"
                 "                    BundleCheckpointHandlers.StateAndTimerBundleCheckpointHandler"
                 ".residualStateTag(inputCoder));\n"
                 "            WindowedValue stateValue =\n"
                 "                residualMap.get(timer.getTimerId()).read();\n"
                 "            residualMap.remove(timer.getTimerId());\n"),
            ],
        },
        "classes": [
            "org/apache/beam/runners/fnexecution/control/BundleCheckpointHandlers",
            "org/apache/beam/runners/flink/translation/wrappers/streaming/"
            "ExecutableStageDoFnOperator",
            "org/apache/beam/runners/flink/translation/functions/FlinkExecutableStageFunction",
        ],
    },
]


# Raise when the patch build changes in a way _PATCHES does not show, to rebuild cached launchers.
_PATCH_LEVEL = 3


def _patch_stamp() -> str:
    """Identifies the patch set, so a cached launcher built from other patches is rebuilt."""
    import hashlib

    digest = hashlib.sha256(
        (_LOOPBACK_PATCH_SOURCE + repr(_PATCHES)).encode()
    ).hexdigest()[:16]
    return f"{BEAM_JOB_SERVER_VERSION} level {_PATCH_LEVEL} {digest}\n"


def _compile_patches(
    mvn: str, jars: Path, work: Path, beam_version: str, flink_minor: str
) -> tuple[dict[str, bytes], list[str]]:
    """Compiles the patches that apply; returns {class file path in jar: bytes} and their names."""
    javac = _javac()
    if javac is None:
        log.warning("javac not found (install a JDK, e.g. openjdk-17-jdk-headless): the Beam job "
                    "server runs unpatched: its gRPC servers listen on all interfaces and "
                    "unbounded captures leak TaskManager memory (Beam issue #27648)")
        return {}, []
    results: dict[str, bytes] = {}
    applied: list[str] = []
    loopback = _compile(javac, jars, work / "loopback",
                        {"org/apache/beam/sdk/fn/server/ServerFactory.java":
                         _LOOPBACK_PATCH_SOURCE})
    if loopback is not None and _PATCHED_CLASS in loopback:
        results[_PATCHED_CLASS] = loopback[_PATCHED_CLASS]
        applied.append("loopback-only gRPC servers")
    else:
        log.warning("the loopback patch of Beam's gRPC servers did not compile; they will "
                    "listen on all interfaces")
    for index, patch in enumerate(_PATCHES):
        sources: dict[str, str] = {}
        try:
            for artifact, paths in patch["sources"].items():
                artifact = artifact.format(flink_minor=flink_minor)
                sources_jar = _fetch_sources(mvn, artifact, beam_version, work / "sources")
                with zipfile.ZipFile(sources_jar) as archive:
                    for path in paths:
                        sources[path] = archive.read(path).decode()
            for path in list(sources):
                # SpotBugs annotations are a compile-only dependency of Beam, not in the jars.
                sources[path] = re.sub(
                    r"^import edu\.umd\.cs\.findbugs\.annotations\.[A-Za-z]+;$", "",
                    sources[path], flags=re.M,
                )
                sources[path] = re.sub(r"@SuppressFBWarnings(\([^)]*\))?", "", sources[path])
                for old, new in patch["edits"].get(Path(path).name, []):
                    if sources[path].count(old) != 1:
                        raise ValueError(f"{Path(path).name}: the text to replace is not there")
                    sources[path] = sources[path].replace(old, new)
        except (OSError, KeyError, ValueError, ServiceError) as error:
            log.warning("Beam patch %r left out: %s", patch["name"], error)
            continue
        compiled = _compile(javac, jars, work / f"patch-{index}", sources)
        if compiled is None:
            log.warning("Beam patch %r left out: it did not compile", patch["name"])
            continue
        for class_path, data in compiled.items():
            if any(class_path == f"{c}.class" or class_path.startswith(f"{c}$")
                   for c in patch["classes"]):
                results[class_path] = data
        applied.append(patch["name"])
    return results, applied


def _fetch_sources(mvn: str, artifact: str, version: str, directory: Path) -> Path:
    path = directory / f"{artifact}-{version}-sources.jar"
    if path.is_file():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [mvn, "-B", "-q", "dependency:copy",
         f"-Dartifact=org.apache.beam:{artifact}:{version}:jar:sources",
         f"-DoutputDirectory={directory}"],
        cwd=directory, capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0 or not path.is_file():
        raise ServiceError(f"cannot fetch the sources of {artifact} {version}: "
                           f"{_last_lines(result.stdout + result.stderr, 5)}")
    return path


def _compile(
    javac: str, jars: Path, work: Path, sources: dict[str, str]
) -> dict[str, bytes] | None:
    """javac --release 8 (Beam's own target) of `sources` against the job server jars."""
    source_root, classes = work / "src", work / "classes"
    files = []
    for path, text in sources.items():
        file = source_root / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
        files.append(str(file))
    classes.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [javac, "--release", "8", "-g", "-proc:none", "-nowarn", "-encoding", "UTF-8",
         "-cp", f"{jars}/*", "-d", str(classes), *files],
        capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0:
        log.warning("javac failed:\n%s", _last_lines(result.stdout + result.stderr))
        return None
    return {
        str(path.relative_to(classes)): path.read_bytes() for path in classes.rglob("*.class")
    }


def _write_launcher(path: Path, jars: list[str], classes: dict[str, bytes]) -> None:
    """A jar with a manifest (Main-Class, Class-Path jars/...) and the patched classes."""
    lines = [
        "Manifest-Version: 1.0",
        f"Main-Class: {_JOB_SERVER_MAIN}",
        "Created-By: streamtap",
        "Class-Path: " + " ".join(f"jars/{jar}" for jar in jars),
    ]
    manifest = "".join(_wrap_manifest_line(line) for line in lines) + "\r\n"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as jar:
        jar.writestr("META-INF/MANIFEST.MF", manifest)
        for name, data in sorted(classes.items()):
            jar.writestr(name, data)


def _wrap_manifest_line(line: str) -> str:
    """A manifest header split into lines of at most 72 bytes (continuations start with a space)."""
    data = line.encode()
    parts = [data[:72]]
    data = data[72:]
    while data:
        parts.append(b" " + data[:71])
        data = data[71:]
    return "".join(part.decode() + "\r\n" for part in parts)


# --- the Flink distribution ------------------------------------------------------------------


def ensure_flink(version: str = FLINK_VERSION) -> Path:
    """FLINK_HOME of Flink `version`, unpacked from the PyPI packages the first time.

    `apache-flink` (a wheel) has bin/ and conf/; `apache-flink-libraries` (an sdist) has lib/.
    They are downloaded with `pip download --no-deps` and unpacked, never installed.
    """
    target = process.cache_dir() / f"flink-{version}"
    if (target / "lib").is_dir() and (target / "bin" / "taskmanager.sh").is_file():
        return target
    log.info("fetching Flink %s from PyPI into %s", version, target)
    with tempfile.TemporaryDirectory(prefix=f".flink-{version}-", dir=target.parent) as tmp:
        work = Path(tmp)
        downloads = work / "downloads"
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", "-d", str(downloads)]
        # bin/ and conf/ are the same in every wheel of a release: take the CPython 3.11 one,
        # whatever Python runs this.
        _run_pip(pip + ["--only-binary=:all:", "--python-version", "3.11", "--implementation",
                        "cp", "--platform", "manylinux2014_x86_64", f"apache-flink=={version}"])
        _run_pip(pip + ["--no-binary=:all:", f"apache-flink-libraries=={version}"])
        home = work / "home"
        wheel = next(downloads.glob("apache_flink-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                for sub in ("bin", "conf"):
                    prefix = f"pyflink/{sub}/"
                    if member.startswith(prefix) and not member.endswith("/"):
                        destination = home / sub / member[len(prefix):]
                        destination.parent.mkdir(parents=True, exist_ok=True)
                        destination.write_bytes(archive.read(member))
        sdist = next(downloads.glob("apache-flink-libraries-*.tar.gz"))
        with tarfile.open(sdist) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts
                if len(parts) < 4 or parts[1] != "deps" or not member.isfile():
                    continue
                if parts[2] not in ("lib", "bin", "plugins"):
                    continue
                destination = home.joinpath(*parts[2:])
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.extractfile(member) as source, open(destination, "wb") as out:
                    shutil.copyfileobj(source, out)
        for script in (home / "bin").glob("*.sh"):
            script.chmod(0o755)
        (home / "bin" / "flink").chmod(0o755)
        (home / "log").mkdir(exist_ok=True)
        if not any((home / "lib").glob("flink-dist-*.jar")):
            raise ServiceError(f"apache-flink-libraries {version} has no flink-dist jar")
        try:
            os.rename(home, target)
        except OSError:
            if not (target / "lib").is_dir():
                raise
    return target


def _run_pip(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise ServiceError(
            f"downloading Flink from PyPI failed ({' '.join(command[3:])}):\n"
            f"{_last_lines(result.stdout + result.stderr)}"
        )


def _java17_opts(home: Path) -> str:
    """env.java.opts.all of the distribution's default config (Java 17 module opens)."""
    try:
        default = yaml.safe_load((home / "conf" / "config.yaml").read_text())
        opts = default["env"]["java"]["opts"]["all"]
        if isinstance(opts, str) and opts:
            return opts
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        pass
    return JAVA17_OPTS


def _java_home() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return home
    java = shutil.which("java")
    if java:
        return str(Path(os.path.realpath(java)).parents[1])
    return None


def _java() -> str:
    home = _java_home()
    if home is None:
        raise ServiceError(
            "java not found: Flink needs a Java 17 runtime on PATH or in JAVA_HOME "
            "(apt-get install openjdk-17-jdk-headless)"
        )
    return str(Path(home) / "bin" / "java")


def _javac() -> str | None:
    home = _java_home()
    if home and (Path(home) / "bin" / "javac").exists():
        return str(Path(home) / "bin" / "javac")
    return shutil.which("javac")


def _get_json(url: str, timeout: float) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read().decode())
    except urllib.error.HTTPError as error:
        raise OSError(f"HTTP {error.code} from {url}") from None


def _last_lines(text: str, lines: int = 20) -> str:
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])
