"""Apache Flink through Beam's portable FlinkRunner: `--flink_master=HOST:PORT` alone works.

Beam's own FlinkRunner downloads a shaded job-server jar from Maven Central, which does not serve
any usable one here; `ensure_job_server` builds streamtap's own with the shared builder
(streamtap.pipelines.runners.jobserver): beam-runners-flink-1.19 2.70.0 (the plain runner is
served at 2.62.0 and 2.70.0 only, and no 1.20 / 2.x runner at all), with a loopback patch of
Beam's gRPC servers and a backport of the fix for Beam #27648 (patches.py). `Flink.defaults`
fills in, unless the user chose otherwise:

- `--job_endpoint`: the job server of a `streamtap services up flink` cluster whose REST address is
  the `--flink_master` (found through the flink state dir, $STREAMTAP_STATE/flink); otherwise
- `--flink_job_server_jar`: streamtap's cached job server launcher (fetched on first use), which
  Beam starts for this run and stops after it (with `--expansion_port=-1`: the Java expansion
  service is not among its jars); this serves remote clusters and `--flink_master=[local]` (an
  embedded MiniCluster inside the job server);
- `--flink_version=1.19`: the Flink version of that job server;
- `--environment_type=LOOPBACK` when the master is on this machine (the SDK workers run inside
  `streamtap run`, so Ctrl-C drains the streams as on Prism). A remote master needs a worker
  choice: EXTERNAL with a worker pool beside each TaskManager, or DOCKER/PROCESS;
- with `--environment_type=EXTERNAL` and no `--environment_config`: the worker pool of the local
  cluster (`streamtap services up flink --worker-pool-port N`), and `--sdk_worker_parallelism`
  = the job's slots per TaskManager (min of `--parallelism` and its slots), so every slot can
  have a Python worker process of its own (LOOPBACK runs all Python work in the one `streamtap
  run` process: one GIL however many slots). The pool's workers see the run's stop file
  (Ctrl-C) and mark each stream that ended beside it, so the drain below sees them end too;
- on a real cluster (not [local]/[auto]): `--checkpointing_interval=10000` (ms), so a failure
  resumes every stream where the last checkpoint left it instead of at seq 0, and
  `--finish_bundle_before_checkpointing` (Beam 2.70 otherwise holds bundle output back and the
  streams stall);
- `--job_name=streamtap-<random>`, by which `Flink.watch` finds the job.

With checkpointing on, Beam keeps the Impulse source running, so the Flink job does not finish by
itself when every stream has ended; `Flink.watch` (called by run_capture) then drains it. With
LOOPBACK, `Flink.prepare` lets Beam's in-process worker pool serve several TaskManagers, whose
worker ids repeat (streamtap.pipelines.runners.loopback).
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions,
    JobServerOptions,
    PipelineOptions,
    PortableOptions,
)

from streamtap.errors import RunError, ServiceError
from streamtap.pipelines.runners import jobserver, loopback
from streamtap.pipelines.runners.base import LOOPBACK_HOSTS, Runner, given, host_of
from streamtap.pipelines.runners.java import JAVA17_OPTS
from streamtap.pipelines.runners.local import running_cluster
from streamtap.pipelines.runners.patches import LOOPBACK, sdf_residual_state

__all__ = [
    "DEFAULT_CHECKPOINTING_INTERVAL_MS",
    "FLINK_MINOR_VERSION",
    "Flink",
    "ensure_job_server",
    "running_job_endpoint",
    "running_worker_pool",
]

_LOGGER = logging.getLogger(__name__)

# The Flink minor version of Beam's newest Flink runner that Maven Central serves here (there is
# no 1.20 / 2.x runner): the job server's client jars are 1.19.0, the local cluster 1.19.x.
FLINK_MINOR_VERSION = "1.19"
DEFAULT_CHECKPOINTING_INTERVAL_MS = 10_000
_MAGIC_MASTERS = ("[local]", "[auto]")
# The job server JVM Beam starts from --flink_job_server_jar: a modest heap (it also hosts the
# whole MiniCluster with --flink_master=[local]); the opens Flink needs on Java 17.
_JOB_SERVER_JVM = ("-Xmx1g", "-XX:+UseSerialGC", "-Djava.net.preferIPv4Stack=true")


def job_server_spec(flink_minor: str = FLINK_MINOR_VERSION) -> jobserver.JobServerSpec:
    """The Beam Flink job server: FlinkJobServerDriver, its jars beside the launcher (jars/)."""
    runner = f"beam-runners-flink-{flink_minor}"
    return jobserver.JobServerSpec(
        title="the Beam Flink job server",
        runner_artifact=runner,
        main_class="org.apache.beam.runners.flink.FlinkJobServerDriver",
        launcher_name=f"{runner}-job-server-{jobserver.BEAM_JOB_SERVER_VERSION}.jar",
        patches=(LOOPBACK, sdf_residual_state(flink_minor)),
        extra_dependencies=(("org.slf4j", "slf4j-simple", "2.0.16"),),
    )


def ensure_job_server(flink_minor: str = FLINK_MINOR_VERSION) -> Path:
    """The launcher jar of the Beam Flink job server, fetched from Maven Central the first time.

    `java -jar <it>` runs `FlinkJobServerDriver`; Beam's `--flink_job_server_jar` accepts it.
    Raises ServiceError when it cannot be fetched or built.
    """
    return jobserver.ensure_job_server(job_server_spec(flink_minor))


class Flink(Runner):
    """The FlinkRunner: fills in the job server and workers; drains a job whose streams ended."""

    names = ("FlinkRunner",)
    summary = "Apache Flink 1.19 (`--flink_master=HOST:PORT`)"

    def defaults(self, beam_args: Sequence[str]) -> list[str]:
        """`beam_args` plus the options a FlinkRunner capture needs here (module docstring).

        Raises RunError when the choice cannot be made (a remote master without
        --environment_type, or no way to get the job server).
        """
        args = list(beam_args)
        options = PipelineOptions(args)
        if not self.runs(options):
            return args
        flink = options.view_as(FlinkRunnerOptions)
        portable = options.view_as(PortableOptions)
        master = (flink.flink_master or "[auto]").strip()
        extra: list[str] = []

        if not portable.job_endpoint and not flink.flink_job_server_jar and not (
            flink.flink_submit_uber_jar
        ):
            endpoint = None if master in _MAGIC_MASTERS else running_job_endpoint(master)
            if endpoint is not None:
                _LOGGER.info("FlinkRunner: using the job server of the local cluster at %s",
                             endpoint)
                extra.append(f"--job_endpoint={endpoint}")
            else:
                try:
                    launcher = ensure_job_server()
                except ServiceError as error:
                    raise RunError(f"cannot get the Beam Flink job server: {error}") from None
                extra.append(f"--flink_job_server_jar={launcher}")
                if not given(args, "expansion_port"):
                    # The Java expansion service is not among the job server's jars.
                    extra.append("--expansion_port=-1")
                if not options.view_as(JobServerOptions).job_server_jvm_properties:
                    extra += [
                        f"--job_server_jvm_properties={prop}"
                        for prop in (*_JOB_SERVER_JVM, *JAVA17_OPTS.split())
                    ]
            if not given(args, "flink_version"):
                extra.append(f"--flink_version={FLINK_MINOR_VERSION}")

        environment = (portable.environment_type or "").upper()
        if environment == "EXTERNAL" and not portable.environment_config:
            pool = None if master in _MAGIC_MASTERS else running_worker_pool(master)
            if pool is None:
                raise RunError(
                    "--environment_type=EXTERNAL needs --environment_config=HOST:PORT of a Beam "
                    "worker pool; `streamtap services up flink --worker-pool-port 50000` starts "
                    "one beside the local cluster, which is then used by default"
                )
            address, slots = pool
            _LOGGER.info("FlinkRunner: Python workers from the worker pool at %s", address)
            extra.append(f"--environment_config={address}")
            if not given(args, "sdk_worker_parallelism"):
                # A worker process per slot the job can use on a TaskManager (the cluster's
                # parallelism.default is 1). Beam deals the job's stages out to a TaskManager's
                # workers in turn, so two reading tasks may still share one; a TaskManager per
                # slot (--taskmanagers N --slots 1) gives every slot its own process for sure.
                parallelism = flink.parallelism if (flink.parallelism or 0) > 0 else 1
                extra.append(f"--sdk_worker_parallelism={max(1, min(slots, parallelism))}")

        if not portable.environment_type and not portable.output_executable_path:
            if master in _MAGIC_MASTERS or host_of(master) in LOOPBACK_HOSTS:
                extra.append("--environment_type=LOOPBACK")
            else:
                raise RunError(
                    f"--flink_master={master} is not on this machine, so choose how its "
                    "TaskManagers run the Python workers: --environment_type=EXTERNAL "
                    "--environment_config=localhost:50000 with `python -m "
                    "apache_beam.runners.worker.worker_pool_main --service_port=50000` running "
                    "beside every TaskManager (same Python, apache-beam and streamtap versions), "
                    "or --environment_type=DOCKER or PROCESS"
                )

        if master not in _MAGIC_MASTERS:
            # A real cluster: checkpoints, so a failure resumes every stream where it was.
            if not given(args, "checkpointing_interval"):
                extra.append(f"--checkpointing_interval={DEFAULT_CHECKPOINTING_INTERVAL_MS}")
            if not given(args, "finish_bundle_before_checkpointing"):
                # Without it Beam 2.70 buffers a bundle's output until a checkpoint completes,
                # and with a source kept alive for checkpoints the first bundles never come out.
                extra.append("--finish_bundle_before_checkpointing")
        if not given(args, "job_name"):
            # How Flink.watch finds the job on the cluster.
            extra.append(f"--job_name=streamtap-{uuid.uuid4().hex[:12]}")
        if extra:
            _LOGGER.debug("FlinkRunner defaults: %s", " ".join(extra))
        return args + extra

    def prepare(self, options: PipelineOptions) -> None:
        """With LOOPBACK workers: Beam's in-process worker pool made to serve several TaskManagers
        (their worker ids repeat; streamtap.pipelines.runners.loopback)."""
        if self.runs(options) and (
            options.view_as(PortableOptions).environment_type or ""
        ).upper() == "LOOPBACK":
            loopback.install()

    def watch(
        self, options: PipelineOptions, stream_ids: Sequence[str], stop_file: str | None = None
    ) -> threading.Thread | None:
        """Ends the Flink job of a capture once every stream of it has finished.

        With checkpointing on, Beam keeps the pipeline's Impulse source running so that
        checkpoints stay possible, so a job whose streams all ended (duration, byte limits, EOF,
        Ctrl-C) would never finish. This thread sees the streams end and then stops the job with
        a drain through Flink's REST API (`flink stop --drain`): every window is fired and
        written, a final savepoint taken, and the job FINISHES, so `streamtap run` exits 0. It
        sees the streams end through the marks beside the run's stop file
        (`streamtap.io.hub.ended_streams`), which LOOPBACK workers (in this process) and EXTERNAL
        workers of a worker pool on this host both write (without a stop file: LOOPBACK streams
        only, through this process's hub). Nothing is started for other runners, other worker
        environments, or an embedded cluster ([local]/[auto]); a batch job that finishes by
        itself is left alone. EXTERNAL workers on other hosts neither see the stop file nor mark
        their streams: such a job is left running (bound those captures).
        """
        if not self.runs(options):
            return None
        portable = options.view_as(PortableOptions)
        master = (options.view_as(FlinkRunnerOptions).flink_master or "[auto]").strip()
        job_name = options.get_all_options(retain_unknown_options=True).get("job_name")
        environment = (portable.environment_type or "").upper()
        local_pool = environment == "EXTERNAL" and stop_file is not None and host_of(
            portable.environment_config or ""
        ) in LOOPBACK_HOSTS
        if (environment != "LOOPBACK" and not local_pool) or master in _MAGIC_MASTERS \
                or not job_name:
            return None
        rest = master if "://" in master else f"http://{master}"
        thread = threading.Thread(
            target=_watch, args=(rest.rstrip("/"), job_name, list(stream_ids), stop_file),
            name="streamtap-flink-drain", daemon=True,
        )
        thread.start()
        return thread


def running_job_endpoint(flink_master: str | None, state_dir: Path | None = None) -> str | None:
    """The job endpoint of a local Flink cluster (`streamtap services up flink`) running from
    `state_dir` (default $STREAMTAP_STATE/flink) whose master is flink_master.

    None when no such cluster runs (or it has no job server). `flink_master` may carry an
    http:// scheme; "localhost" and "127.0.0.1" are the same host.
    """
    saved = _running_cluster(flink_master, state_dir, "job-server.pid", "job_port")
    return f"127.0.0.1:{saved['job_port']}" if saved else None


def running_worker_pool(
    flink_master: str | None, state_dir: Path | None = None
) -> tuple[str, int] | None:
    """(host:port of the Beam worker pool, task slots per TaskManager) of a local Flink cluster
    running from `state_dir` whose master is flink_master, or None when it has no worker pool."""
    saved = _running_cluster(flink_master, state_dir, "worker-pool.pid", "worker_pool_port")
    if not saved:
        return None
    return f"127.0.0.1:{saved['worker_pool_port']}", int(saved.get("slots") or 1)


def _running_cluster(
    flink_master: str | None, state_dir: Path | None, pid_file: str, port_key: str
) -> dict | None:
    saved = running_cluster("flink", pid_file, port_key, state_dir)
    if saved and flink_master is not None:
        host, _, port = flink_master.split("://")[-1].rstrip("/").rpartition(":")
        if host not in ("127.0.0.1", "localhost") or port != str(saved.get("port")):
            return None
    return saved


_GRACE_SECONDS = 3.0


def _watch(rest: str, job_name: str, stream_ids: list[str], stop_file: str | None) -> None:
    from streamtap.io.hub import ended_streams, hub

    before = {sid: hub().finished.get(sid) for sid in stream_ids}

    def all_ended() -> bool:
        if stop_file is not None:
            return ended_streams(stop_file).issuperset(stream_ids)
        finished = hub().finished
        return all(finished.get(sid) is not None and finished.get(sid) is not before[sid]
                   for sid in stream_ids)

    all_done_since = None
    job_id = None
    while True:
        time.sleep(0.5)
        try:
            job = _find_job(rest, job_name, job_id)
        except (OSError, ValueError) as error:
            _LOGGER.debug("Flink REST API at %s: %s", rest, error)
            continue
        if job is None:
            continue
        job_id = job["jid"]
        if job["state"] in ("FINISHED", "CANCELED", "FAILED"):
            return
        if not all_ended() or job["state"] != "RUNNING":
            all_done_since = None
            continue
        all_done_since = all_done_since or time.monotonic()
        if time.monotonic() - all_done_since < _GRACE_SECONDS:
            continue  # a job that ends by itself (batch, no checkpointing) needs no drain
        _LOGGER.info("every stream ended: draining Flink job %s (%s)", job_id, job_name)
        try:
            _drain(rest, job_id)
        except (OSError, ValueError) as error:
            _LOGGER.warning("could not drain Flink job %s at %s: %s; stop it with `flink stop "
                            "--drain %s`", job_id, rest, error, job_id)
        return


def _find_job(rest: str, job_name: str, job_id: str | None) -> dict | None:
    jobs = _rest(f"{rest}/jobs/overview").get("jobs", [])
    matches = [j for j in jobs if (j["jid"] == job_id if job_id else j.get("name") == job_name)]
    return max(matches, key=lambda j: j.get("start-time", 0)) if matches else None


def _drain(rest: str, job_id: str) -> None:
    try:
        _rest(f"{rest}/jobs/{job_id}/stop", {"drain": True})
    except OSError as error:
        if "savepoint" not in str(error).lower():
            raise
        # The cluster has no state.savepoints.dir: name one (on the JobManager's host).
        _rest(f"{rest}/jobs/{job_id}/stop",
              {"drain": True, "targetDirectory": "file:///tmp/streamtap-savepoints"})


def _rest(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read().decode() or "{}")
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")[:500]
        raise OSError(f"HTTP {error.code} from {url}: {detail}") from None


if __name__ == "__main__":  # pragma: no cover - a manual check: prints the filled-in options
    print(" ".join(Flink().defaults(sys.argv[1:])))
