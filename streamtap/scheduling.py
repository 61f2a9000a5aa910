"""Scheduled captures: what the Airflow DAG (airflow/dags/streamtap_capture.py) asks of streamtap.

One YAML config per DAG: the configs in $STREAMTAP_DAG_CONFIGS each become `ScheduledCapture`
(or a ConfigError that the DAG file turns into an Airflow import error). Each run captures for
`capture_seconds` with `python -m streamtap.launch --config=... --duration=...` on the config's
runner, then `verify_scheduled` reads the capture back and fails the run on an unmarked gap, a
checksum error, a conflicting duplicate or a configured stream with nothing captured. Runs of one
config continue one capture (the config's `resume`, the default), so a re-run or a retry of an
interval adds to it without duplicating anything, and every run verifies the whole capture.

Only `interval_seconds` needs Airflow's dependencies (croniter); the rest is plain streamtap.
"""

from __future__ import annotations

import datetime
import itertools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streamtap.captures import read_capture, verify
from streamtap.config import PipelineConfig
from streamtap.errors import ConfigError
from streamtap.pipelines.options import flag_error, flag_problems
from streamtap.plugins import PLUGINS, load_config

__all__ = [
    "CONFIGS_VARIABLE",
    "CaptureNotClean",
    "ConfigErrors",
    "ScheduledCapture",
    "default_capture_seconds",
    "interval_seconds",
    "load_scheduled",
    "verify_scheduled",
]

# The folder of configs, one DAG each; default: airflow/configs/ beside the DAG folder.
CONFIGS_VARIABLE = "STREAMTAP_DAG_CONFIGS"
# A run's capture ends this long before the next run is due (its windows are written and
# verified in that time), unless the interval is 10 minutes or less: then it takes half of it.
MARGIN_SECONDS = 300.0
# Status lines of a scheduled capture: one a minute is enough in a task log.
STATUS_INTERVAL_SECONDS = 60.0

_DAG_ID_PART = re.compile(r"[A-Za-z0-9_.-]+")


class CaptureNotClean(Exception):
    """verify found a problem in a scheduled capture; the message names each one."""


class ConfigErrors(ConfigError):
    """Several configs that cannot be scheduled, each with its own message."""

    def __init__(self, errors: list[ConfigError]):
        self.configs = errors
        ValueError.__init__(self, "\n".join(str(error) for error in errors))
        self.errors = [line for error in errors for line in error.errors]


@dataclass(frozen=True)
class ScheduledCapture:
    """One config's DAG: its id, the config, and the Beam options of its capture task."""

    path: Path
    config: PipelineConfig

    @property
    def dag_id(self) -> str:
        return f"streamtap_{self.path.stem}"

    def pipeline_options(self, capture_seconds: float) -> dict[str, object]:
        """The capture task's Beam options (BeamRunPythonPipelineOperator's `pipeline_options`):
        streamtap's own (StreamtapOptions) and the config's schedule.pipeline_options, where
        'true' is a flag without a value and 'false' leaves the flag out."""
        options: dict[str, object] = {
            "config": str(self.path),
            "duration": f"{capture_seconds:g}",
            "status_interval": f"{STATUS_INTERVAL_SECONDS:g}",
        }
        for name, value in self.config.schedule.pipeline_options.items():
            flag = {"true": True, "false": False}.get(value.strip().lower(), value)
            if flag is not False:
                options[name] = flag
        return options


def config_files(folder: Path) -> list[Path]:
    """The YAML configs in `folder` (not its subfolders), by name."""
    return sorted(
        path for path in folder.iterdir() if path.suffix in (".yaml", ".yml") and path.is_file()
    )


