"""Streams are read in groups (one SDF element per group): grouping, checkpoints, metrics."""

import os

import apache_beam as beam
import pytest
from apache_beam.runners.worker.bundle_processor import DataInputOperation

from streamtap.errors import ConfigError
from streamtap.io.group_restriction import END_OF_STREAM, GroupPosition, GroupTracker
from streamtap.io.stream_state import StreamPosition
from streamtap.io.streams import group_streams
from streamtap.plugins import parse_config
from tests.helpers import TcpFeeder, assert_verified, capture_in_process, stream_bytes


def test_default_grouping_is_one_group_per_parallel_reader():
    assert [len(g) for g in group_streams(3, None)] == [3]
    assert [len(g) for g in group_streams(1000, None)] == [1000]
    assert [len(g) for g in group_streams(100, None, parallelism=4)] == [25] * 4
    assert [len(g) for g in group_streams(3, None, parallelism=4)] == [1, 1, 1]


def test_default_grouping_keeps_groups_at_1000_streams_or_fewer():
    groups = group_streams(2500, None)
    assert len(groups) == 3 and max(map(len, groups)) == 834
    # Every stream exactly once, in order.
    assert [i for g in groups for i in g] == list(range(2500))


def test_the_parallelism_a_run_reads_with_comes_from_its_options():
    from apache_beam.options.pipeline_options import PipelineOptions

    from streamtap.pipelines.run import reader_parallelism

    assert reader_parallelism(PipelineOptions([])) == 1
    assert reader_parallelism(PipelineOptions(["--parallelism=-1"])) == 1  # Flink's "unset"
    assert reader_parallelism(PipelineOptions(["--parallelism=2"])) == 2
    assert reader_parallelism(PipelineOptions(["--sdk_worker_parallelism=3"])) == 3
    assert reader_parallelism(PipelineOptions(["--direct_num_workers=4"])) == 4


def test_explicit_group_size():
    assert [list(g) for g in group_streams(5, 2)] == [[0, 1], [2, 3], [4]]


def test_a_checkpoint_splits_every_stream_of_the_group_where_it_got_to():
    start = GroupPosition((StreamPosition(3, 300), StreamPosition(0, 0), StreamPosition(7, 70)))
    tracker = GroupTracker(start, bounded=False)
    assert tracker.try_claim((0, 3, 400))
    assert tracker.try_claim((0, 4, 450))
    assert tracker.try_claim((2, END_OF_STREAM))
    primary, residual = tracker.try_split(0)
    assert residual == GroupPosition((StreamPosition(5, 450), StreamPosition(0, 0), None))
    assert primary.streams[0].stop_seq == 5 and primary.streams[1].stop_seq == 0
    assert not tracker.try_claim((1, 0, 10))  # nothing more after a checkpoint
    tracker.check_done()


def test_a_claim_of_several_chunks_moves_the_stream_past_all_of_them():
    start = GroupPosition((StreamPosition(3, 300), StreamPosition(0, 0)))
    tracker = GroupTracker(start, bounded=False)
    assert tracker.try_claim((0, 3, 700, 4))  # seqs 3-6, the last ending at byte 700
    assert tracker.try_claim((0, 7, 750))
    with pytest.raises(ValueError, match="expected 8"):
        tracker.try_claim((0, 7, 800))
    _, residual = tracker.try_split(0)
    assert residual.streams[0] == StreamPosition(8, 750)


def test_progress_is_never_zero_of_zero():
    # Prism asks long bundles to split; the SDK divides by completed + remaining.
    tracker = GroupTracker(GroupPosition((StreamPosition(0, 0),)), bounded=False)
    assert tracker.current_progress().fraction_completed == 0
    tracker.try_split(0)  # a checkpoint with nothing claimed: the bundle is done
    assert tracker.current_progress().fraction_completed == 1


@pytest.mark.parametrize("claimed", [0, 3])
def test_split_request_survives_the_sdks_nan_output_estimate(claimed):
    # The SDK hands a split request the tracker's progress with `completed` replaced by the
    # bundle's output bytes, which are NaN while its first output is being counted. Beam's own
    # split arithmetic must still get a number (it failed with "cannot convert float NaN").
    tracker = GroupTracker(GroupPosition((StreamPosition(0, 0),)), bounded=False)
    for seq in range(claimed):
        assert tracker.try_claim((0, seq, (seq + 1) * 10))
    progress = tracker.current_progress().with_completed(float("nan"))

    DataInputOperation._compute_split(
        0, progress.fraction_completed, 1, 0.5, 1, (), tracker.try_split
    )
    assert progress.remaining_work == progress.remaining_work  # not NaN: reported to the runner


def test_claims_out_of_order_or_after_the_end_are_bugs():
    tracker = GroupTracker(GroupPosition((StreamPosition(0, 0),)), bounded=True)
    with pytest.raises(ValueError, match="expected 0"):
        tracker.try_claim((0, 1, 10))
    with pytest.raises(ValueError, match="claimed 0 chunks"):
        tracker.try_claim((0, 0, 10, 0))
    assert tracker.try_claim((0, END_OF_STREAM))
    with pytest.raises(ValueError, match="has finished"):
        tracker.try_claim((0, 0, 10))
    tracker.check_done()  # every stream finished
    assert tracker.try_split(0) is None


