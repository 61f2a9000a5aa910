"""Beam's state sampler without its thread, for the bundles of in-process bounded captures.

Beam's SDK harness starts a sampling thread at the start of every bundle and joins it at the
end (`BundleProcessor.process_bundle`: `state_sampler.start()` / `stop()`). The thread sleeps
between samples with a period that grows from 2 ms to 200 ms, and the join waits out the sleep
in progress: ~5-20 ms at the end of a 30-100 ms bundle, plus a thread start (~2 ms with the GIL
busy) at its beginning. A fast stream's bounded capture runs ~17 bundles per 384 MiB (benchmark
scenario 1, where every bundle's end is serial: the reader waits for the commit), and that was
~10% of the run (py-spy of the bundles' thread: `StateSampler.stop` → `Thread.join` 18%,
`StateSampler.start` → `Thread.start` 7% of its wall samples).

What the thread measures is Beam's per-step execution time (`msecs` metrics) and how long a
bundle has been in one step (the SDK's "operation ongoing" lull warnings); streamtap reads
neither. Without the thread the sampler still tracks the current step, which is how Beam's
metrics (streamtap's counters) find their container, so every counter is still counted.

`without_state_sampling()` swaps in the thread-less sampler while a capture runs in this
process (run_capture, FnApiRunner in process: streamtap.pipelines.early_start.in_process) and
puts Beam's back afterwards. Bundle processors built meanwhile keep it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from apache_beam.runners.worker import statesampler

__all__ = ["without_state_sampling"]


class _UnsampledStateSampler(statesampler.StateSampler):
    """Beam's StateSampler (bundle_processor builds one per bundle processor) whose start()
    and stop() keep it the thread's current tracker without a sampling thread."""

    def start(self) -> None:
        self.tracked_thread = threading.current_thread()
        statesampler.set_current_tracker(self)
        self.started = True

    def stop(self) -> None:
        statesampler.set_current_tracker(None)
        self.finished = True


@contextlib.contextmanager
def without_state_sampling() -> Iterator[None]:
    """Bundle processors created inside use the thread-less sampler (see the module)."""
    original = statesampler.StateSampler
    statesampler.StateSampler = _UnsampledStateSampler
    try:
        yield
    finally:
        statesampler.StateSampler = original
