"""How a local Flink cluster's JVMs are configured: config.yaml, logging, the job server command.

`write_flink_conf` writes `conf/config.yaml` and `conf/log4j-console.properties` into the state
dir of a `streamtap.services.flink.FlinkService`, rewritten on every `up`: every listening socket
on 127.0.0.1, memory for a shared 2-core machine, hashmap state with checkpoints and savepoints in
the state dir, a fixed-delay restart strategy and fast heartbeats (a killed TaskManager is noticed
within seconds and its job restarts from the last checkpoint), and the distribution's own Java 17
module opens. `job_server_command` is the command line of its Beam job server, bound to
127.0.0.1 too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

from streamtap.pipelines.runners.java import JAVA17_OPTS, java

__all__ = ["java17_opts", "job_server_command", "write_flink_conf"]

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


def write_flink_conf(
    conf_dir: Path,
    state_dir: Path,
    home: Path,
    port: int,
    rpc_port: int,
    slots: int,
    extra: Mapping[str, object],
) -> None:
    """Writes config.yaml (with `extra` entries last) and the log4j config into conf_dir, and
    makes the state dir's checkpoints/, savepoints/, tmp/, artifacts/ and log/."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("checkpoints", "savepoints", "tmp", "artifacts", "log"):
        (state_dir / sub).mkdir(exist_ok=True)
    settings: dict[str, object] = {
        # Loopback only: every listening socket of the cluster on 127.0.0.1.
        "jobmanager.rpc.address": "127.0.0.1",
        "jobmanager.rpc.port": rpc_port,
        "jobmanager.bind-host": "127.0.0.1",
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
        "rest.port": port,
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
        "taskmanager.numberOfTaskSlots": slots,
        "parallelism.default": 1,
        "cluster.evenly-spread-out-slots": True,
        # Checkpoints and recovery: a killed TaskManager is noticed within seconds and its
        # job restarts from the last checkpoint.
        "state.backend.type": "hashmap",
        "state.checkpoints.dir": (state_dir / "checkpoints").as_uri(),
        "state.savepoints.dir": (state_dir / "savepoints").as_uri(),
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
        "io.tmp.dirs": str(state_dir / "tmp"),
        "web.tmpdir": str(state_dir / "tmp"),
        "blob.storage.directory": str(state_dir / "tmp"),
        # Beam's SDK harness threads outlive a job's class loader briefly.
        "classloader.check-leaked-classloader": False,
        "env.java.opts.all": java17_opts(home),
        **extra,
    }
    (conf_dir / "config.yaml").write_text(
        "# Written by streamtap.services.flink; rewritten on every `up`.\n"
        + yaml.safe_dump(settings, sort_keys=False, width=10_000)
    )
    (conf_dir / "log4j-console.properties").write_text(_LOG4J_CONSOLE)


def java17_opts(home: Path) -> str:
    """env.java.opts.all of the distribution's default config (Java 17 module opens)."""
    try:
        default = yaml.safe_load((home / "conf" / "config.yaml").read_text())
        opts = default["env"]["java"]["opts"]["all"]
        if isinstance(opts, str) and opts:
            return opts
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        pass
    return JAVA17_OPTS



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
        java(), f"-Xmx{heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
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
