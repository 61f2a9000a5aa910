"""What a loopback HDFS runs on: its jars, site configs, log4j settings, webapps, command lines.

`services/hdfs.py` starts and watches the daemons; this module only fetches jars, writes files
and builds command lines.
Every address a daemon listens on is 127.0.0.1 with a fixed port, so nothing is reachable from
outside the machine and `status`/`down` from another shell know where to look.

The settings that differ from Hadoop's defaults, and why:

- heartbeats every second and a DataNode counted dead after 20 s (default 10.5 min), and reads
  and writes that avoid a DataNode silent for 3 s: a test that SIGKILLs a DataNode sees the
  cluster route around it within seconds, as an operator would after the default timeouts.
- `dfs.namenode.safemode.extension` 0 (default 30 s): a restarted NameNode leaves safe mode as
  soon as the DataNodes have reported their blocks, instead of refusing writes for half a minute.
- permissions off: the capture's user and the user who started the daemons need not match.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from streamtap.services import maven

__all__ = [
    "HADOOP_ARTIFACTS",
    "HADOOP_VERSION",
    "client_site",
    "daemon_command",
    "datanode_site",
    "ensure_jars",
    "format_command",
    "fs_shell_command",
    "log4j_properties",
    "namenode_site",
    "site_xml",
    "write_conf",
    "write_configs",
    "write_webapps",
]

# First Hadoop release with full Java 17 support; Maven Central serves it (checked 2026-12).
HADOOP_VERSION = "3.5.0"

# hadoop-hdfs declares hadoop-common "provided", so it is named too; hadoop-common brings
# reload4j and its slf4j binding, which the log4j.properties below configure.
HADOOP_ARTIFACTS = (
    "org.apache.hadoop:hadoop-hdfs:{version}",
    "org.apache.hadoop:hadoop-hdfs-client:{version}",
    "org.apache.hadoop:hadoop-common:{version}",
)

# The NameNode and DataNode web servers look for webapps/<name> on the classpath; the jars from
# Maven Central do not carry them (the tarball's share/hadoop/hdfs/webapps does). Empty ones are
# enough: WebHDFS, /jmx and the servlets are registered in code. The web UI's pages are missing.
_WEBAPPS = ("hdfs", "datanode", "secondary", "journal", "router", "static")

_JVM_FLAGS = (
    "-XX:+UseSerialGC",  # small heaps on two shared cores: no parallel GC threads
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",
)
_NAMENODE_CLASS = "org.apache.hadoop.hdfs.server.namenode.NameNode"
_DATANODE_CLASS = "org.apache.hadoop.hdfs.server.datanode.DataNode"
_FS_SHELL_CLASS = "org.apache.hadoop.fs.FsShell"

_DAEMON_LOGGERS = {
    # One line per block read or written, per DataNode: far too much for a log kept on disk.
    "org.apache.hadoop.hdfs.server.datanode.DataNode.clienttrace": "WARN",
    "org.apache.hadoop.hdfs.server.namenode.FSNamesystem.audit": "WARN",
    "org.apache.hadoop.hdfs.StateChange": "WARN",
    "BlockStateChange": "WARN",
    "org.apache.hadoop.util.NativeCodeLoader": "ERROR",
    "org.apache.hadoop.metrics2": "WARN",
}


def site_xml(settings: dict[str, str]) -> str:
    """A Hadoop configuration file (core-site.xml, hdfs-site.xml) holding `settings`."""
    lines = ['<?xml version="1.0"?>', "<configuration>"]
    for key, value in settings.items():
        lines.append(
            f"  <property><name>{escape(key)}</name><value>{escape(str(value))}</value></property>"
        )
    lines.append("</configuration>")
    return "\n".join(lines) + "\n"


def client_site(port: int, replication: int) -> dict[str, str]:
    """core-site settings every process shares: the file system's address and client defaults."""
    return {
        "fs.defaultFS": f"hdfs://127.0.0.1:{port}",
        "dfs.replication": str(replication),
        "dfs.permissions.enabled": "false",
        "hadoop.security.authentication": "simple",
        # FsShell retries a NameNode that is down for ~10 s (default 10 x 1 s), then fails.
        "ipc.client.connect.max.retries": "10",
        "ipc.client.connect.retry.interval": "1000",
    }


