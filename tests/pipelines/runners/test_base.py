"""The runner plug-in contract: chosen by `--runner` through the plug-in list, options filled in,
captures refused before anything starts, the job watched after submission.

A runner plug-in defined in this test and registered with `Plugins.extended(runners=[...])` is
what `run_capture` calls, without any edit in streamtap; the real Flink and Spark runs are in
tests/test_flink_capture.py and tests/test_spark_capture.py.
"""

from __future__ import annotations

import io
import os
import threading
from typing import ClassVar, Sequence

import pytest
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    PrismRunnerOptions,
    StandardOptions,
)

from streamtap.errors import RunError
from streamtap.pipelines.run import DEFAULT_RUNNER, pipeline_options, run_capture
from streamtap.pipelines.runners.base import Runner
from streamtap.pipelines.runners.flink import Flink
from streamtap.pipelines.runners.prism import Prism, find_prism
from streamtap.pipelines.runners.spark import Spark
from streamtap.plugins import PLUGINS
from tests.helpers import assert_verified, stream_bytes


def test_runners_are_found_by_the_names_beam_accepts():
    assert type(PLUGINS.runner("FlinkRunner")) is Flink
    assert type(PLUGINS.runner("flink")) is Flink
    assert type(PLUGINS.runner("apache_beam.runners.portability.flink_runner.FlinkRunner")) is Flink
    assert type(PLUGINS.runner("SparkRunner")) is Spark
    assert type(PLUGINS.runner("PrismRunner")) is Prism
    assert type(PLUGINS.runner("DirectRunner")) is Prism
    assert type(PLUGINS.runner(DEFAULT_RUNNER)) is Prism
    # Beam runs runners without a plug-in as given.
    assert PLUGINS.runner("FnApiRunner") is None
    assert PLUGINS.runner("SparkStreamingRunner") is None
    assert PLUGINS.runner(None) is None


@pytest.mark.parametrize("plugin", PLUGINS.runners, ids=lambda cls: cls.__name__)
def test_a_runner_plugin_leaves_other_runners_alone(plugin):
    args = ["--runner=FnApiRunner", "--flink_master=10.1.2.3:8081", "--spark_master_url=yarn"]
    options = PipelineOptions(args)
    assert plugin().defaults(args) == args
    plugin().check(options, bounded=False)
    plugin().prepare(options)
    assert plugin().watch(options, ["s1"], "/tmp/streamtap-run-x/STOP") is None


def test_prism_is_the_default_and_gets_its_binary():
    prism = find_prism()
    assert prism is not None and os.access(prism, os.X_OK)  # `make install` built it
    options = pipeline_options([])
    assert options.view_as(StandardOptions).runner == DEFAULT_RUNNER == "PrismRunner"
    assert options.view_as(PrismRunnerOptions).prism_location == prism
    given = ["--runner=PrismRunner", "--prism_location=/opt/prism"]
    assert Prism().defaults(given) == given
    filled = Prism().defaults(["--runner=DirectRunner"])
    assert filled == ["--runner=DirectRunner", f"--prism_location={prism}"]
    assert Prism().defaults(filled) == filled  # idempotent


def test_flink_and_spark_ask_how_a_remote_cluster_runs_the_python_workers():
    with pytest.raises(RunError, match="--environment_type=EXTERNAL"):
        Flink().defaults(["--runner=FlinkRunner", "--flink_master=10.1.2.3:8081",
                          "--job_endpoint=10.1.2.3:8099"])
    filled = Flink().defaults(["--runner=FlinkRunner", "--flink_master=10.1.2.3:8081",
                               "--job_endpoint=10.1.2.3:8099", "--environment_type=DOCKER"])
    assert "--checkpointing_interval=10000" in filled
    assert "--finish_bundle_before_checkpointing" in filled
    assert any(arg.startswith("--job_name=streamtap-") for arg in filled)
    assert Flink().defaults(filled) == filled  # idempotent
    with pytest.raises(RunError, match="environment_type"):
        Spark().defaults(["--runner=SparkRunner", "--spark_master_url=spark://10.1.2.3:7077",
                          "--job_endpoint=10.1.2.3:8098"])


class RecordingRunner(Runner):
    """A runner plug-in of this test: answers to the FnApiRunner and notes every call."""

    names = ("FnApiRunner",)
    summary = "Beam's in-process batch runner, watched by a test"
    calls: ClassVar[list[tuple]] = []

    def defaults(self, beam_args: Sequence[str]) -> list[str]:
        args = list(beam_args)
        if not self.runs(PipelineOptions(args)):
            return args
        self.calls.append(("defaults", tuple(args)))
        return args if "--direct_num_workers=1" in args else [*args, "--direct_num_workers=1"]

    def check(self, options: PipelineOptions, bounded: bool) -> None:
        if self.runs(options):
            self.calls.append(("check", bounded))
            if not bounded:
                raise RunError("the recording runner runs bounded captures only")

    def prepare(self, options: PipelineOptions) -> None:
        if self.runs(options):
            self.calls.append(("prepare",))

    def watch(self, options: PipelineOptions, stream_ids: Sequence[str],
              stop_file: str | None = None) -> threading.Thread:
        self.calls.append(("watch", tuple(stream_ids)))
        assert stop_file is not None and stop_file.endswith("STOP")
        thread = threading.Thread(target=lambda: None, name="recording-watch", daemon=True)
        thread.start()
        return thread


MINE = PLUGINS.extended(runners=[RecordingRunner])


def test_a_runner_plugin_added_with_extended_is_what_run_capture_calls(tmp_path):
    RecordingRunner.calls.clear()
    data = os.urandom(200_000)
    (tmp_path / "recording.bin").write_bytes(data)
    config = MINE.parse_config({
        "sources": [{"id": "file1", "type": "file", "path": str(tmp_path / "recording.bin")}],
        "chunk": {"max_bytes": 16384},
        "sinks": [{"type": "parquet", "path": str(tmp_path / "capture")}],
    })
    out = io.StringIO()
    code = run_capture(config, ["--runner=FnApiRunner"], duration=30, status_interval=0,
                       out=out, plugins=MINE)
    assert code == 0, out.getvalue()
    assert [call[0] for call in RecordingRunner.calls] == ["defaults", "check", "prepare", "watch"]
    assert RecordingRunner.calls[0][1] == ("--runner=FnApiRunner",)
    assert RecordingRunner.calls[1:] == [("check", True), ("prepare",), ("watch", ("file1",))]
    assert_verified(str(tmp_path / "capture"), streams=1)
    assert stream_bytes(str(tmp_path / "capture"), "file1") == data
    assert MINE.runner("FnApiRunner") is not None and PLUGINS.runner("FnApiRunner") is None


def test_a_capture_a_runner_plugin_refuses_never_starts(tmp_path):
    RecordingRunner.calls.clear()
    config = MINE.parse_config({
        "sources": [{"id": "tcp1", "type": "tcp", "address": "127.0.0.1:9"}],
        "sinks": [{"type": "parquet", "path": str(tmp_path / "capture")}],
    })
    out = io.StringIO()
    with pytest.raises(RunError, match="bounded captures only"):
        run_capture(config, ["--runner=FnApiRunner"], status_interval=0, out=out, plugins=MINE)
    assert [call[0] for call in RecordingRunner.calls] == ["defaults", "check"]
    assert out.getvalue() == "" and not (tmp_path / "capture").exists()
