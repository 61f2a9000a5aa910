"""The Airflow DAG (airflow/dags/streamtap_capture.py) in a real Airflow: the `airflow` CLI of the
project's venv (the `airflow` extra), each test with its own AIRFLOW_HOME and SQLite database, and
the DAG file as its DAG folder. `airflow db migrate` runs once per module (10-15 s) and each test
starts from a copy of that database.

Captures run on the DirectRunner (Prism), submitted by the Apache Beam provider's
BeamRunPythonPipelineOperator as `python -m streamtap.launch`, as in production.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from streamtap.io.sources.synthetic import synthetic_bytes
from streamtap.plugins import parse_config
from tests.helpers import (
    TcpFeeder,
    assert_verified,
    chunks_of,
    free_port,
    stream_bytes,
    write_config,
)

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
LOGICAL_DATE = "2026-01-01T00:00:00+00:00"


class Airflow:
    """The `airflow` command with its own home, this repository's DAG folder and a configs folder."""

    def __init__(self, home: Path, configs: Path | None):
        self.home = home
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("AIRFLOW") and key != "STREAMTAP_DAG_CONFIGS"
        }
        self.env.update(
            AIRFLOW_HOME=str(home),
            AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "airflow" / "dags"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
        )
        if configs is not None:
            self.env["STREAMTAP_DAG_CONFIGS"] = str(configs)

    def __call__(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run(
            [AIRFLOW, *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            check=False,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str, timeout: float = 240) -> str:
        """Runs the command; fails the test with its output unless it exits 0."""
        done = self(*args, timeout=timeout)
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"airflow {' '.join(args)} exited {done.returncode}:\n{output}"
        return output


@pytest.fixture(scope="module")
def migrated_database(tmp_path_factory) -> Path:
    """An Airflow metadata database (SQLite) after `airflow db migrate`."""
    home = tmp_path_factory.mktemp("airflow-migrated")
    Airflow(home, configs=None).ok("db", "migrate")
    return home / "airflow.db"


@pytest.fixture
def airflow_home(tmp_path, migrated_database) -> Path:
    """An AIRFLOW_HOME of this test's own, with a copy of the migrated database."""
    home = tmp_path / "airflow-home"
    home.mkdir()
    shutil.copy(migrated_database, home / "airflow.db")
    return home


def _json_rows(output: str) -> list[dict]:
    """The JSON list a `-o json` command printed (Airflow logs around it)."""
    line = next(line for line in output.splitlines() if line.startswith("["))
    return json.loads(line)


def test_the_dag_file_imports_with_no_errors_and_makes_a_dag_per_config(airflow_home):
    airflow = Airflow(airflow_home, configs=None)  # the default folder: the shipped example

    assert "No data found" in airflow.ok("dags", "list-import-errors", "--local")
    dags = {
        row["dag_id"]: row
        for row in _json_rows(airflow.ok("dags", "list", "--local", "-o", "json"))
    }
    assert list(dags) == ["streamtap_example_sensors"], dags
    assert dags["streamtap_example_sensors"]["fileloc"].endswith("streamtap_capture.py")


def test_a_config_that_cannot_load_is_an_import_error_with_its_message(tmp_path, airflow_home):
    configs = tmp_path / "configs"
    configs.mkdir()
    write_config(
        configs / "good.yaml",
        {
            "sources": [{"id": "sensor1", "type": "synthetic"}],
            "sinks": [{"type": "parquet", "path": str(tmp_path / "good")}],
        },
    )
    write_config(
        configs / "typo.yaml",
        {
            "sources": [{"id": "sensor1", "type": "tcp", "adress": "127.0.0.1:9"}],
            "sinks": [{"type": "parquet", "path": str(tmp_path / "typo")}],
        },
    )
    write_config(
        configs / "late.yaml",
        {
            "sources": [{"id": "sensor1", "type": "synthetic"}],
            "sinks": [{"type": "parquet", "path": str(tmp_path / "late")}],
            "schedule": {"cron": "*/10 * * * *", "capture_seconds": 900},
        },
    )
    airflow = Airflow(airflow_home, configs)

    done = airflow("dags", "list-import-errors", "--local", "-o", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    (error,) = _json_rows(done.stdout)
    assert error["filepath"].endswith("streamtap_capture.py")
    message = error["error"]
    assert message.startswith("ConfigErrors: "), message
    assert "Traceback" not in message, message
    assert f"{configs / 'typo.yaml'} has 1 problem(s)" in message
    assert "sources[0].adress: unknown key; did you mean 'address'?" in message
    assert (
        f"{configs / 'late.yaml'} has 1 problem(s):\n  - schedule.capture_seconds: 900 s is not "
        "shorter than the 600 s between runs of '*/10 * * * *'"
    ) in message
    # The good config's DAG loads all the same.
    dags = _json_rows(airflow.ok("dags", "list", "--local", "-o", "json"))
    assert [row["dag_id"] for row in dags] == ["streamtap_good"]


def test_dags_test_captures_a_synthetic_and_a_tcp_stream_and_a_rerun_continues_them(
    tmp_path, airflow_home
):
    configs = tmp_path / "configs"
    configs.mkdir()
    capture = tmp_path / "capture"
    port = free_port()
    first, second = os.urandom(300_000), os.urandom(200_000)
    with TcpFeeder(first, port=port) as feeder:
        config = {
            "sources": [
                {"id": "sensor1", "type": "synthetic", "rate": 2000, "sample_format": "float32"},
                feeder.source("tcp1"),
            ],
            "chunk": {"max_seconds": 0.5},
            "window_seconds": 1,
            "sinks": [{"type": "parquet", "path": str(capture)}],
            "schedule": {"capture_seconds": 3, "retries": 0},
        }
        write_config(configs / "acq.yaml", config)
        airflow = Airflow(airflow_home, configs)
        output = airflow.ok("dags", "test", "streamtap_acq", LOGICAL_DATE)
    assert "-m streamtap.launch --runner=DirectRunner --config=" in output
    assert "verify: every stream OK" in output
    assert "state=success" in output

    sensor = parse_config(config).sources[0]
    assert_verified(str(capture), streams=2)
    captured = stream_bytes(str(capture), "sensor1")
    assert len(captured) > 3 * 2000 * 4 // 2  # a few seconds of 2,000 float32 samples a second
    assert captured == synthetic_bytes(sensor, 0, len(captured) // 4 + 1)[: len(captured)]
    assert stream_bytes(str(capture), "tcp1") == first

    # The same interval again: the capture goes on where it ended (same seq, next offset).
    chunks_before = {stream: len(chunks_of(str(capture), stream)) for stream in ("sensor1", "tcp1")}
    with TcpFeeder(second, port=port):
        output = airflow.ok("dags", "test", "streamtap_acq", LOGICAL_DATE)
    assert "continuing the capture at seq" in output
    assert "verify: every stream OK" in output

    reports = assert_verified(str(capture), streams=2)
    assert all(report.redeliveries == 0 for report in reports.values())
    more = stream_bytes(str(capture), "sensor1")
    assert len(more) > len(captured)
    assert more == synthetic_bytes(sensor, 0, len(more) // 4 + 1)[: len(more)]
    assert stream_bytes(str(capture), "tcp1") == first + second
    tcp_chunks = chunks_of(str(capture), "tcp1")
    assert tcp_chunks[chunks_before["tcp1"]].discontinuity  # a new connection: marked
    assert len(chunks_of(str(capture), "sensor1")) > chunks_before["sensor1"]


def test_verify_fails_the_dag_run_on_a_gap_and_names_it(tmp_path, airflow_home):
    configs = tmp_path / "configs"
    configs.mkdir()
    capture = tmp_path / "capture"
    write_config(
        configs / "gap.yaml",
        {
            "sources": [{"id": "sensor1", "type": "synthetic", "rate": 1000}],
            "chunk": {"max_seconds": 0.5},
            "window_seconds": 1,
            "sinks": [{"type": "parquet", "path": str(capture)}],
            "schedule": {"capture_seconds": 4, "retries": 0},
        },
    )
    airflow = Airflow(airflow_home, configs)
    airflow.ok("tasks", "test", "streamtap_gap", "capture", LOGICAL_DATE)

    files = sorted(capture.rglob("*.parquet"), key=lambda path: path.name.split("-")[1])
    assert len(files) >= 3, files
    lost = files[len(files) // 2]
    seqs = sorted(pq.read_table(lost, columns=["seq"]).column("seq").to_pylist())
    lost.unlink()

    # The run again, its capture marked done: the verify task fails it.
    done = airflow(
        "dags", "test", "streamtap_gap", LOGICAL_DATE, "--mark-success-pattern", "capture"
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "DagRun failed" in output
    gap = f"chunks seq {seqs[0]}..{seqs[-1]} are missing (lost chunks)"
    assert f"sensor1: {gap}" in output, output[-5000:]
    assert "AirflowFailException: the capture is not clean" in output
