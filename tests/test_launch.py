"""`python -m streamtap.launch` (Beam-style options) and `python -m streamtap`: what launchers start."""

from __future__ import annotations

import subprocess
import sys

from streamtap.cli import main
from tests.helpers import assert_verified, write_config


def _config(tmp_path):
    return write_config(
        tmp_path / "pipeline.yaml",
        {
            "sources": [{"id": "sensor1", "type": "synthetic", "rate": 1000}],
            "sinks": [{"type": "parquet", "path": str(tmp_path / "capture")}],
        },
    )


def test_python_dash_m_streamtap_is_the_streamtap_command(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "streamtap", "validate", str(_config(tmp_path)), "--offline"],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "OK (1 source(s), 1 sink(s))" in done.stdout


def test_the_launcher_runs_a_bounded_capture_from_pipeline_options(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamtap.launch",
            f"--config={_config(tmp_path)}",
            "--duration=2",
            "--status_interval=0",
            "--runner=FnApiRunner",
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "capturing 1 stream(s) on FnApiRunner (bounded) for 2 s" in done.stderr
    assert_verified(str(tmp_path / "capture"), streams=1)


def test_the_launcher_refuses_a_misspelled_option_and_a_missing_config(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamtap.launch",
            f"--config={_config(tmp_path)}",
            "--durtion=60",
            "--runner=FnApiRunner",
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown or malformed option(s): --durtion (did you mean --duration?)" in done.stderr
    assert not (tmp_path / "capture").exists()

    done = subprocess.run(
        [sys.executable, "-m", "streamtap.launch", "--duration=60"],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--config is required" in done.stderr


def test_streamtap_run_refuses_a_misspelled_option(tmp_path, capsys):
    assert main(["run", str(_config(tmp_path)), "--durtion", "60"]) == 2
    assert (
        "unknown or malformed option(s): --durtion (did you mean --duration?)"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "capture").exists()
