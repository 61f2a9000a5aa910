"""Apache Kafka 4.x in KRaft mode on loopback: one broker, or a real replicated cluster.

Every node runs combined (`process.roles=broker,controller`), so N nodes form an N-voter controller
quorum and a cluster of N brokers. With N >= 3 topics default to replication factor 3 and
`min.insync.replicas=2`, so a producer with acks=all keeps writing while one broker is down.

`KafkaService` starts, stops, kills and waits for the nodes. Their jars (from Maven Central on
first use, into `cache_dir()/kafka-<version>`) and configs come from
streamtap.services.kafka_config; brokers run as `java -cp '<cache>/*' kafka.Kafka`. Data,
configs, logs and pid files live under the state dir:

    <state_dir>/cluster.json            brokers, ports, cluster id (read by status/down elsewhere)
    <state_dir>/log4j2.properties
    <state_dir>/broker-<i>/server.properties  data/  server.log  kafka.pid
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from streamtap.errors import ServiceError
from streamtap.services import maven, process
from streamtap.services.kafka_config import KAFKA_VERSION, ensure_jars, write_configs

__all__ = ["KAFKA_VERSION", "KafkaService", "ensure_jars"]

log = logging.getLogger(__name__)

_HEAP = "-Xmx512m"
_START_TIMEOUT = 120.0


class KafkaService:
    """Kafka brokers on 127.0.0.1; `up()` returns {"bootstrap_servers": "127.0.0.1:9092,..."}.

    Node i (0-based) listens for clients on `port + i` and for the controller quorum on
    `controller_port + i` (default: right after the client ports). `down()` stops the brokers and
    keeps their data; the next `up()` on the same state dir starts them on it again.
    """

    name = "kafka"

    @staticmethod
    def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--brokers",
            type=int,
            default=1,
            help="Number of Kafka nodes (broker+controller each); 3 or more give replication "
            "factor 3 and min.insync.replicas 2 (default: 1).",
        )
        parser.add_argument(
            "--port",
            type=int,
            default=9092,
            help="Client port of the first broker; broker i listens on port+i (default: 9092).",
        )

    def __init__(
        self,
        state_dir: Path | None = None,
        brokers: int = 1,
        port: int = 9092,
        controller_port: int | None = None,
        broker_config: dict[str, str] | None = None,
        version: str = KAFKA_VERSION,
    ):
        """
        Args:
          state_dir: data, configs and logs; default `process.state_dir("kafka")`.
          brokers: number of nodes, >= 1.
          port: client port of node 0; node i uses port + i.
          controller_port: controller (KRaft quorum) port of node 0; default port + brokers.
          broker_config: extra server.properties entries for every node (e.g. message.max.bytes).
          version: Kafka version fetched from Maven Central.
        """
        if brokers < 1:
            raise ValueError(f"brokers must be >= 1, got {brokers}")
        if not 1 <= port <= 65535:
            raise ValueError(f"port must be a TCP port, got {port}")
        self.state_dir = Path(state_dir) if state_dir is not None else process.state_dir("kafka")
        self.brokers = brokers
        self.port = port
        self.controller_port = controller_port if controller_port is not None else port + brokers
        self.broker_config = dict(broker_config or {})
        self.version = version

    # --- public API ---------------------------------------------------------------------------

    def up(self) -> dict[str, str]:
        """Starts the cluster (fetching jars and formatting storage the first time); idempotent.

        Returns once every broker answers metadata requests.
        """
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._adopt_existing_layout(starting=True)
        if all(self._pid(i) for i in range(self.brokers)):
            self._wait_ready(timeout=_START_TIMEOUT)
            return {"bootstrap_servers": self.bootstrap_servers}
        java = maven.java("Kafka")
        jars = ensure_jars(self.version)
        self._check_ports()
        self._write_configs()
        self._format_storage(java, jars)
        for index in range(self.brokers):
            if not self._pid(index):
                self._start(index, java, jars)
        self._wait_ready(timeout=_START_TIMEOUT)
        log.info(
            "Kafka %s up at %s in %.1f s",
            self.version,
            self.bootstrap_servers,
            time.monotonic() - started,
        )
        return {"bootstrap_servers": self.bootstrap_servers}

    def down(self) -> None:
        """Stops every broker of the cluster in this state dir (data is kept)."""
        self._adopt_existing_layout()
        count = self.brokers
        # Stop them together: a controller quorum that loses its majority makes the last
        # brokers wait for it on a graceful shutdown.
        with ThreadPoolExecutor(max_workers=max(count, 1)) as pool:
            list(
                pool.map(lambda i: process.stop_daemon(self._pid_path(i), timeout=20), range(count))
            )
        self._wait_ports_closed(range(count))

    def status(self) -> dict[str, str] | None:
        """None when no broker runs; else bootstrap servers and how many brokers are up."""
        self._adopt_existing_layout()
        count = self.brokers
        running = [i for i in range(count) if self._pid(i)]
        if not running:
            return None
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "brokers": f"{len(running)}/{count} running",
            "version": self.version,
            "state_dir": str(self.state_dir),
        }

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{self.port + i}" for i in range(self.brokers))

    def broker_address(self, index: int) -> str:
        return f"127.0.0.1:{self.port + index}"

    def kill_broker(self, index: int) -> None:
        """SIGKILLs node `index` (a crash: no controlled shutdown, unflushed data may be lost)."""
        self._check_index(index)
        process.stop_daemon(self._pid_path(index), timeout=10, sig=signal.SIGKILL)
        self._wait_ports_closed([index])

    def stop_broker(self, index: int) -> None:
        """Stops node `index` gracefully (controlled shutdown moves its leaderships away)."""
        self._check_index(index)
        process.stop_daemon(self._pid_path(index), timeout=30)
        self._wait_ports_closed([index])

    def start_broker(self, index: int, wait: bool = True) -> None:
        """(Re)starts node `index` on its existing data.

        wait=True returns once it answers metadata requests as an unfenced broker; that needs a
        controller quorum (a majority of the nodes), so restart several stopped nodes with
        wait=False and then `wait_ready()`, or use `start_all_brokers()`. After a SIGKILL the
        controller accepts the node back once its old session expired (6 s).
        """
        self._check_index(index)
        if not self._pid(index):
            self._start(index, maven.java("Kafka"), ensure_jars(self.version))
        if wait:
            self._wait_broker(index, time.monotonic() + _START_TIMEOUT)

    def stop_all_brokers(self, kill: bool = False) -> None:
        """Stops every node at once (SIGKILL if kill); `start_all_brokers()` restarts them."""
        sig = signal.SIGKILL if kill else signal.SIGTERM
        with ThreadPoolExecutor(max_workers=self.brokers) as pool:
            list(
                pool.map(
                    lambda i: process.stop_daemon(self._pid_path(i), timeout=20, sig=sig),
                    range(self.brokers),
                )
            )
        self._wait_ports_closed(range(self.brokers))

    def start_all_brokers(self) -> None:
        """Starts every stopped node and waits until the whole cluster answers."""
        java, jars = maven.java("Kafka"), ensure_jars(self.version)
        for index in range(self.brokers):
            if not self._pid(index):
                self._start(index, java, jars)
        self._wait_ready(timeout=_START_TIMEOUT)

    def wait_ready(self, timeout: float = _START_TIMEOUT) -> None:
        """Waits until every broker is registered and answers metadata requests."""
        self._wait_ready(timeout)

    def broker_running(self, index: int) -> bool:
        return self._pid(index) is not None

    # --- layout -------------------------------------------------------------------------------

    def _node_dir(self, index: int) -> Path:
        return self.state_dir / f"broker-{index}"

    def _pid_path(self, index: int) -> Path:
        return self._node_dir(index) / "kafka.pid"

    def _log_path(self, index: int) -> Path:
        return self._node_dir(index) / "server.log"

    def _pid(self, index: int) -> int | None:
        return process.daemon_pid(self._pid_path(index))

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.brokers:
            raise ValueError(f"broker index must be in 0..{self.brokers - 1}, got {index}")

    def _cluster_file(self) -> Path:
        return self.state_dir / "cluster.json"

    def _adopt_existing_layout(self, starting: bool = False) -> None:
        """Uses the brokers/ports recorded in the state dir when a cluster was created there.

        `streamtap services down kafka` from another shell builds a KafkaService with default
        arguments: it must still find and stop a 3-broker cluster on other ports. `up()` with
        other ports than recorded moves a stopped cluster to them; with another broker count it
        refuses, since the existing data belongs to a different controller quorum.
        """
        try:
            recorded = json.loads(self._cluster_file().read_text())
            layout = (recorded["brokers"], recorded["port"], recorded["controller_port"])
        except (OSError, ValueError, KeyError):
            return
        if layout == (self.brokers, self.port, self.controller_port):
            return
        running = any(
            process.daemon_pid(self.state_dir / f"broker-{i}" / "kafka.pid")
            for i in range(recorded["brokers"])
        )
        if running or not starting:
            if starting:
                log.warning(
                    "Kafka already runs in %s with %d broker(s) from port %d; using it",
                    self.state_dir,
                    layout[0],
                    layout[1],
                )
            self.brokers, self.port, self.controller_port = layout
            return
        if recorded["brokers"] != self.brokers:
            raise ServiceError(
                f"the Kafka data in {self.state_dir} belongs to a {recorded['brokers']}-broker "
                f"cluster, not {self.brokers}: start it with --brokers {recorded['brokers']}, or "
                f"delete {self.state_dir} to create a new cluster (its topics are lost)"
            )
        # Same nodes on other ports: the static quorum only needs the new addresses in the
        # configs, which up() rewrites.

    # --- starting -----------------------------------------------------------------------------

    def _check_ports(self) -> None:
        for index in range(self.brokers):
            if self._pid(index):
                continue
            for port, role in (
                (self.port + index, "client"),
                (self.controller_port + index, "controller"),
            ):
                if process.port_open(port):
                    raise ServiceError(
                        f"cannot start Kafka broker {index}: its {role} port 127.0.0.1:{port} is "
                        "already in use by another process; stop that process or choose other "
                        "ports (streamtap services up kafka --port N)"
                    )

    def _write_configs(self) -> None:
        write_configs(self.state_dir, self.brokers, self.port, self.controller_port,
                      self.broker_config, self.version)

    def _format_storage(self, java: str, jars: Path) -> None:
        cluster_id = json.loads(self._cluster_file().read_text())["cluster_id"]
        todo = [
            i
            for i in range(self.brokers)
            if not (self._node_dir(i) / "data" / "meta.properties").exists()
        ]

        def format_node(index: int) -> None:
            node = self._node_dir(index)
            command = [
                java,
                "-Xmx256m",
                "-XX:TieredStopAtLevel=1",
                f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.properties'}",
                "-cp",
                f"{jars}/*",
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cluster_id}",
                f"--config={node / 'server.properties'}",
                "--ignore-formatted",
            ]
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=120, check=False
            )
            output = result.stdout + result.stderr
            with open(self._log_path(index), "a") as log_file:
                log_file.write(output)
            if result.returncode != 0:
                raise ServiceError(
                    f"formatting the storage of Kafka broker {index} failed "
                    f"(exit {result.returncode}):\n{maven.last_lines(output)}"
                )

        if todo:
            with ThreadPoolExecutor(max_workers=len(todo)) as pool:
                list(pool.map(format_node, todo))

    def _start(self, index: int, java: str, jars: Path) -> None:
        node = self._node_dir(index)
        command = [
            java,
            _HEAP,
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            "-Djava.net.preferIPv4Stack=true",
            f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={node}",
            "-cp",
            f"{jars}/*",
            "kafka.Kafka",
            str(node / "server.properties"),
        ]
        pid = process.start_daemon(command, self._pid_path(index), self._log_path(index), cwd=node)
        log.info("started Kafka broker %d (pid %d), log %s", index, pid, self._log_path(index))

    def _wait_ports_closed(self, indexes) -> None:
        """Waits until killed nodes' ports are closed.

        A SIGKILLed JVM's main thread turns zombie before its other threads have exited and
        closed the sockets, so "process gone" comes a few milliseconds before "port free".
        """
        deadline = time.monotonic() + 10
        for index in indexes:
            for port in (self.port + index, self.controller_port + index):
                while process.port_open(port) and time.monotonic() < deadline:
                    time.sleep(0.05)

    def _wait_broker(self, index: int, deadline: float) -> None:
        """Waits until node `index` itself answers a metadata request (not only accepts TCP)."""
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self._pid(index):
                raise ServiceError(
                    f"Kafka broker {index} exited while starting; see its log "
                    f"{self._log_path(index)}:\n{maven.tail(self._log_path(index))}"
                )
            if process.port_open(self.port + index):
                try:
                    brokers = _live_brokers(self.broker_address(index))
                    if any(
                        broker.get("broker_id") == index + 1 and not broker.get("is_fenced")
                        for broker in brokers
                    ):
                        return
                    last_error = None
                except Exception as error:  # noqa: BLE001 - any client error means "not yet"
                    last_error = error
            time.sleep(0.25)
        raise ServiceError(
            f"Kafka broker {index} at {self.broker_address(index)} did not answer metadata "
            f"requests in time (last error: {last_error}); see its log "
            f"{self._log_path(index)}:\n{maven.tail(self._log_path(index))}"
        )

    def _wait_ready(self, timeout: float) -> None:
        """Waits until every broker answers metadata requests and lists itself as alive."""
        deadline = time.monotonic() + timeout
        for index in range(self.brokers):
            self._wait_broker(index, deadline)


def _live_brokers(bootstrap_servers: str) -> list:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id="streamtap-services",
        request_timeout_ms=5000,
        bootstrap_timeout_ms=5000,
    )
    try:
        return admin.describe_cluster()["brokers"]
    finally:
        admin.close()

