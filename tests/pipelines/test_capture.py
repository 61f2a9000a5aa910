"""How a capture is built and started (benchmark scenario 1's fixed and per-chunk costs):

- a bounded Parquet-only capture has no WindowInto step (the writer windows the chunks itself)
  and, on the FnApiRunner, no end-of-stage shuffle (Prism needs it: it busy-waits without);
- in-process bounded captures start reading while the pipeline is built: the reader is attached
  at the very position the source's initial restriction gives, and one left behind by a failed
  run is stopped and forgotten.
"""

from __future__ import annotations

import os

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from streamtap.io.hub import hub
from streamtap.io.streams import _ReadStreamFn
from streamtap.pipelines import run as run_module
from streamtap.pipelines.capture import build_capture
from streamtap.pipelines.early_start import in_process, initial_position, start_readers
from streamtap.plugins import parse_config
from tests.helpers import TcpFeeder, assert_verified, capture, stream_bytes


def _config(path, sources=None, **sink) -> dict:
    return {
        "sources": sources or [{"id": "s1", "type": "tcp", "address": "127.0.0.1:9",
                                "max_bytes": 1000}],
        "chunk": {"max_bytes": 65536, "max_seconds": 1.0},
        "window_seconds": 1,
        "sinks": [{"type": "parquet", "path": str(path), "compression": "none", **sink}],
    }


def _labels(pipeline: beam.Pipeline) -> set[str]:
    labels = set()

    class Visitor(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            labels.add(node.full_label)

        def visit_transform(self, node):
            labels.add(node.full_label)

    pipeline.visit(Visitor())
    return labels


@pytest.mark.parametrize(
    ("runner", "bounded", "sink", "window", "end_stage"),
    [
        ("FnApiRunner", True, {}, False, False),  # scenario 1: the writer windows the chunks
        ("FnApiRunner", True, {"files": "per_window"}, True, False),  # a GroupByKey needs them
        ("FnApiRunner", True, {"layout": "many_streams"}, True, False),
        ("FnApiRunner", False, {}, True, False),  # live captures: as measured before
        ("PrismRunner", True, {}, False, True),
    ],
)
def test_the_steps_of_a_capture(tmp_path, runner, bounded, sink, window, end_stage):
    pipeline = beam.Pipeline(options=PipelineOptions([f"--runner={runner}"]))
    build_capture(pipeline, parse_config(_config(tmp_path, **sink)), bounded=bounded)
    labels = _labels(pipeline)
    assert ("Window" in labels) == window
    assert ("EndOfStage" in labels) == end_stage
    assert "WriteToParquet" in labels


def test_early_readers_start_where_the_sources_initial_restriction_does():
    config = parse_config({
        "sources": [
            {"id": "a", "type": "tcp", "address": "127.0.0.1:9", "max_bytes": 5000},
            {"id": "b", "type": "tcp", "address": "127.0.0.1:9"},
            {"id": "c", "type": "file", "path": "/dev/null", "start_offset": 700},
        ],
        "sinks": [{"type": "parquet", "path": "/tmp/unused"}],
    })
    starts = {"a": (12, 9000)}
    fn = _ReadStreamFn([config.sources], config.chunk, config.read, 30.0, None, True, starts,
                       None)
    restriction = fn.initial_restriction(0)
    deadline = restriction.streams[0].deadline
    assert [initial_position(source, starts, deadline) for source in config.sources] == list(
        restriction.streams
    )
    untimed = _ReadStreamFn([config.sources], config.chunk, config.read, None, None, True, starts,
                            None)
    assert [initial_position(source, starts, None) for source in config.sources] == list(
        untimed.initial_restriction(0).streams
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--runner=FnApiRunner"], True),
        (["--runner=FnApiRunner", "--direct_running_mode=multi_threading"], True),
        (["--runner=FnApiRunner", "--direct_running_mode=multi_processing"], False),
        (["--runner=FnApiRunner", "--environment_type=LOOPBACK"], False),
        (["--runner=PrismRunner"], False),
        (["--runner=FlinkRunner"], False),
    ],
)
def test_only_the_in_process_fnapirunner_starts_readers_early(args, expected):
    assert in_process(PipelineOptions(args)) == expected