def _shared_hdfs_settings(replication: int) -> dict[str, str]:
    return {
        "dfs.replication": str(replication),
        "dfs.permissions.enabled": "false",
        "dfs.http.policy": "HTTP_ONLY",
        "dfs.heartbeat.interval": "1",
        # A DataNode is dead after 2 x recheck + 10 x heartbeat = 20 s.
        "dfs.namenode.heartbeat.recheck-interval": "5000",
        "dfs.namenode.stale.datanode.interval": "3000",
        "dfs.namenode.avoid.read.stale.datanode": "true",
        "dfs.namenode.avoid.write.stale.datanode": "true",
        "dfs.namenode.safemode.extension": "0",
        "dfs.namenode.safemode.min.datanodes": "0",
        "dfs.namenode.datanode.registration.ip-hostname-check": "false",
        "dfs.datanode.hostname": "127.0.0.1",
        "dfs.client.use.datanode.hostname": "false",
        "dfs.datanode.du.reserved": "0",
        # Java clients (FsShell) with replication 2 of 3 DataNodes replace a failed pipeline
        # node when one is free, and go on with the survivors when none is.
        "dfs.client.block.write.replace-datanode-on-failure.best-effort": "true",
        # Two shared cores: few handler threads.
        "dfs.namenode.handler.count": "10",
        "dfs.namenode.service.handler.count": "4",
        "dfs.datanode.handler.count": "4",
    }


def namenode_site(name_dir: Path, port: int, http_port: int, replication: int) -> dict[str, str]:
    """hdfs-site settings of the NameNode: metadata directory, RPC and HTTP on loopback."""
    return {
        **_shared_hdfs_settings(replication),
        "dfs.namenode.name.dir": name_dir.as_uri(),
        "dfs.namenode.rpc-address": f"127.0.0.1:{port}",
        "dfs.namenode.rpc-bind-host": "127.0.0.1",
        "dfs.namenode.http-address": f"127.0.0.1:{http_port}",
        "dfs.namenode.http-bind-host": "127.0.0.1",
        # Not started or not bound (HTTP_ONLY), but never on a wildcard address either.
        "dfs.namenode.https-address": "127.0.0.1:0",
        "dfs.namenode.secondary.http-address": "127.0.0.1:0",
        "dfs.namenode.secondary.https-address": "127.0.0.1:0",
        "dfs.namenode.backup.address": "127.0.0.1:0",
        "dfs.namenode.backup.http-address": "127.0.0.1:0",
    }


def datanode_site(
    data_dir: Path,
    port: int,
    replication: int,
    xfer_port: int,
    ipc_port: int,
    http_port: int,
) -> dict[str, str]:
    """hdfs-site settings of one DataNode: its block directory and its three loopback ports."""
    return {
        **_shared_hdfs_settings(replication),
        "dfs.namenode.rpc-address": f"127.0.0.1:{port}",
        "dfs.datanode.data.dir": data_dir.as_uri(),
        "dfs.datanode.address": f"127.0.0.1:{xfer_port}",
        "dfs.datanode.ipc.address": f"127.0.0.1:{ipc_port}",
        "dfs.datanode.http.address": f"127.0.0.1:{http_port}",
        "dfs.datanode.https.address": "127.0.0.1:0",
    }


def log4j_properties(level: str = "INFO", daemon: bool = True) -> str:
    """reload4j settings: everything to stderr (the daemon's log file), noisy loggers quieter."""
    lines = [
        f"log4j.rootLogger={level},console",
        "log4j.appender.console=org.apache.log4j.ConsoleAppender",
        "log4j.appender.console.target=System.err",
        "log4j.appender.console.layout=org.apache.log4j.PatternLayout",
        "log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n",
    ]
    loggers = _DAEMON_LOGGERS if daemon else {"org.apache.hadoop.util.NativeCodeLoader": "ERROR"}
    lines += [f"log4j.logger.{name}={value}" for name, value in loggers.items()]
    return "\n".join(lines) + "\n"


