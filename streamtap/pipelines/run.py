"""Runs a capture: chooses the runner, starts the pipeline, shows status, stops it cleanly.

The runner is chosen through the runner plug-ins (`streamtap.plugins`, contract in
streamtap.pipelines.runners.base): the one that answers to `--runner` (default PrismRunner) fills
in its options, refuses what it cannot run and watches the job; any other Beam runner
(FnApiRunner, ...) runs as given.

Stopping: the first Ctrl-C / SIGTERM asks every stream to cut what it has received and end, so the
pipeline drains (every window is written) and the process exits 0. A second one cancels the job.
Runners that run the whole pipeline inside `run()` (the FnApiRunner) run in a thread of their own,
so that this one takes the signals and the status lines go on.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Sequence, TextIO

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.runner import PipelineState

from streamtap.config import PipelineConfig
from streamtap.errors import RunError
from streamtap.io.hub import clear_stop, hub, request_stop
from streamtap.io.stream_state import StreamStats
from streamtap.pipelines.capture import build_capture, resume_positions
from streamtap.pipelines.early_start import in_process, start_readers, stop_unclaimed
from streamtap.pipelines.failures import SinkErrorReporting, failure_line
from streamtap.pipelines.sampling import without_state_sampling
from streamtap.plugins import PLUGINS, Plugins
from streamtap.status import STATUS_LOGGER, StatusPrinter, summary_lines

__all__ = ["RunError", "DEFAULT_RUNNER", "pipeline_options", "run_capture"]

_LOGGER = logging.getLogger(__name__)

DEFAULT_RUNNER = "PrismRunner"


def pipeline_options(beam_args: Sequence[str], plugins: Plugins = PLUGINS) -> PipelineOptions:
    """Beam options from the command line, with the chosen runner's defaults filled in."""
    args = list(beam_args)
    if not PipelineOptions(args).view_as(StandardOptions).runner:
        args.append(f"--runner={DEFAULT_RUNNER}")
    plugin = plugins.runner(PipelineOptions(args).view_as(StandardOptions).runner)
    return PipelineOptions(plugin.defaults(args) if plugin else args)


def reader_parallelism(options: PipelineOptions) -> int:
    """How many workers the runner will read streams with, from the parallelism options."""
    values = options.get_all_options(retain_unknown_options=True)
    candidates = [
        values.get("parallelism"),  # Flink
        values.get("sdk_worker_parallelism"),  # portable runners: SDK workers per worker
        values.get("direct_num_workers"),  # FnApiRunner / Prism
    ]
    return max([1] + [int(value) for value in candidates if value and int(value) > 0])


