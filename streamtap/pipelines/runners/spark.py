"""Apache Spark through Beam's portable SparkRunner, bounded captures only.

`--spark_master_url=spark://HOST:PORT` alone works. Beam's portable Spark runner runs batch
pipelines only: a Spark capture must be bounded (`--duration`, or `max_bytes` on every source);
`Spark.check` refuses an unbounded one. `Spark.defaults(beam_args)` fills in, unless the user
chose otherwise:

- `--job_endpoint`: the job server of a `streamtap services up spark` cluster whose master is the
  `--spark_master_url` (found through the spark state dir, $STREAMTAP_STATE/spark); otherwise
- `--spark_job_server_jar`: streamtap's cached job server launcher (fetched on first use), which
  Beam starts for this run and stops after it (with `--expansion_port=-1`: the Java expansion
  service is not among its jars, and JVM properties for a small loopback-only Spark driver);
  this serves remote masters and `local[N]` (Spark inside the job server JVM);
- `--files_to_stage=<launcher jar>` when the master is on this machine: Spark then ships only
  that small jar to executors, whose manifest names Beam's jars by absolute path, instead of
  the job server's whole class path (~370 jars, 420 MB copied into every executor per job);
- `--environment_type=LOOPBACK` when the master is on this machine (the SDK workers run inside
  `streamtap run`). A remote master needs a worker choice: EXTERNAL with a worker pool beside
  each Spark Worker, or DOCKER/PROCESS;
- `--job_name=streamtap-<random>` (the Spark application name).

The job server (streamtap.pipelines.runners.jobserver) is beam-runners-spark-3 2.70.0, the
newest Maven Central serves here. It is the Spark driver (client mode), so it runs on the Spark
distribution's own jars (streamtap.pipelines.runners.distributions, Spark 3.5.9; Beam 2.70 is
built against Spark 3.5.0, Scala 2.12): its launcher's Class-Path lists Beam's jars minus those
the distribution also ships (Spark's versions win; only Beam's newer Guava and Gson are kept),
then every jar of the distribution, by absolute file: URL (the Workers run on this machine).
Besides the loopback patch, the launcher carries SparkExecutableStageFunction with a bundle
checkpoint handler (streamtap.pipelines.runners.patches): unpatched, every `defer_remainder` of a
bounded stream (waiting for data) fails the Spark task with "The ActiveBundle does not have a
registered bundle checkpoint handler". Spark's options for the driver are JVM system properties
(`driver_properties`), which Beam's SparkContextFactory reads.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from apache_beam.options.pipeline_options import (
    JobServerOptions,
    PipelineOptions,
    PortableOptions,
    SparkRunnerOptions,
)

from streamtap.errors import RunError, ServiceError
from streamtap.pipelines.runners import jobserver
from streamtap.pipelines.runners.base import LOOPBACK_HOSTS, Runner, given, host_of
from streamtap.pipelines.runners.distributions import SPARK_VERSION, ensure_spark
from streamtap.pipelines.runners.java import SPARK_JAVA17_OPTS
from streamtap.pipelines.runners.local import running_cluster
from streamtap.pipelines.runners.patches import LOOPBACK, SPARK_STAGE_CHECKPOINTS

__all__ = [
    "DEFAULT_SPARK_MASTER",
    "Spark",
    "driver_properties",
    "ensure_job_server",
    "running_job_endpoint",
    "running_job_server_jar",
]

_LOGGER = logging.getLogger(__name__)

DEFAULT_SPARK_MASTER = "local[4]"  # Beam's default --spark_master_url
# The job server JVM Beam starts from --spark_job_server_jar: a modest heap (with local[N] it
# also runs the executors' work).
_JOB_SERVER_JVM = ("-Xmx768m", "-XX:+UseSerialGC", "-Djava.net.preferIPv4Stack=true")
# Beam jars kept although Spark ships the same artifact: Spark's copies are much older and only
# there for Hive (Guava 14) or unused by the driver (Gson 2.2), and Beam's GCP core needs these.
_KEEP_BEAM_JARS = ("guava", "gson", "annotations")


def job_server_spec(spark_version: str = SPARK_VERSION) -> jobserver.JobServerSpec:
    """The Beam Spark job server: SparkJobServerDriver on Beam's and the distribution's jars."""
    spark_jars = sorted((ensure_spark(spark_version) / "jars").glob("*.jar"))
    spark_names = {_artifact_name(jar.name) for jar in spark_jars}

    def class_path(beam_jars_dir: Path) -> list[Path]:
        beam_jars = [
            jar for jar in sorted(beam_jars_dir.glob("*.jar"))
            if _artifact_name(jar.name) not in spark_names
            or _artifact_name(jar.name) in _KEEP_BEAM_JARS
        ]
        return beam_jars + spark_jars

    name = f"beam-runners-spark-3-job-server-{jobserver.BEAM_JOB_SERVER_VERSION}"
    return jobserver.JobServerSpec(
        title="the Beam Spark job server",
        runner_artifact="beam-runners-spark-3",
        main_class="org.apache.beam.runners.spark.SparkJobServerDriver",
        launcher_name=f"{name}-spark-{spark_version}.jar",
        patches=(LOOPBACK, SPARK_STAGE_CHECKPOINTS),
        class_path=class_path,
        # So the launcher also works as the only jar Spark ships to executors (which fetch it
        # into their work dir): see --files_to_stage in Spark.defaults.
        absolute_class_path=True,
    )


def ensure_job_server(spark_version: str = SPARK_VERSION) -> Path:
    """The launcher jar of the Beam Spark job server, fetched from Maven Central the first time.

    `java -jar <it>` runs `SparkJobServerDriver`; Beam's `--spark_job_server_jar` accepts it.
    Raises ServiceError when it (or the Spark distribution) cannot be fetched or built.
    """
    return jobserver.ensure_job_server(job_server_spec(spark_version))


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


class Spark(Runner):
    """The SparkRunner: fills in the job server and workers; refuses unbounded captures."""

    names = ("SparkRunner",)
    summary = "Apache Spark 3.5, bounded captures only (`--spark_master_url=spark://HOST:PORT`)"

    def defaults(self, beam_args: Sequence[str]) -> list[str]:
        """`beam_args` plus the options a SparkRunner capture needs here (module docstring).

        Raises RunError when the choice cannot be made (a remote master without
        --environment_type, or no way to get the job server).
        """
        args = list(beam_args)
        options = PipelineOptions(args)
        if not self.runs(options):
            return args
        spark = options.view_as(SparkRunnerOptions)
        portable = options.view_as(PortableOptions)
        master = (spark.spark_master_url or DEFAULT_SPARK_MASTER).strip()
        local = _is_local_master(master)
        if not local and not master.startswith("spark://"):
            raise RunError(
                f"--spark_master_url={master}: use spark://HOST:PORT (a standalone cluster, e.g. "
                "from `streamtap services up spark`) or local[N]"
            )
        extra: list[str] = []
        launcher = None

        if not portable.job_endpoint and not spark.spark_job_server_jar and not (
            spark.spark_submit_uber_jar
        ):
            endpoint = None if local else running_job_endpoint(master)
            if endpoint is not None:
                _LOGGER.info("SparkRunner: using the job server of the local cluster at %s",
                             endpoint)
                extra.append(f"--job_endpoint={endpoint}")
                launcher = running_job_server_jar(master)
            else:
                try:
                    launcher = ensure_job_server()
                except ServiceError as error:
                    raise RunError(f"cannot get the Beam Spark job server: {error}") from None
                extra.append(f"--spark_job_server_jar={launcher}")
                # Beam starts that job server from this process: Spark binds its driver and, with
                # local[N], its executor to loopback instead of the first network interface.
                os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
                if not given(args, "expansion_port"):
                    # The Java expansion service is not among the job server's jars.
                    extra.append("--expansion_port=-1")
                if not options.view_as(JobServerOptions).job_server_jvm_properties:
                    extra += [
                        f"--job_server_jvm_properties={prop}"
                        for prop in (*_JOB_SERVER_JVM, *SPARK_JAVA17_OPTS.split(),
                                     *driver_properties(launcher=launcher))
                    ]

        if launcher is not None and host_of(master) in LOOPBACK_HOSTS \
                and not given(args, "files_to_stage") \
                and not given(args, "file_to_stage"):
            # The jars Spark ships to every executor: only the launcher, whose manifest names
            # Beam's jars by absolute path (the Workers are on this machine). Otherwise the runner
            # stages the job server's whole class path, ~370 jars / 420 MB copied into every
            # executor's work dir per job.
            extra.append(f"--files_to_stage={launcher}")

        if not portable.environment_type and not portable.output_executable_path:
            if local or host_of(master) in LOOPBACK_HOSTS:
                extra.append("--environment_type=LOOPBACK")
            else:
                raise RunError(
                    f"--spark_master_url={master} is not on this machine, so choose how its "
                    "executors run the Python workers: --environment_type=EXTERNAL "
                    "--environment_config=localhost:50000 with `python -m "
                    "apache_beam.runners.worker.worker_pool_main --service_port=50000` running "
                    "beside every Spark Worker (same Python, apache-beam and streamtap versions), "
                    "or --environment_type=DOCKER or PROCESS"
                )
        if not given(args, "job_name"):
            extra.append(f"--job_name=streamtap-{uuid.uuid4().hex[:12]}")
        if extra:
            _LOGGER.debug("SparkRunner defaults: %s", " ".join(extra))
        return args + extra

    def check(self, options: PipelineOptions, bounded: bool) -> None:
        """Raises RunError for an unbounded capture on the SparkRunner, which would never finish.

        Beam's portable Spark runner does not run unbounded splittable DoFns: the job would
        start in Spark Streaming mode and never end. Other runners: no-op.
        """
        if bounded or not self.runs(options):
            return
        raise RunError(
            "the SparkRunner runs bounded captures only: give --duration SECONDS, or max_bytes on "
            "every source (Beam's portable Spark runner cannot run the unbounded stream readers); "
            "use the FlinkRunner or Prism for an open-ended capture"
        )


def running_job_endpoint(master_url: str | None, state_dir: Path | None = None) -> str | None:
    """The job endpoint of a local Spark cluster (`streamtap services up spark`) running from
    `state_dir` (default $STREAMTAP_STATE/spark) whose master is master_url.

    None when no such cluster runs (or it has no job server). "localhost" and "127.0.0.1" are the
    same host.
    """
    saved = _running_cluster(master_url, state_dir)
    return f"127.0.0.1:{saved['job_port']}" if saved else None


def running_job_server_jar(master_url: str | None, state_dir: Path | None = None) -> Path | None:
    """The launcher jar the job server of that running local Spark cluster was started from."""
    saved = _running_cluster(master_url, state_dir)
    launcher = Path(saved["launcher"]) if saved and saved.get("launcher") else None
    return launcher if launcher is not None and launcher.is_file() else None


def _running_cluster(master_url: str | None, state_dir: Path | None) -> dict | None:
    saved = running_cluster("spark", "job-server.pid", "job_port", state_dir)
    if saved and master_url is not None:
        match = re.fullmatch(r"spark://([^:/]+):(\d+)/?", master_url.strip())
        if not match or match.group(1) not in ("127.0.0.1", "localhost") \
                or match.group(2) != str(saved.get("port")):
            return None
    return saved


def _is_local_master(master: str) -> bool:
    return re.fullmatch(r"local(\[[0-9*]+(,\s*[0-9]+)?\])?", master) is not None


def _artifact_name(jar: str) -> str:
    """`jackson-core-2.15.4.jar` -> `jackson-core` (Maven artifact id of a jar file name)."""
    return re.sub(r"-\d[^-]*(-.*)?\.jar$", "", jar).removesuffix(".jar")


if __name__ == "__main__":  # pragma: no cover - a manual check: prints the filled-in options
    print(" ".join(Spark().defaults(sys.argv[1:])))
