"""Options a capture passes to Beam: streamtap's own as PipelineOptions, misspelled ones refused."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from streamtap.pipelines.options import StreamtapOptions, flag_problems
from streamtap.plugins import PLUGINS


def test_streamtap_options_are_pipeline_options():
    options = PipelineOptions(["--config=a.yaml", "--duration=3300", "--runner=DirectRunner"])
    own = options.view_as(StreamtapOptions)
    assert (own.config, own.duration, own.status_interval) == ("a.yaml", 3300.0, 10.0)
    assert options.view_as(StreamtapOptions).status_interval == 10.0


def test_a_misspelled_flag_is_named_with_the_spelling_meant():
    assert flag_problems(["--durtion", "60", "--runner=DirectRunner"], PLUGINS.runners) == [
        "--durtion (did you mean --duration?)"
    ]
    assert flag_problems(["--flink_mastr=host:8081"]) == [
        "--flink_mastr (did you mean --flink_master?)"
    ]


def test_java_runner_options_and_beam_options_pass():
    args = [
        "--runner=FlinkRunner",
        "--flink_master=host:8081",
        "--parallelism=2",
        "--checkpointing_interval=10000",
        "--finish_bundle_before_checkpointing",
        "--environment_type=LOOPBACK",
        "--labels=airflow-version=v3-3-2",
        "--streaming",
    ]
    assert flag_problems(args, PLUGINS.runners) == []


def test_more_runner_options_can_be_named_for_a_run(monkeypatch):
    assert flag_problems(["--fancy_java_option=1"]) == ["--fancy_java_option"]
    monkeypatch.setenv("STREAMTAP_RUNNER_OPTIONS", "--fancy_java_option, --other")
    assert flag_problems(["--fancy_java_option=1"]) == []


def test_streamtap_run_refuses_its_own_options_in_beam_spelling():
    # `streamtap run` takes these as its own arguments; among Beam's nothing would read them.
    assert flag_problems(["--status_interval=5", "--config=x.yaml"], own_options=False) == [
        "--status_interval (use --status-interval N)",
        "--config (give the config as the first argument)",
    ]


def test_a_value_an_option_refuses_is_named_not_an_exit():
    assert flag_problems(["--parallelism=two"]) == [
        "argument --parallelism: invalid int value: 'two'"
    ]
