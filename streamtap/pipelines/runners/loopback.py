"""Beam's in-process worker pool of LOOPBACK captures, made to serve several TaskManagers at once.

With `--environment_type=LOOPBACK`, `pipeline.run()` starts Beam's worker pool inside `streamtap
run` (`worker_pool_main.BeamFnExternalWorkerPoolServicer`, workers as threads), and every
TaskManager asks it for SDK workers by id. Each TaskManager numbers its workers itself ("1-1",
"2-1", ...), so with two or more TaskManagers the ids repeat, and Beam's pool keeps one worker per
id: the second TaskManager's worker replaced the first's in its table, and the first
TaskManager's StopWorker then stopped the second's worker while it still worked. Seen on the
local two-TaskManager cluster with --parallelism=4: the task failed ("SDK harness closed
connection"), Flink ran the region again, and the capture held every chunk twice, with
different sessions (verify: duplicate sequence numbers), though `streamtap run` exited 0.

`install()` makes the pool keep every worker of an id and stop the one the runner meant: the
runner closes a worker's control stream before it asks StopWorker, so the worker of that id whose
control stream has ended is the one; if none has after a grace period and the id is unambiguous,
that one is stopped as Beam would; otherwise they are left to end with their control streams.
Workers as processes (the `use_loopback_process_worker` experiment) are Beam's as they are. The
Beam worker pool beside a cluster (EXTERNAL) has the same fix: streamtap.services.worker_pool.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["install"]

_LOGGER = logging.getLogger(__name__)

# How long a StopWorker waits for the worker to end after its runner closed the control stream.
_STOP_GRACE_SECONDS = 10.0
_INSTALLED = threading.Lock()
_installed = False


def install() -> None:
    """Patches Beam's worker pool class (this process, once) as the module says."""
    global _installed
    with _INSTALLED:
        if _installed:
            return
        from apache_beam.runners.worker import worker_pool_main

        pool = worker_pool_main.BeamFnExternalWorkerPoolServicer
        beam_start, beam_stop = pool.StartWorker, pool.StopWorker
        lock = threading.Lock()

        def start_worker(self, request, context):
            if self._use_process:
                return beam_start(self, request, context)
            from apache_beam.portability.api import beam_fn_api_pb2
            from apache_beam.runners.worker import sdk_worker

            try:
                worker = sdk_worker.SdkHarness(
                    request.control_endpoint.url,
                    worker_id=request.worker_id,
                    state_cache_size=self._state_cache_size,
                    data_buffer_time_limit_ms=self._data_buffer_time_limit_ms,
                )
                thread = threading.Thread(
                    name=f"run_worker_{request.worker_id}", target=worker.run, daemon=True
                )
                thread.start()
                with lock:
                    _workers(self).setdefault(request.worker_id, []).append((worker, thread))
                return beam_fn_api_pb2.StartWorkerResponse()
            except Exception as error:  # noqa: BLE001 - reported to the runner, which fails the task
                return beam_fn_api_pb2.StartWorkerResponse(error=f"{type(error).__name__}: {error}")

        def stop_worker(self, request, context):
            if self._use_process:
                return beam_stop(self, request, context)
            from apache_beam.portability.api import beam_fn_api_pb2
            from apache_beam.utils.sentinel import Sentinel

            worker_id = request.worker_id
            deadline = time.monotonic() + _STOP_GRACE_SECONDS
            while True:
                with lock:
                    workers = _workers(self).get(worker_id, [])
                    ended = [w for w in workers if w[0]._alive is False or not w[1].is_alive()]
                    chosen = ended[0] if ended else None
                    if chosen is None and time.monotonic() > deadline:
                        if len(workers) != 1:
                            _LOGGER.warning(
                                "StopWorker %s: %d workers have that id and none has ended; "
                                "leaving them to end with their control streams",
                                worker_id, len(workers))
                            return beam_fn_api_pb2.StopWorkerResponse()
                        chosen = workers[0]
                    if chosen is not None or not workers:
                        if chosen is not None:
                            workers.remove(chosen)
                        if not workers:
                            _workers(self).pop(worker_id, None)
                        break
                time.sleep(0.05)
            if chosen is not None:
                chosen[0]._responses.put(Sentinel.sentinel)  # as Beam's: unblocks its requests
            return beam_fn_api_pb2.StopWorkerResponse()

        pool.StartWorker = start_worker
        pool.StopWorker = stop_worker
        _installed = True


def _workers(pool) -> dict:
    """worker id -> [(SdkHarness, its thread)] of one pool (one per TaskManager that used the id)."""
    workers = getattr(pool, "_streamtap_workers", None)
    if workers is None:
        workers = pool._streamtap_workers = {}
    return workers