def load_scheduled(folder: str | Path) -> tuple[list[ScheduledCapture], list[ConfigError]]:
    """Every config in `folder` that can be scheduled, and a ConfigError for each that cannot
    (its loader errors, plus what a scheduled run cannot work with)."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        message = f"not a folder of pipeline configs (set {CONFIGS_VARIABLE} to one)"
        return [], [ConfigError([message], str(folder))]
    captures, errors = [], []
    for path in config_files(folder):
        try:
            config = load_config(path)
        except ConfigError as error:
            errors.append(error)
            continue
        problems = _schedule_problems(path, config)
        if problems:
            errors.append(ConfigError(problems, str(path)))
        else:
            captures.append(ScheduledCapture(path, config))
    return captures, errors


def _schedule_problems(path: Path, config: PipelineConfig) -> list[str]:
    """What a config that `streamtap validate` accepts still needs to run on a schedule."""
    problems = []
    if not _DAG_ID_PART.fullmatch(path.stem):
        problems.append(
            f"file name {path.name!r}: the DAG id is streamtap_<file name>; use letters, "
            "digits, '.', '_' or '-'"
        )
    for index, sink in enumerate(config.sinks):
        if sink.type == "parquet" and not os.path.isabs(sink.path):
            problems.append(
                f"sinks[{index}].path: {sink.path!r} is relative, and a scheduled capture runs in "
                "the Airflow worker's working directory; give an absolute path (${HOME}/... works)"
            )
    options = ScheduledCapture(path, config).pipeline_options(capture_seconds=1)
    flags = [
        f"--{name}" if value is True else f"--{name}={value}" for name, value in options.items()
    ]
    unknown = flag_problems(flags, PLUGINS.runners)
    if unknown:
        problems.append(f"schedule.pipeline_options: {flag_error(unknown)}")
    if not any(_location(sink) for sink in config.sinks):
        kinds = ", ".join(sorted({sink.type for sink in config.sinks}))
        problems.append(
            f"sinks: the verify task reads a Parquet directory or a PLAINTEXT Kafka topic "
            f"back; this config has only {kinds}: add a parquet sink"
        )
    return problems


def interval_seconds(expression: str) -> float:
    """The shortest time between two runs of a cron expression (over the next 100 runs)."""
    from croniter import croniter  # installed with Airflow (the `airflow` extra)

    start = datetime.datetime(2026, 1, 5, tzinfo=datetime.timezone.utc)  # any Monday
    times = croniter(expression, start)
    runs = [times.get_next(datetime.datetime) for _ in range(101)]
    return min((b - a).total_seconds() for a, b in itertools.pairwise(runs))


def default_capture_seconds(interval: float | None) -> float | None:
    """capture_seconds for a schedule that does not give it: the interval less 5 minutes, or
    half the interval when that is 10 minutes or less; None without a regular interval."""
    if interval is None or interval <= 0:
        return None
    return interval - MARGIN_SECONDS if interval > 2 * MARGIN_SECONDS else interval / 2


def capture_seconds(capture: ScheduledCapture, interval: float | None) -> float:
    """The length of each run's capture; raises ConfigError when the schedule gives none that
    works (no interval and no capture_seconds, or a capture longer than the interval)."""
    given = capture.config.schedule.capture_seconds
    cron = capture.config.schedule.cron
    if given is None:
        seconds = default_capture_seconds(interval)
        if seconds is None:
            raise ConfigError(
                [
                    f"schedule.capture_seconds: required, since schedule.cron {cron!r} has no "
                    "regular interval to derive it from"
                ],
                str(capture.path),
            )
        return seconds
    if interval is not None and given >= interval:
        raise ConfigError(
            [
                f"schedule.capture_seconds: {given:g} s is not shorter than the {interval:g} s "
                f"between runs of {cron!r}: each run would delay the next; use at most "
                f"{default_capture_seconds(interval):g}"
            ],
            str(capture.path),
        )
    return given


def _location(sink) -> str | None:
    """Where `streamtap verify` reads this sink's capture back, if the DAG can: a Parquet
    directory, or a Kafka topic without authentication (kafka://servers/topic)."""
    if sink.type == "parquet":
        return sink.path
    if sink.type == "kafka" and getattr(sink, "security_protocol", "PLAINTEXT") == "PLAINTEXT":
        return f"kafka://{sink.bootstrap_servers}/{sink.topic}"
    return None


def verify_scheduled(config_path: str | Path, log: Callable[[str], object] = print) -> None:
    """Verifies the capture of a scheduled config in every sink the DAG can read back, with the
    config's streams expected; logs a summary per stream and raises CaptureNotClean naming each
    problem (an unmarked gap, a checksum error, a conflicting duplicate, a missing stream)."""
    config = load_config(config_path)
    expected = [source.id for source in config.sources]
    failures = []
    for index, sink in enumerate(config.sinks):
        location = _location(sink)
        if location is None:
            log(
                f"sinks[{index}] ({sink.type}): not verified here (verify reads Parquet and "
                "PLAINTEXT Kafka captures back)"
            )
            continue
        log(f"verifying {location} ({len(expected)} stream(s))")
        try:
            reports = verify(read_capture(location), expected)
        except (OSError, ValueError) as error:  # nothing written there, or unreadable
            failures.append(f"{location}: cannot read the capture: {error}")
            continue
        for report in reports.values():
            log(report.summary())
            for problem in report.problems:
                log(f"  {problem}")
            if report.problem_count > len(report.problems):
                log(f"  ... and {report.problem_count - len(report.problems)} more")
            if not report.ok:
                failures.append(f"{location}: {report.stream_id}: " + "; ".join(report.problems))
    if failures:
        raise CaptureNotClean("the capture is not clean:\n" + "\n".join(failures))
    log("verify: every stream OK")
