"""Command-line arguments a user can get wrong: each is a usage error naming it, exit 2.

Each case was reproduced before its fix (issue #14): `--duration -1` and `--log-level verbose`
ended in tracebacks, `reassemble --stream '*'` read every stream as one.
"""

from __future__ import annotations

import pytest

from streamtap.cli import main


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "x.yaml", "--duration", "-1"], "argument --duration: '-1': give a number of seconds > 0"),
        (["run", "x.yaml", "--duration", "nan"], "argument --duration: 'nan': give a number of seconds > 0"),
        (["run", "x.yaml", "--duration", "soon"], "argument --duration: 'soon' is not a number of seconds"),
        (["run", "x.yaml", "--status-interval", "-5"], "argument --status-interval: '-5': give a number of seconds >= 0"),
        (["--log-level", "verbose", "validate", "x.yaml"], "argument --log-level: invalid choice: 'verbose'"),
        (["reassemble", "./capture", "--stream", "*", "--output", "x"], "argument --stream: '*' is not a stream id"),
        (["verify", "./capture", "--stream", "radio?"], "argument --stream: 'radio?' is not a stream id"),
        (["demo", "--duration", "0"], "argument --duration: '0': give a number of seconds > 0"),
    ],
)
def test_bad_arguments_are_usage_errors_that_name_them(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_log_level_takes_any_case(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(
        "sources: [{id: a, type: tcp, address: '127.0.0.1:9'}]\n"
        f"sinks: [{{type: parquet, path: '{tmp_path}/out'}}]\n"
    )
    assert main(["--log-level", "INFO", "validate", str(config), "--offline"]) == 0
    assert "OK (1 source(s), 1 sink(s))" in capsys.readouterr().out


def test_services_status_json_says_not_running(tmp_path, monkeypatch, capsys):
    import json

    monkeypatch.setenv("STREAMTAP_STATE", str(tmp_path))
    assert main(["services", "status", "kafka", "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {"service": "kafka", "running": False}
