"""Scheduled streamtap captures: one Airflow DAG per pipeline config.

Every YAML file in $STREAMTAP_DAG_CONFIGS (default: airflow/configs/ in this repository) becomes
the DAG `streamtap_<file stem>`, scheduled by the config's optional `schedule:` section (hourly by
default). Each run has two tasks:

- `capture`: a bounded capture of `schedule.capture_seconds` (default: the interval less 5
  minutes) on `schedule.runner` (DirectRunner by default; FlinkRunner with
  `pipeline_options: {flink_master: ...}`), submitted with the Apache Beam provider's
  BeamRunPythonPipelineOperator as `python -m streamtap.launch --config=... --duration=...`.
  A retry or a re-run of the interval continues the capture (resume): nothing is duplicated.
- `verify`: reads the capture back and fails the run on an unmarked gap, a checksum error, a
  conflicting duplicate or a configured stream with nothing captured, naming it in the log.

A config that cannot be scheduled is an import error with the config's own message; the other
configs' DAGs still load. $STREAMTAP_PYTHON names the Python that runs the captures (default: the
worker's own, which must have streamtap installed).
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow.providers.apache.beam.operators import beam as beam_provider
from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

from streamtap import scheduling
from streamtap.errors import ConfigError

_LOG = logging.getLogger(__name__)
CONFIGS = Path(
    os.environ.get(scheduling.CONFIGS_VARIABLE) or Path(__file__).resolve().parents[1] / "configs"
)


class _WithoutDataflow(beam_provider.BeamDataflowMixin):
    def __init__(self) -> None:
        """Skips the mixin's check for the Google provider: no Dataflow job is set up here."""


class _BeamRunPythonPipelineOperator(beam_provider.BeamRunPythonPipelineOperator, _WithoutDataflow):
    """The provider's operator without the Google provider (apache-airflow-providers-google,
    ~130 packages with ray and scikit-learn): providers 6.x refuse to build the operator, and to
    run it, without that provider even on a DirectRunner or FlinkRunner, only to set up a
    Dataflow job. This skips that setup and nothing else: the command, the options and the log
    are the provider's own. DataflowRunner needs the Google provider (then the provider's
    operator runs as it is)."""

    def _cast_dataflow_config(self) -> None:
        """The Dataflow configuration is read on the DataflowRunner only."""


BeamRunPythonPipelineOperator = (
    beam_provider.BeamRunPythonPipelineOperator
    if beam_provider.GOOGLE_PROVIDER
    else _BeamRunPythonPipelineOperator
)


def verify_capture(config_path: str) -> None:
    """The verify task: fails (without retrying) when the capture is not clean."""
    try:
        scheduling.verify_scheduled(config_path, log=_LOG.info)
    except scheduling.CaptureNotClean as error:
        _LOG.error("%s", error)
        raise AirflowFailException(str(error)) from None


def capture_dag(capture: scheduling.ScheduledCapture) -> DAG:
    """The DAG of one config: capture, then verify. Raises ConfigError for a bad schedule."""
    schedule = capture.config.schedule
    if schedule.runner.lower().startswith("dataflow") and not beam_provider.GOOGLE_PROVIDER:
        raise ConfigError(
            ["schedule.runner: the DataflowRunner needs apache-airflow-providers-google"],
            str(capture.path),
        )
    try:
        dag = DAG(
            dag_id=capture.dag_id,
            schedule=schedule.cron,
            start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
            catchup=False,
            max_active_runs=1,  # two runs of one capture would write the same streams at once
            tags=["streamtap"],
            doc_md=f"streamtap capture of `{capture.path}`; then verify.",
        )
        expression = getattr(dag.timetable, "expression", None)
        interval = scheduling.interval_seconds(expression) if expression else None
    except Exception as error:  # noqa: BLE001 - Airflow's and croniter's, for a bad schedule
        raise ConfigError([f"schedule.cron: {schedule.cron!r}: {error}"], str(capture.path))
    seconds = scheduling.capture_seconds(capture, interval)
    with dag:
        run = BeamRunPythonPipelineOperator(
            task_id="capture",
            py_file="streamtap.launch",
            py_options=["-m"],
            py_interpreter=os.environ.get("STREAMTAP_PYTHON") or sys.executable,
            runner=schedule.runner,
            pipeline_options=capture.pipeline_options(seconds),
            deferrable=False,
            retries=schedule.retries,
            # A capture that outlives its interval by this much hangs: end it so a retry starts.
            execution_timeout=timedelta(seconds=seconds + max(600.0, seconds / 2)),
        )
        check = PythonOperator(
            task_id="verify",
            python_callable=verify_capture,
            op_kwargs={"config_path": str(capture.path)},
            retries=0,
        )
        run >> check
    return dag


class _Unschedulable(DAG):
    """Stands for configs that cannot be scheduled: Airflow validates every DAG before it takes
    it, so this one becomes the import error of this file, with the configs' messages (and no
    traceback), while the good configs' DAGs load."""

    problems: ConfigError | None = None

    def validate(self) -> None:
        raise self.problems


def _build() -> None:
    captures, errors = scheduling.load_scheduled(CONFIGS)
    for capture in captures:
        try:
            globals()[capture.dag_id] = capture_dag(capture)
        except ConfigError as error:
            errors.append(error)
    if errors:
        stand_in = _Unschedulable(dag_id="streamtap_config_errors", schedule=None)
        stand_in.problems = errors[0] if len(errors) == 1 else scheduling.ConfigErrors(errors)
        globals()["streamtap_config_errors"] = stand_in


_build()
