"""Runner defaults for `--runner=SparkRunner`: `--spark_master_url=spark://HOST:PORT` alone works.

Beam's portable Spark runner runs batch pipelines only: a Spark capture must be bounded
(`--duration`, or `max_bytes` on every source; see run_capture). Beam's own SparkRunner downloads
a shaded job-server jar from Maven Central, which does not serve one here (see
streamtap.services.spark). `spark_defaults(beam_args)` fills in, unless the user chose otherwise:

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
"""
from __future__ import annotations

import logging
import os
import re
import sys
import uuid
from typing import Sequence

from apache_beam.options.pipeline_options import (
    JobServerOptions,
    PipelineOptions,
    PortableOptions,
    SparkRunnerOptions,
    StandardOptions,
)

__all__ = ["spark_defaults", "check_spark_bounded", "is_spark_runner", "DEFAULT_SPARK_MASTER"]

_LOGGER = logging.getLogger(__name__)

DEFAULT_SPARK_MASTER = "local[4]"  # Beam's default --spark_master_url
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
# The job server JVM Beam starts from --spark_job_server_jar: a modest heap (with local[N] it
# also runs the executors' work).
_JOB_SERVER_JVM = ("-Xmx768m", "-XX:+UseSerialGC", "-Djava.net.preferIPv4Stack=true")


def is_spark_runner(runner: str | None) -> bool:
    name = (runner or "").rsplit(".", 1)[-1].lower()
    return name in ("sparkrunner", "spark")


def spark_defaults(beam_args: Sequence[str]) -> list[str]:
    """`beam_args` plus the options a SparkRunner capture needs here; unchanged for other runners.

    Raises streamtap.pipelines.run.RunError when the choice cannot be made (a remote master
    without --environment_type, or no way to get the job server).
    """
    args = list(beam_args)
    options = PipelineOptions(args)
    if not is_spark_runner(options.view_as(StandardOptions).runner):
        return args
    from streamtap.errors import RunError
    from streamtap.errors import ServiceError
    from streamtap.services.spark import (
        SPARK_JAVA17_OPTS,
        driver_properties,
        ensure_job_server,
        running_job_endpoint,
        running_job_server_jar,
    )

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
            _LOGGER.info("SparkRunner: using the job server of the local cluster at %s", endpoint)
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
            if not _given(args, "expansion_port"):
                # The Java expansion service is not among the job server's jars.
                extra.append("--expansion_port=-1")
            if not options.view_as(JobServerOptions).job_server_jvm_properties:
                extra += [
                    f"--job_server_jvm_properties={prop}"
                    for prop in (*_JOB_SERVER_JVM, *SPARK_JAVA17_OPTS.split(),
                                 *driver_properties(launcher=launcher))
                ]

    if launcher is not None and _host(master) in _LOOPBACK_HOSTS \
            and not _given(args, "files_to_stage") \
            and not _given(args, "file_to_stage"):
        # The jars Spark ships to every executor: only the launcher, whose manifest names Beam's
        # jars by absolute path (the Workers are on this machine). Otherwise the runner stages
        # the job server's whole class path, ~370 jars / 420 MB copied into every executor's
        # work dir per job.
        extra.append(f"--files_to_stage={launcher}")

    if not portable.environment_type and not portable.output_executable_path:
        if local or _host(master) in _LOOPBACK_HOSTS:
            extra.append("--environment_type=LOOPBACK")
        else:
            raise RunError(
                f"--spark_master_url={master} is not on this machine, so choose how its "
                "executors run the Python workers: --environment_type=EXTERNAL "
                "--environment_config=localhost:50000 with `python -m "
                "apache_beam.runners.worker.worker_pool_main --service_port=50000` running beside "
                "every Spark Worker (same Python, apache-beam and streamtap versions), or "
                "--environment_type=DOCKER or PROCESS"
            )
    if not _given(args, "job_name"):
        extra.append(f"--job_name=streamtap-{uuid.uuid4().hex[:12]}")
    if extra:
        _LOGGER.debug("SparkRunner defaults: %s", " ".join(extra))
    return args + extra


def check_spark_bounded(options: PipelineOptions, bounded: bool) -> None:
    """Raises RunError for an unbounded capture on the SparkRunner, which would never finish.

    Beam's portable Spark runner does not run unbounded splittable DoFns: the job would start in
    Spark Streaming mode and never end. Other runners: no-op.
    """
    if bounded or not is_spark_runner(options.view_as(StandardOptions).runner):
        return
    from streamtap.errors import RunError

    raise RunError(
        "the SparkRunner runs bounded captures only: give --duration SECONDS, or max_bytes on "
        "every source (Beam's portable Spark runner cannot run the unbounded stream readers); "
        "use the FlinkRunner or Prism for an open-ended capture"
    )


def _is_local_master(master: str) -> bool:
    return re.fullmatch(r"local(\[[0-9*]+(,\s*[0-9]+)?\])?", master) is not None


def _given(args: Sequence[str], name: str) -> bool:
    """Whether --name (or its dashed spelling) is among args, as --name=v or --name v."""
    spellings = {f"--{name}", f"--{name.replace('_', '-')}"}
    return any(arg.split("=", 1)[0] in spellings for arg in args)


def _host(master: str) -> str:
    """The host of a spark://host:port master URL."""
    address = master.split("://", 1)[-1].split("/", 1)[0]
    if address.startswith("["):
        return address.split("]", 1)[0] + "]"
    return address.rsplit(":", 1)[0] if ":" in address else address


if __name__ == "__main__":  # pragma: no cover - a manual check: prints the filled-in options
    print(" ".join(spark_defaults(sys.argv[1:])))