def write_webapps(root: Path) -> Path:
    """Creates root/webapps/<name>/ (empty web apps the daemons need); returns root."""
    for name in _WEBAPPS:
        app = root / "webapps" / name
        app.mkdir(parents=True, exist_ok=True)
        (app / "README.txt").write_text(
            "Placeholder: Hadoop's web UI pages are not in the Maven Central jars.\n"
        )
    return root


def write_conf(conf_dir: Path, core: dict[str, str], hdfs: dict[str, str], log4j: str) -> Path:
    """Writes core-site.xml, hdfs-site.xml and log4j.properties into conf_dir; returns it."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "core-site.xml").write_text(site_xml(core))
    (conf_dir / "hdfs-site.xml").write_text(site_xml(hdfs))
    (conf_dir / "log4j.properties").write_text(log4j)
    return conf_dir


def write_configs(
    state_dir: Path,
    port: int,
    http_port: int,
    replication: int,
    datanode_ports: Sequence[Sequence[int]],
) -> None:
    """Writes the client conf dir, the webapps stub and every daemon's conf dir under state_dir.

    datanode_ports: (transfer, IPC, HTTP) port of each DataNode, in order.
    """
    core = client_site(port, replication)
    client = {
        "dfs.replication": str(replication),
        "dfs.permissions.enabled": "false",
        "dfs.client.block.write.replace-datanode-on-failure.best-effort": "true",
    }
    write_conf(state_dir / "conf", core, client, log4j_properties("WARN", daemon=False))
    write_webapps(state_dir / "resources")
    namenode = state_dir / "namenode"
    write_conf(
        namenode / "conf",
        core,
        namenode_site(namenode / "name", port, http_port, replication),
        log4j_properties(),
    )
    for index, ports in enumerate(datanode_ports):
        node = state_dir / f"datanode-{index}"
        write_conf(
            node / "conf",
            core,
            datanode_site(node / "data", port, replication, *ports),
            log4j_properties(),
        )


def ensure_jars(version: str = HADOOP_VERSION) -> Path:
    """The directory of Hadoop's HDFS jars, fetched from Maven Central the first time."""
    artifacts = [artifact.format(version=version) for artifact in HADOOP_ARTIFACTS]
    return maven.fetch_jars("hadoop", version, artifacts, marker="hadoop-hdfs-[0-9]*.jar")


def _classpath(node_dir: Path, jars: Path) -> str:
    """A daemon's classpath: its conf dir, the webapps stub beside it, the jars."""
    return f"{node_dir / 'conf'}:{node_dir.parent / 'resources'}:{jars}/*"


def daemon_command(java: str, jars: Path, node_dir: Path, namenode: bool) -> list[str]:
    """The command line of the NameNode (namenode=True) or a DataNode living in node_dir."""
    return [
        java,
        "-Xmx512m" if namenode else "-Xmx256m",
        "-Xms64m",
        *_JVM_FLAGS,
        f"-Dhadoop.log.dir={node_dir}",
        "-cp",
        _classpath(node_dir, jars),
        _NAMENODE_CLASS if namenode else _DATANODE_CLASS,
    ]


def format_command(java: str, jars: Path, namenode_dir: Path, cluster_id: str) -> list[str]:
    """The command line that formats the NameNode's (empty) metadata directory."""
    return [
        java,
        "-Xmx256m",
        "-XX:TieredStopAtLevel=1",
        *_JVM_FLAGS,
        "-cp",
        _classpath(namenode_dir, jars),
        _NAMENODE_CLASS,
        "-format",
        "-force",
        "-nonInteractive",
        "-clusterid",
        cluster_id,
    ]


def fs_shell_command(conf_dir: Path, jars: Path, args: Sequence[str]) -> list[str]:
    """The command line of Hadoop's FsShell (`hdfs dfs`) with the client configs in conf_dir."""
    return [
        maven.java("Hadoop's shell"),
        "-Xmx256m",
        "-XX:TieredStopAtLevel=1",  # a short-lived JVM: C1 alone starts faster
        *_JVM_FLAGS,
        "-cp",
        f"{conf_dir}:{jars}/*",
        _FS_SHELL_CLASS,
        *args,
    ]