def run_capture(
    config: PipelineConfig,
    beam_args: Sequence[str] = (),
    duration: float | None = None,
    status_interval: float = 10.0,
    out: TextIO = sys.stderr,
    plugins: Plugins = PLUGINS,
    status_format: str = "text",
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> int:
    """Runs the capture until it ends (duration, byte limits, EOF) or is stopped.

    Status lines (every `status_interval` seconds, `status_format` "text" or "json") are INFO
    records of the `streamtap.status` logger; when nothing configured that logger (the CLI
    does), they go to `out` like the rest. `metrics_port`: serve Prometheus metrics there
    while the capture runs (streamtap.metrics).

    Returns the process exit code: 0 when the pipeline finished and wrote everything. Raises
    RunError when the chosen runner cannot run it or the metrics port cannot be bound (the
    message says what to change).
    """
    options = pipeline_options(beam_args, plugins)
    plugin = plugins.runner(options.view_as(StandardOptions).runner)
    clear_stop()
    stats_before = _stream_stats()  # of earlier captures in this process
    streaming = options.view_as(StandardOptions).streaming
    bounded = not streaming and (
        duration is not None or all(source.max_bytes for source in config.sources)
    )
    if plugin is not None:
        plugin.check(options, bounded)
        plugin.prepare(options)
    run_dir = Path(tempfile.mkdtemp(prefix="streamtap-run-"))
    stop_file = run_dir / "STOP"
    start_positions = resume_positions(config)
    for stream_id, (next_seq, next_offset) in sorted(start_positions.items()):
        out.write(f"streamtap: {stream_id}: continuing the capture at seq {next_seq}, "
                  f"byte {next_offset}\n")
    # Bounded captures on the FnApiRunner in this process read while the pipeline is built and
    # started (early_start), and their bundles run without Beam's sampling thread (sampling).
    here = bounded and in_process(options)
    early = start_readers(config, duration, str(stop_file), start_positions) if here else []
    try:
        with without_state_sampling() if here else contextlib.nullcontext():
            return _run(
                config, options, plugin, bounded, duration, run_dir, stop_file, start_positions,
                stats_before, status_interval, out, status_format, metrics_port, metrics_host,
            )
    finally:
        stop_unclaimed(early)


def _run(
    config: PipelineConfig,
    options: PipelineOptions,
    plugin,
    bounded: bool,
    duration: float | None,
    run_dir: Path,
    stop_file: Path,
    start_positions: dict[str, tuple[int, int]],
    stats_before: dict[str, StreamStats],
    status_interval: float,
    out: TextIO,
    status_format: str,
    metrics_port: int | None,
    metrics_host: str,
) -> int:
    """run_capture() from building the pipeline on."""
    pipeline = beam.Pipeline(options=options)
    build_capture(
        pipeline,
        config,
        duration=duration,
        bounded=bounded,
        stop_file=str(stop_file),
        start_positions=start_positions,
        parallelism=reader_parallelism(options),
    )

    metrics = None
    if metrics_port is not None:
        from streamtap.metrics import serve_metrics

        try:
            metrics = serve_metrics(
                metrics_port, [source.id for source in config.sources], metrics_host
            )
        except OSError as error:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise RunError(f"{error.strerror or error}: choose another --metrics-port") from error
        out.write(f"streamtap: metrics at http://{metrics.host}:{metrics.port}/metrics\n")
    runner = options.view_as(StandardOptions).runner
    mode = "bounded" if bounded else "unbounded"
    until = f"for {duration:g} s" if duration else "until stopped (Ctrl-C drains and exits)"
    out.write(f"streamtap: capturing {len(config.sources)} stream(s) on {runner} ({mode}) {until}\n")
    out.flush()

    # The FnApiRunner runs the whole pipeline inside run(): in the wait thread below, so that
    # this thread takes Ctrl-C and the status lines print while it runs.
    in_run = isinstance(pipeline.runner, FnApiRunner)
    status_output = _StatusOutput(out)
    status = StatusPrinter(status_interval, status_format)
    results: list = []
    if not in_run:
        # Runner daemons started now (Prism, job servers) inherit "ignore", so a Ctrl-C at the
        # terminal, which signals the whole process group, stops the streams, not the runner.
        previous = {
            sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            results.append(pipeline.run())
        except BaseException:
            status_output.close()
            if metrics is not None:
                metrics.close()
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if plugin is not None:
            plugin.watch(options, [source.id for source in config.sources], str(stop_file))

    finished = threading.Event()
    outcome: dict[str, object] = {}

    def wait() -> None:
        try:
            if not results:
                results.append(pipeline.run())
            outcome["state"] = results[0].wait_until_finish()
        except BaseException as error:  # reported below, in the main thread
            outcome["error"] = error
        finally:
            finished.set()

    signals = {"count": 0}

    def on_signal(signum, frame) -> None:
        signals["count"] += 1
        if signals["count"] == 1:
            out.write(
                f"\nstreamtap: {signal.Signals(signum).name}: finishing streams and writing what "
                "was received (again to cancel)\n"
            )
            request_stop()
            stop_file.touch()
        else:
            out.write("\nstreamtap: cancelling the pipeline\n")
            try:
                if results:  # an in-run pipeline cannot be cancelled: just stop waiting for it
                    results[0].cancel()
            finally:
                finished.set()

    handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    sink_errors = SinkErrorReporting()  # a sink's SinkError: one line at the end
    sink_errors.install()
    status.start()
    threading.Thread(target=wait, name="streamtap-wait", daemon=True).start()
    if in_run and plugin is not None:
        plugin.watch(options, [source.id for source in config.sources], str(stop_file))
    try:
        while not finished.wait(0.2):
            pass
    finally:
        status.stop()
        sink_errors.remove()
        status_output.close()
        if metrics is not None:
            metrics.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        shutil.rmtree(run_dir, ignore_errors=True)

    lines = summary_lines(source.id for source in config.sources)
    if lines:
        out.write("streamtap: summary\n" + "".join(f"  {line}\n" for line in lines))
    if signals["count"] > 1:
        return 130
    if "error" in outcome:
        out.write(f"streamtap: the pipeline failed: {failure_line(outcome['error'])}\n")
        return 1
    state = outcome.get("state")
    if state != PipelineState.DONE:
        out.write(f"streamtap: the pipeline ended in state {state}\n")
        return 1
    failed = _failed_streams([source.id for source in config.sources], stats_before)
    if failed:  # the others' chunks are written; the run still failed
        out.write("".join(f"streamtap: {line}\n" for line in failed))
        return 1
    return 0


def _stream_stats() -> dict[str, StreamStats]:
    """The counters of every stream read in this process so far, ended or not."""
    return {**hub().finished, **{sid: reader.stats for sid, reader in hub().readers.items()}}


def _failed_streams(stream_ids: Sequence[str], before: dict[str, StreamStats]) -> list[str]:
    """A line for each stream this run read that captured nothing and had errors. Streams read
    elsewhere (remote workers) are not judged: their counters are not here."""
    now = _stream_stats()
    return [
        f"{stream_id}: FAILED: captured nothing; {stats.errors} error(s), the last: "
        f"{stats.last_error}"
        for stream_id in stream_ids
        if (stats := now.get(stream_id)) is not None and stats is not before.get(stream_id)
        and stats.chunks == 0 and stats.errors
    ]


class _StatusOutput:
    """Sends the status lines to `out` while a run lasts, unless the `streamtap.status` logger
    has a handler of its own (the CLI gives it one)."""

    def __init__(self, out: TextIO):
        self._logger = logging.getLogger(STATUS_LOGGER)
        self._handler: logging.Handler | None = None
        self._level = self._logger.level
        if not self._logger.handlers:
            self._handler = logging.StreamHandler(out)
            self._handler.setFormatter(logging.Formatter("%(message)s"))
            self._logger.addHandler(self._handler)
            if self._logger.getEffectiveLevel() > logging.INFO:
                self._logger.setLevel(logging.INFO)

    def close(self) -> None:
        if self._handler is not None:
            self._logger.removeHandler(self._handler)
            self._logger.setLevel(self._level)
            self._handler = None
