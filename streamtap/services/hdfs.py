"""A real HDFS on loopback: one Hadoop NameNode and N DataNodes as foreground JVM daemons.

The jars (Hadoop 3.5.0 and its runtime dependencies, ~68 MB) come from Maven Central on first
use (`services/maven.py`) into `cache_dir()/hadoop-<version>`; each daemon runs as
`java -cp <its conf>:<webapps stub>:<jars>/* org.apache.hadoop.hdfs.server...` in its own process
group. The NameNode is formatted on the first `up()`. Every port is on 127.0.0.1: the NameNode's
RPC (default 9000, the `hdfs://127.0.0.1:9000` of Hadoop's single-node setup) and HTTP (9870:
WebHDFS and /jmx), and three per DataNode, picked free on first start and kept while free.

State (data, configs, logs, pid files) lives under the state dir, so `status`/`down` work from
another shell and a second `up()` restarts the same file system:

    <state_dir>/cluster.json                 layout: ports, DataNode count, replication
    <state_dir>/conf/                        client configs (FsShell)
    <state_dir>/resources/webapps/           empty web apps the daemons' HTTP servers need
    <state_dir>/namenode/conf/ name/ namenode.log namenode.pid
    <state_dir>/datanode-<i>/conf/ data/ datanode.log datanode.pid

Tests kill and restart single daemons (`kill_datanode(i)`, `restart_namenode()`) and use Hadoop's
own shell (`dfs("-ls", "/")`) as an independent reader of what streamtap wrote.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from streamtap.errors import ServiceError
from streamtap.services import hdfs_config, maven, process

__all__ = ["HADOOP_VERSION", "HdfsService", "ensure_jars"]

ensure_jars = hdfs_config.ensure_jars

log = logging.getLogger(__name__)

HADOOP_VERSION = hdfs_config.HADOOP_VERSION
_START_TIMEOUT = 120.0


class HdfsService:
    """A NameNode and `datanodes` DataNodes on 127.0.0.1; `up()` returns {"url": "hdfs://..."}.

    Replication defaults to min(3, datanodes). `down()` stops every daemon and keeps the data;
    the next `up()` on the same state dir starts the same file system again.
    """

    name = "hdfs"

    @staticmethod
    def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--datanodes", type=int, default=1, help="Number of DataNodes (default: 1)."
        )
        parser.add_argument(
            "--port", type=int, default=9000, help="NameNode RPC port (default: 9000)."
        )
        parser.add_argument(
            "--http-port",
            type=int,
            default=9870,
            help="NameNode HTTP port: WebHDFS and /jmx (default: 9870).",
        )
        parser.add_argument(
            "--replication",
            type=int,
            default=None,
            help="Default block replication (default: min(3, datanodes)).",
        )

    def __init__(
        self,
        state_dir: Path | None = None,
        datanodes: int = 1,
        port: int = 9000,
        http_port: int = 9870,
        replication: int | None = None,
        version: str = HADOOP_VERSION,
    ):
        """
        Args:
          state_dir: data, configs and logs; default `process.state_dir("hdfs")`.
          datanodes: number of DataNodes, >= 1.
          port: NameNode RPC port (the port of hdfs://127.0.0.1:<port>).
          http_port: NameNode HTTP port (WebHDFS, /jmx).
          replication: default replication of new files, 1..datanodes; default min(3, datanodes).
          version: Hadoop version fetched from Maven Central.
        """
        if datanodes < 1:
            raise ValueError(f"datanodes must be >= 1, got {datanodes}")
        for label, value in (("port", port), ("http_port", http_port)):
            if not 1 <= value <= 65535:
                raise ValueError(f"{label} must be a TCP port, got {value}")
        if replication is not None and not 1 <= replication <= datanodes:
            raise ValueError(
                f"replication must be in 1..{datanodes} (datanodes), got {replication}"
            )
        self.state_dir = Path(state_dir) if state_dir is not None else process.state_dir("hdfs")
        self.datanodes = datanodes
        self.port = port
        self.http_port = http_port
        self.replication = replication if replication is not None else min(3, datanodes)
        self.version = version
        self._datanode_ports: list[list[int]] = []

    # --- public API ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The file system's address as Hadoop users write it: hdfs://127.0.0.1:<port>."""
        return f"hdfs://127.0.0.1:{self.port}"

    @property
    def webhdfs_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/webhdfs/v1"

    def up(self) -> dict[str, str]:
        """Starts the NameNode and DataNodes (fetching jars, formatting the first time).

        Idempotent. Returns once the NameNode is out of safe mode and counts every DataNode live.
        """
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._adopt_existing_layout(starting=True)
        if self.namenode_running() and all(map(self.datanode_running, range(self.datanodes))):
            self.wait_ready()
            return self._info()
        java, jars = maven.java("HDFS"), ensure_jars(self.version)
        self._check_namenode_ports()
        self._write_configs()
        self._format(java, jars)
        if not self.namenode_running():
            self._start_namenode(java, jars)
        for index in range(self.datanodes):
            if not self.datanode_running(index):
                self._start_datanode(index, java, jars)
        self.wait_ready()
        log.info(
            "HDFS %s up at %s with %d DataNode(s) in %.1f s",
            self.version,
            self.url,
            self.datanodes,
            time.monotonic() - started,
        )
        return self._info()

    def down(self) -> None:
        """Stops every daemon of the file system in this state dir (its data is kept)."""
        self._adopt_existing_layout()
        pid_paths = [self._pid_path(None)] + [self._pid_path(i) for i in range(self.datanodes)]
        with ThreadPoolExecutor(max_workers=len(pid_paths)) as pool:
            list(pool.map(lambda path: process.stop_daemon(path, timeout=20), pid_paths))
        self._wait_ports_closed([None, *range(self.datanodes)])

    def status(self) -> dict[str, str] | None:
        """None when the NameNode does not run; else its address and the DataNodes' state."""
        self._adopt_existing_layout()
        if not self.namenode_running():
            return None
        running = sum(map(self.datanode_running, range(self.datanodes)))
        info = self._info()
        info["datanodes"] = f"{running}/{self.datanodes} running"
        try:
            info["live_datanodes"] = str(len(self.live_datanodes()))
            info["safemode"] = self._namenode_info().get("Safemode") or "off"
        except ServiceError as error:
            info["namenode"] = f"not answering yet ({error})"
        return info

    def namenode_running(self) -> bool:
        return process.daemon_pid(self._pid_path(None)) is not None

    def datanode_running(self, index: int) -> bool:
        return process.daemon_pid(self._pid_path(index)) is not None

    def kill_datanode(self, index: int) -> None:
        """SIGKILLs DataNode `index` (a crash: the NameNode notices it only by missed heartbeats)."""
        self._check_index(index)
        process.stop_daemon(self._pid_path(index), timeout=10, sig=signal.SIGKILL)
        self._wait_ports_closed([index])

    def stop_datanode(self, index: int) -> None:
        """Stops DataNode `index` gracefully."""
        self._check_index(index)
        process.stop_daemon(self._pid_path(index), timeout=20)
        self._wait_ports_closed([index])

    def start_datanode(self, index: int, wait: bool = True) -> None:
        """(Re)starts DataNode `index` on its blocks; wait=True until the NameNode counts it live."""
        self._check_index(index)
        if not self.datanode_running(index):
            self._write_configs()
            self._start_datanode(index, maven.java("HDFS"), ensure_jars(self.version))
        if wait:
            self.wait_ready()

    def kill_namenode(self) -> None:
        """SIGKILLs the NameNode (its edit log is synced on every change: nothing is lost)."""
        process.stop_daemon(self._pid_path(None), timeout=10, sig=signal.SIGKILL)
        self._wait_ports_closed([None])

    def stop_namenode(self) -> None:
        process.stop_daemon(self._pid_path(None), timeout=20)
        self._wait_ports_closed([None])

    def start_namenode(self, wait: bool = True) -> None:
        """Starts a stopped NameNode; wait=True until it left safe mode with every DataNode."""
        if not self.namenode_running():
            self._start_namenode(maven.java("HDFS"), ensure_jars(self.version))
        if wait:
            self.wait_ready()

    def restart_namenode(self, kill: bool = False, wait: bool = True, down_seconds: float = 0.0):
        """Stops (SIGKILL if kill) and starts the NameNode, `down_seconds` apart."""
        if kill:
            self.kill_namenode()
        else:
            self.stop_namenode()
        if down_seconds:
            time.sleep(down_seconds)
        self.start_namenode(wait=wait)

    def start_all(self) -> None:
        """Starts every stopped daemon and waits until the file system is ready (after failures)."""
        java, jars = maven.java("HDFS"), ensure_jars(self.version)
        if not self.namenode_running():
            self._start_namenode(java, jars)
        for index in range(self.datanodes):
            if not self.datanode_running(index):
                self._start_datanode(index, java, jars)
        self.wait_ready()

    def wait_ready(self, timeout: float = _START_TIMEOUT) -> None:
        """Waits until the NameNode is out of safe mode and counts every running DataNode live."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            self._check_alive()
            wanted = {
                self._datanode_ports[i][0]
                for i in range(self.datanodes)
                if self.datanode_running(i)
            }
            if process.port_open(self.http_port) and process.port_open(self.port):
                try:
                    live = set(self._live_datanode_ports(fresh=True))
                    safemode = self._namenode_info().get("Safemode", "")
                    if not safemode and wanted <= live:
                        return
                    last = f"safe mode: {safemode or 'off'}; live DataNodes {sorted(live)}"
                except ServiceError as error:
                    last = str(error)
            time.sleep(0.25)
        raise ServiceError(
            f"HDFS at {self.url} was not ready after {timeout:.0f} s ({last}); see the NameNode's "
            f"log {self._log_path(None)}:\n{maven.tail(self._log_path(None))}"
        )

    def live_datanodes(self) -> list[str]:
        """The DataNodes the NameNode counts live, as "127.0.0.1:<transfer port>"."""
        return [f"127.0.0.1:{port}" for port in self._live_datanode_ports(fresh=False)]

    def datanode_address(self, index: int) -> str:
        """ "127.0.0.1:<transfer port>" of DataNode `index` (where its blocks are read/written)."""
        self._check_index(index)
        return f"127.0.0.1:{self._datanode_ports[index][0]}"

    def dfs(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 120.0,
        input: bytes | None = None,
    ) -> subprocess.CompletedProcess:
        """Runs Hadoop's own shell (`hdfs dfs ARGS`, class FsShell) against this file system.

        Returns the CompletedProcess with bytes stdout/stderr (`-cat` output is binary).
        check=True raises ServiceError on a non-zero exit, with the shell's message.
        """
        jars = ensure_jars(self.version)
        command = hdfs_config.fs_shell_command(self.state_dir / "conf", jars, args)
        result = subprocess.run(
            command, input=input, capture_output=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise ServiceError(
                f"hdfs dfs {' '.join(args)} failed (exit {result.returncode}):\n"
                f"{maven.last_lines(result.stderr.decode(errors='replace'))}"
            )
        return result

    # --- layout -------------------------------------------------------------------------------

    def _node_dir(self, index: int | None) -> Path:
        return self.state_dir / ("namenode" if index is None else f"datanode-{index}")

    def _pid_path(self, index: int | None) -> Path:
        role = "namenode" if index is None else "datanode"
        return self._node_dir(index) / f"{role}.pid"

    def _log_path(self, index: int | None) -> Path:
        role = "namenode" if index is None else "datanode"
        return self._node_dir(index) / f"{role}.log"

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.datanodes:
            raise ValueError(f"DataNode index must be in 0..{self.datanodes - 1}, got {index}")

    def _cluster_file(self) -> Path:
        return self.state_dir / "cluster.json"

    def _info(self) -> dict[str, str]:
        return {
            "url": self.url,
            "webhdfs": self.webhdfs_url,
            "datanodes": str(self.datanodes),
            "replication": str(self.replication),
            "version": self.version,
            "state_dir": str(self.state_dir),
        }

    def _adopt_existing_layout(self, starting: bool = False) -> None:
        """Uses the layout recorded in the state dir when a file system was created there.

        `streamtap services down hdfs` builds an HdfsService with default arguments: it must
        still find a 3-DataNode cluster on other ports. While it runs, `up()` with other
        arguments uses the running one. A stopped one may move to other NameNode ports and
        grow by DataNodes; fewer DataNodes would strand the blocks of the missing ones.
        """
        try:
            recorded = json.loads(self._cluster_file().read_text())
        except (OSError, ValueError):
            return
        ports = recorded.get("datanode_ports", [])
        running = process.daemon_pid(self._pid_path(None)) is not None or any(
            process.daemon_pid(self._pid_path(i)) for i in range(recorded["datanodes"])
        )
        if running or not starting:
            layout = (recorded["datanodes"], recorded["port"], recorded["http_port"])
            if starting and layout != (self.datanodes, self.port, self.http_port):
                log.warning(
                    "HDFS already runs in %s with %d DataNode(s) at hdfs://127.0.0.1:%d; using it",
                    self.state_dir,
                    *layout[:2],
                )
            self.datanodes, self.port, self.http_port = layout
            self.replication = recorded["replication"]
        elif recorded["datanodes"] > self.datanodes:
            raise ServiceError(
                f"the HDFS in {self.state_dir} has {recorded['datanodes']} DataNodes, not "
                f"{self.datanodes}: start it with --datanodes {recorded['datanodes']}, or delete "
                f"{self.state_dir} to create a new file system (its files are lost)"
            )
        self._datanode_ports = [list(p) for p in ports]

    # --- starting -----------------------------------------------------------------------------

    def _check_namenode_ports(self) -> None:
        if self.namenode_running():
            return
        for port, role, option in (
            (self.port, "RPC", "--port"),
            (self.http_port, "HTTP", "--http-port"),
        ):
            if process.port_open(port):
                raise ServiceError(
                    f"cannot start the HDFS NameNode: its {role} port 127.0.0.1:{port} is already "
                    "in use by another process; stop that process or choose another port "
                    f"(streamtap services up hdfs {option} N)"
                )

    def _write_configs(self) -> None:
        """Writes every daemon's conf dir and cluster.json; picks DataNode ports as needed."""
        try:
            cluster_id = json.loads(self._cluster_file().read_text())["cluster_id"]
        except (OSError, ValueError, KeyError):
            cluster_id = f"CID-streamtap-{uuid.uuid4()}"
        taken: set[int] = {self.port, self.http_port}
        for index in range(self.datanodes):
            ports = self._datanode_ports[index] if index < len(self._datanode_ports) else []
            if not self.datanode_running(index) and (
                len(ports) != 3 or any(p in taken or process.port_open(p) for p in ports)
            ):
                ports = _free_ports(3, taken)
            taken.update(ports)
            if index < len(self._datanode_ports):
                self._datanode_ports[index] = ports
            else:
                self._datanode_ports.append(ports)
        hdfs_config.write_configs(
            self.state_dir, self.port, self.http_port, self.replication, self._datanode_ports
        )
        layout = {
            "cluster_id": cluster_id,
            "datanodes": self.datanodes,
            "port": self.port,
            "http_port": self.http_port,
            "replication": self.replication,
            "datanode_ports": self._datanode_ports,
            "version": self.version,
        }
        self._cluster_file().write_text(json.dumps(layout, indent=2) + "\n")

    def _format(self, java: str, jars: Path) -> None:
        """Formats the NameNode's metadata directory unless it holds a file system already."""
        if (self._node_dir(None) / "name" / "current" / "VERSION").exists():
            return
        cluster_id = json.loads(self._cluster_file().read_text())["cluster_id"]
        command = hdfs_config.format_command(java, jars, self._node_dir(None), cluster_id)
        result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
        output = result.stdout + result.stderr
        self._log_path(None).parent.mkdir(parents=True, exist_ok=True)
        with open(self._log_path(None), "a") as log_file:
            log_file.write(output)
        if result.returncode != 0:
            raise ServiceError(
                f"formatting the HDFS NameNode failed (exit {result.returncode}):\n"
                f"{maven.last_lines(output)}"
            )

    def _start_namenode(self, java: str, jars: Path) -> None:
        command = hdfs_config.daemon_command(java, jars, self._node_dir(None), namenode=True)
        pid = process.start_daemon(
            command, self._pid_path(None), self._log_path(None), cwd=self._node_dir(None)
        )
        log.info("started HDFS NameNode (pid %d), log %s", pid, self._log_path(None))

    def _start_datanode(self, index: int, java: str, jars: Path) -> None:
        node = self._node_dir(index)
        (node / "data").mkdir(parents=True, exist_ok=True)
        pid = process.start_daemon(
            hdfs_config.daemon_command(java, jars, node, namenode=False),
            self._pid_path(index),
            self._log_path(index),
            cwd=node,
        )
        log.info("started HDFS DataNode %d (pid %d), log %s", index, pid, self._log_path(index))

    # --- watching -----------------------------------------------------------------------------

    def _check_alive(self) -> None:
        """Raises ServiceError with the log of a daemon that should run and has exited."""
        for index in (None, *range(self.datanodes)):
            if self._pid_path(index).exists() and process.daemon_pid(self._pid_path(index)) is None:
                role = "NameNode" if index is None else f"DataNode {index}"
                raise ServiceError(
                    f"the HDFS {role} exited; see its log {self._log_path(index)}:\n"
                    f"{maven.tail(self._log_path(index))}"
                )

    def _namenode_info(self) -> dict:
        return _jmx(self.http_port, "Hadoop:service=NameNode,name=NameNodeInfo")

    def _live_datanode_ports(self, fresh: bool) -> list[int]:
        """Transfer ports of the DataNodes the NameNode counts live (fresh: heard from < 3 s)."""
        nodes = json.loads(self._namenode_info().get("LiveNodes") or "{}")
        ports = []
        for key, node in nodes.items():
            if fresh and node.get("lastContact", 0) > 3:
                continue
            address = node.get("xferaddr") or key
            ports.append(int(address.rsplit(":", 1)[1]))
        return sorted(ports)

    def _wait_ports_closed(self, indexes: Sequence[int | None]) -> None:
        """Waits until stopped daemons' ports are closed (a killed JVM closes them a bit later)."""
        deadline = time.monotonic() + 10
        for index in indexes:
            if index is None:
                ports = [self.port, self.http_port]
            elif index < len(self._datanode_ports):
                ports = self._datanode_ports[index]
            else:
                ports = []
            for port in ports:
                while process.port_open(port) and time.monotonic() < deadline:
                    time.sleep(0.05)


# --- helpers ---------------------------------------------------------------------------------


def _jmx(http_port: int, bean: str) -> dict:
    url = f"http://127.0.0.1:{http_port}/jmx?qry={bean}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            beans = json.loads(response.read()).get("beans", [])
    except (OSError, ValueError, urllib.error.URLError) as error:
        raise ServiceError(f"{url}: {error}") from error
    if not beans:
        raise ServiceError(f"{url}: no bean {bean} yet")
    return beans[0]


def _free_ports(count: int, taken: set[int]) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = process.free_port()
        if port not in taken and port not in ports:
            ports.append(port)
    return ports