def test_bad_read_settings_are_config_errors():
    with pytest.raises(ConfigError) as error:
        parse_config(
            {
                "sources": [{"id": "a", "type": "synthetic"}],
                "read": {"group_size": 0, "poll_secs": 1},
                "sinks": [{"type": "parquet", "path": "/tmp/x"}],
            }
        )
    message = str(error.value)
    assert "read.group_size: must be between 1 and 1e+06, got 0" in message
    assert "read.poll_secs: unknown key" in message and "poll_seconds" in message


def _capture_groups(tmp_path, payloads, read):
    """Captures one TCP stream per payload to Parquet; returns the streamtap counters."""
    feeders = [TcpFeeder(payload, piece=8192) for payload in payloads]
    try:
        return capture_in_process(
            {
                "sources": [
                    feeder.source(f"tcp{i}", max_bytes=len(feeder.data))
                    for i, feeder in enumerate(feeders)
                ],
                "chunk": {"max_bytes": 50_000, "max_seconds": 0.5},
                "window_seconds": 2,
                "read": read,
                "sinks": [{"type": "parquet", "path": str(tmp_path)}],
            }
        )
    finally:
        for feeder in feeders:
            feeder.close()


def test_streams_in_groups_round_trip_byte_exact_with_totals_only(tmp_path):
    payloads = [os.urandom(200_000 + 37_000 * i) for i in range(5)]
    counters = _capture_groups(tmp_path, payloads, {"group_size": 2, "per_stream_metrics": False})
    for i, payload in enumerate(payloads):
        assert stream_bytes(str(tmp_path), f"tcp{i}") == payload
    assert_verified(str(tmp_path), streams=5)
    assert counters["bytes"] == sum(map(len, payloads))
    assert not [name for name in counters if name.startswith("tcp")]


def test_per_stream_metrics_when_asked(tmp_path):
    payloads = [os.urandom(120_000) for _ in range(2)]
    counters = _capture_groups(tmp_path, payloads, {"group_size": 2, "per_stream_metrics": True})
    assert counters["tcp0.bytes"] == counters["tcp1.bytes"] == 120_000
    assert counters["bytes"] == 240_000
    assert counters["chunks"] == counters["tcp0.chunks"] + counters["tcp1.chunks"] == 6


_SEEN: list = []  # the FnApiRunner runs in this process: _record appends here


def _record(row) -> None:
    _SEEN.append(row)


class _TagBundle(beam.DoFn):
    """Outputs (bundle number, stream id, window start, seq) for every chunk."""

    def start_bundle(self):
        self._bundle = os.urandom(8).hex()

    def process(self, chunk, window=beam.DoFn.WindowParam):
        yield self._bundle, chunk.stream_id, float(window.start), chunk.seq


def _bundles_per_window(feeders, release_by_window):
    from apache_beam.transforms.window import FixedWindows

    from streamtap.config import ChunkSettings
    from streamtap.io.streams import ReadStreams

    sources = parse_config(
        {
            "sources": [
                feeder.source(f"tcp{i}", max_bytes=len(feeder.data))
                for i, feeder in enumerate(feeders)
            ],
            "sinks": [{"type": "parquet", "path": "/tmp/unused"}],
        }
    ).sources
    _SEEN.clear()
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        rows = (
            pipeline
            | ReadStreams(sources, ChunkSettings(max_bytes=20_000, max_seconds=0.2),
                          duration=60, bounded=True, release_by_window=release_by_window)
            | beam.WindowInto(FixedWindows(1.0))
            | beam.ParDo(_TagBundle())
        )
        rows | beam.Map(_record)
    seen = list(_SEEN)
    bundles = {}
    for bundle, stream, window, seq in seen:
        bundles.setdefault((stream, window), set()).add(bundle)
    return bundles, sorted(seen, key=lambda row: (row[1], row[3]))


def _slow_feeders():
    # ~3.5 s per stream in 2,000-byte pieces every 20 ms: several 1 s windows, many polls each.
    return [TcpFeeder(os.urandom(350_000), piece=2000, pause=0.02) for _ in range(2)]


def test_release_by_window_hands_each_window_of_a_stream_over_in_one_bundle():
    feeders = _slow_feeders()
    try:
        bundles, rows = _bundles_per_window(feeders, release_by_window=1.0)
    finally:
        for feeder in feeders:
            feeder.close()
    assert len(bundles) >= 6, bundles  # several windows per stream
    assert all(len(b) == 1 for b in bundles.values()), bundles
    for i in range(2):  # every chunk once, in order
        seqs = [row[3] for row in rows if row[1] == f"tcp{i}"]
        assert seqs == list(range(len(seqs)))


def test_without_release_by_window_a_window_spans_several_bundles():
    # The control for the test above: the assertion there can fail.
    feeders = _slow_feeders()
    try:
        bundles, _ = _bundles_per_window(feeders, release_by_window=None)
    finally:
        for feeder in feeders:
            feeder.close()
    assert any(len(b) > 1 for b in bundles.values()), bundles
