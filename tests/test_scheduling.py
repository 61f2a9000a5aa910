"""The `schedule:` section and what the Airflow DAG derives from a config (no Airflow run here:
tests/airflow/ runs the DAG itself)."""

from __future__ import annotations

import pytest

from streamtap import scheduling
from streamtap.errors import ConfigError
from streamtap.plugins import parse_config
from tests.helpers import write_config

BASE = {
    "sources": [{"id": "sensor1", "type": "synthetic"}],
    "sinks": [{"type": "parquet", "path": "/tmp/streamtap-test-capture"}],
}


def _problems(schedule) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config({**BASE, "schedule": schedule})
    return raised.value.errors


def test_schedule_defaults_and_values():
    default = parse_config(BASE).schedule
    assert (default.cron, default.capture_seconds, default.retries, default.runner) == (
        "@hourly",
        None,
        1,
        "DirectRunner",
    )
    given = parse_config(
        {
            **BASE,
            "schedule": {
                "cron": "*/15 * * * *",
                "capture_seconds": 600,
                "retries": 2,
                "runner": "FlinkRunner",
                "pipeline_options": {"flink_master": "flink-jm:8081", "parallelism": 2},
            },
        }
    ).schedule
    assert given.capture_seconds == 600.0 and given.retries == 2
    assert given.pipeline_options == {"flink_master": "flink-jm:8081", "parallelism": "2"}


@pytest.mark.parametrize(
    "schedule, problem",
    [
        (
            {"capture_seconds": "soon"},
            "schedule.capture_seconds: expected a number, got str 'soon'",
        ),
        (
            {"capture_seconds": 0},
            "schedule.capture_seconds: must be between 1 and 3.16224e+07, got 0",
        ),
        ({"retries": -1}, "schedule.retries: must be between 0 and 100, got -1"),
        ({"retires": 2}, "schedule.retires: unknown key; did you mean 'retries'?"),
        ({"cron": " "}, "schedule.cron: give a cron expression or preset, or null for none"),
        (
            {"pipeline_options": {"runner": "FlinkRunner"}},
            "schedule.pipeline_options.runner: set by the DAG; use schedule.runner",
        ),
        (
            {"pipeline_options": {"--flink_master": "x"}},
            "schedule.pipeline_options.--flink_master: write the option name without dashes, e.g. "
            "flink_master",
        ),
        (
            {"pipeline_options": ["flink_master"]},
            "schedule.pipeline_options: expected a mapping, got a list",
        ),
    ],
)
def test_schedule_values_are_checked(schedule, problem):
    assert problem in _problems(schedule)


def test_capture_seconds_default_to_the_interval_less_five_minutes():
    assert scheduling.interval_seconds("0 * * * *") == 3600
    assert scheduling.interval_seconds("0 9 * * 1-5") == 86400  # weekdays: the shortest gap
    assert scheduling.default_capture_seconds(3600) == 3300
    assert scheduling.default_capture_seconds(600) == 300  # short intervals: half
    assert scheduling.default_capture_seconds(None) is None


def test_pipeline_options_of_a_capture_task(tmp_path):
    path = write_config(
        tmp_path / "radio.yaml",
        {
            **BASE,
            "schedule": {
                "runner": "FlinkRunner",
                "pipeline_options": {
                    "flink_master": "jm:8081",
                    "streaming": "true",
                    "save_main_session": "false",
                },
            },
        },
    )
    (capture,), errors = scheduling.load_scheduled(tmp_path)
    assert errors == []
    assert capture.dag_id == "streamtap_radio"
    assert capture.pipeline_options(3300) == {
        "config": str(path),
        "duration": "3300",
        "status_interval": "60",
        "flink_master": "jm:8081",
        "streaming": True,
    }


def test_what_a_scheduled_config_cannot_be(tmp_path):
    write_config(
        tmp_path / "relative.yaml", {**BASE, "sinks": [{"type": "parquet", "path": "./c"}]}
    )
    write_config(
        tmp_path / "typo.yaml", {**BASE, "schedule": {"pipeline_options": {"flink_mastr": "x"}}}
    )
    write_config(tmp_path / "bad name.yaml", BASE)
    captures, errors = scheduling.load_scheduled(tmp_path)
    assert captures == []
    messages = "\n".join(str(error) for error in errors)
    assert "file name 'bad name.yaml': the DAG id is streamtap_<file name>" in messages
    assert "sinks[0].path: './c' is relative" in messages
    assert (
        "unknown or malformed option(s): --flink_mastr (did you mean --flink_master?)" in messages
    )


def test_a_capture_longer_than_its_interval_is_refused(tmp_path):
    write_config(tmp_path / "late.yaml", {**BASE, "schedule": {"capture_seconds": 3600}})
    (capture,), _ = scheduling.load_scheduled(tmp_path)
    with pytest.raises(ConfigError, match="3600 s is not shorter than the 3600 s between runs"):
        scheduling.capture_seconds(capture, 3600)
    assert scheduling.capture_seconds(capture, None) == 3600


def test_verify_fails_a_capture_that_is_not_there(tmp_path):
    path = write_config(
        tmp_path / "empty.yaml",
        {**BASE, "sinks": [{"type": "parquet", "path": str(tmp_path / "never-written")}]},
    )
    with pytest.raises(scheduling.CaptureNotClean, match="cannot read the capture"):
        scheduling.verify_scheduled(path, log=lambda line: None)
