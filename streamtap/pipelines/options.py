"""Command-line options of a capture: streamtap's own (`StreamtapOptions`), and which flags Beam
(or a runner) knows.

Beam drops flags it does not know with a log line, so `--durtion 60` (a typo) once ran an
unbounded capture. `unknown_flags` finds them first, with the closest known spelling;
`flag_problems` adds what the runners know beyond Beam's Python options, and is what
`streamtap run` and the launcher (`python -m streamtap.pipelines.launch`) refuse a run with.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

__all__ = [
    "JAVA_RUNNER_FLAGS",
    "StreamtapOptions",
    "flag_error",
    "flag_problems",
    "seconds",
    "unknown_flags",
]

# Options of Beam's Java runners (FlinkPipelineOptions, SparkPipelineOptions) that the Python SDK
# does not define but hands to the job server as they are: those streamtap's runner plug-ins fill
# in themselves and those users commonly set. A runner plug-in may list more in a `known_flags`
# class attribute; STREAMTAP_RUNNER_OPTIONS (comma-separated: --a,--b) adds others for one run.
JAVA_RUNNER_FLAGS = (
    # Flink: checkpoints (streamtap fills in the first two on a real cluster), state, restarts.
    "--checkpointing_interval",
    "--finish_bundle_before_checkpointing",
    "--checkpointing_mode",
    "--checkpoint_timeout_millis",
    "--min_pause_between_checkpoints",
    "--num_concurrent_checkpoints",
    "--externalized_checkpoints_enabled",
    "--retain_externalized_checkpoints_on_cancellation",
    "--fail_on_checkpointing_errors",
    "--state_backend",
    "--state_backend_storage_path",
    "--savepoint_path",
    "--allow_non_restored_state",
    "--number_of_execution_retries",
    "--execution_retry_delay",
    "--max_bundle_size",
    "--max_bundle_time_mills",
    "--auto_watermark_interval",
    "--object_reuse",
    "--flink_conf_dir",
    # Spark
    "--checkpoint_dir",
    "--batch_interval_millis",
    "--storage_level",
    "--bundle_size",
)


def seconds(above: float | None):
    """An argparse type: a finite number of seconds, > `above` (None: >= 0)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not math.isfinite(value) or value < 0 or (above is not None and value <= above):
            raise argparse.ArgumentTypeError(
                f"{text!r}: give a number of seconds {'> 0' if above is not None else '>= 0'}"
            )
        return value

    return parse


class StreamtapOptions(PipelineOptions):
    """streamtap's own run options, as Beam pipeline options: `--config=pipeline.yaml
    --duration=3300 --status_interval=60`. Launchers that pass Beam options (Airflow's
    BeamRunPythonPipelineOperator `pipeline_options`, Flink- and Dataflow-style launchers) pass
    these the same way to `python -m streamtap.pipelines.launch`."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        parser.add_argument("--config", help="pipeline YAML file of the capture (required)")
        parser.add_argument(
            "--duration",
            type=seconds(above=0),
            default=None,
            help="seconds to capture (a bounded capture job); default: until stopped",
        )
        parser.add_argument(
            "--status_interval",
            "--status-interval",
            dest="status_interval",
            type=seconds(above=None),
            default=10.0,
            help="seconds between status lines on stderr (0: off)",
        )


class _MalformedOption(ValueError):
    """A known flag with a value its option does not take (`--parallelism=two`)."""


class _Parser(_BeamArgumentParser):
    def error(self, message: str):  # argparse would print usage and exit
        raise _MalformedOption(message)


def _known_parser() -> _BeamArgumentParser:
    """Beam's own parser of every PipelineOptions subclass, as PipelineOptions builds it."""
    parser = _Parser(allow_abbrev=False)
    classes = {}
    for cls in PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)
    return parser


def unknown_flags(args: Sequence[str], also_known: Sequence[str] = ()) -> list[str]:
    """The flags in `args` that no Beam options class (nor `also_known`) defines, each with a
    suggestion where one is close: ["--durtion (did you mean --duration?)"]; or the one flag
    whose value its option refuses: ["argument --parallelism: invalid int value: 'two'"]."""
    parser = _known_parser()
    try:
        _, unknown = parser.parse_known_args(list(args))
    except _MalformedOption as error:
        return [str(error)]
    known = [flag for action in parser._actions for flag in action.option_strings]
    known += list(also_known)
    problems = []
    for arg in unknown:
        if not arg.startswith("-") or arg.split("=", 1)[0] in also_known:
            continue  # the value of an unknown flag, or a flag known to a runner
        flag = arg.split("=", 1)[0]
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
        problems.append(f"{flag} (did you mean {close[0]}?)" if close else flag)
    return problems


def flag_problems(
    args: Sequence[str], runners: Iterable[type] = (), own_options: bool = True
) -> list[str]:
    """Every flag in `args` that a run would silently ignore: unknown to Beam's Python options,
    to the runner plug-ins' `known_flags` and to JAVA_RUNNER_FLAGS (plus STREAMTAP_RUNNER_OPTIONS).

    own_options=False (`streamtap run`, which takes them as its own arguments): StreamtapOptions'
    flags among `args` are problems too, since nothing would read them there.
    """
    also_known = list(JAVA_RUNNER_FLAGS)
    for runner in runners:
        also_known += list(getattr(runner, "known_flags", ()))
    extra = os.environ.get("STREAMTAP_RUNNER_OPTIONS", "")
    also_known += [name.strip() for name in extra.split(",") if name.strip()]
    problems = unknown_flags(args, also_known)
    if not own_options:
        own = {
            "--config": "give the config as the first argument",
            "--duration": "use --duration N",
            "--status_interval": "use --status-interval N",
        }
        for arg in args:
            flag = arg.split("=", 1)[0].replace("-", "_").replace("__", "--", 1)
            if flag in own:
                problems.append(f"{arg.split('=', 1)[0]} ({own[flag]})")
    return problems


def flag_error(problems: Sequence[str]) -> str:
    """The message that refuses a run over `flag_problems`."""
    return (
        f"unknown or malformed option(s): {'; '.join(problems)}. Beam would run without an "
        "unknown option: check the spelling (a Java runner option streamtap does not list yet: "
        "name it in STREAMTAP_RUNNER_OPTIONS=--option,...)"
    )