def test_a_bounded_capture_reads_before_its_pipeline_runs_and_stays_byte_exact(
    tmp_path, monkeypatch
):
    data = os.urandom(3 * 65536 + 123)
    seen_at_run = []
    original = beam.Pipeline.run

    def run(pipeline, *args, **kwargs):
        reader = hub().readers.get("s1")
        seen_at_run.append(reader is not None)
        return original(pipeline, *args, **kwargs)

    monkeypatch.setattr(beam.Pipeline, "run", run)
    with TcpFeeder(data, piece=65536, pause=0) as feeder:
        capture(_config(tmp_path, [feeder.source("s1", max_bytes=len(data))]), duration=None)
    assert seen_at_run == [True]
    assert stream_bytes(str(tmp_path), "s1") == data
    assert_verified(str(tmp_path), streams=1)
    assert "s1" not in hub().readers  # the source released it at the end


def test_a_run_that_fails_stops_and_forgets_its_early_readers(tmp_path, monkeypatch):
    started = []
    original = run_module.start_readers

    def recording(*args, **kwargs):
        started.extend(original(*args, **kwargs))
        return started

    def failing(*args, **kwargs):
        raise RuntimeError("the pipeline could not be built")

    monkeypatch.setattr(run_module, "start_readers", recording)
    monkeypatch.setattr(run_module, "_run", failing)
    with TcpFeeder(b"x" * 1000) as feeder:
        config = _config(tmp_path, [feeder.source("s1", max_bytes=1000)])
        with pytest.raises(RuntimeError, match="could not be built"):
            run_module.run_capture(parse_config(config), ["--runner=FnApiRunner"],
                                   status_interval=0)
    [reader] = started
    assert "s1" not in hub().readers
    assert reader._stopping  # noqa: SLF001 - asked to finish


def test_without_the_sampling_thread_every_counter_is_still_counted(tmp_path):
    """Bundles run without Beam's per-bundle sampling thread (streamtap.pipelines.sampling):
    Beam's metrics still find their container, so streamtap's counters count every chunk."""
    import threading

    from apache_beam.runners.worker import statesampler

    from streamtap.pipelines.sampling import without_state_sampling
    from tests.helpers import capture_in_process

    data = os.urandom(5 * 65536)
    original = statesampler.StateSampler
    started = []
    thread_start = threading.Thread.start

    def start(thread):
        started.append(getattr(thread, "_target", None))
        thread_start(thread)

    with TcpFeeder(data, piece=65536, pause=0) as feeder:
        with without_state_sampling():
            assert statesampler.StateSampler is not original
            threading.Thread.start = start
            try:
                counters = capture_in_process(
                    _config(tmp_path, [feeder.source("s1", max_bytes=len(data))])
                )
            finally:
                threading.Thread.start = thread_start
    assert statesampler.StateSampler is original
    assert counters["bytes"] == len(data) and counters["chunks"] == 5
    assert counters["parquet_bytes"] == len(data)
    samplers = [t for t in started if getattr(t, "__name__", "") == "run"
                and "StateSampler" in type(getattr(t, "__self__", None)).__name__]
    assert samplers == []
    assert stream_bytes(str(tmp_path), "s1") == data


def test_start_readers_attaches_each_stream_once(tmp_path):
    with TcpFeeder(b"y" * 5000) as feeder:
        config = parse_config(_config(tmp_path, [feeder.source("s2", max_bytes=5000)]))
        try:
            [first] = start_readers(config, None, str(tmp_path / "STOP"), {})
            [again] = start_readers(config, None, str(tmp_path / "STOP"), {})
            assert again is first
        finally:
            first.stop()
            hub().release(first)
