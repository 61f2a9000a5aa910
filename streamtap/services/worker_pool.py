"""A Beam worker pool on loopback: Python SDK workers for `--environment_type=EXTERNAL`.

    python -m streamtap.services.worker_pool --port 50000

Flink TaskManagers ask it for a worker (Beam's StartWorker call) once per SDK environment of a
job; each request gets its own `python` process running Beam's SdkHarness, so the Python work of
a job (the stream readers and everything else of streamtap) is spread over as many processes as
the job has environments, not held in the one `streamtap run` process as with LOOPBACK.
`streamtap services up flink --worker-pool-port N` runs it beside the local cluster.

It is Beam's `apache_beam.runners.worker.worker_pool_main` with three changes: it listens on
127.0.0.1 only (Beam's binds every interface); it starts workers with this interpreter (Beam's
runs whatever `python` comes first on PATH, which need not have apache-beam and streamtap), with
their output in the pool's own output (its log); and it serves several TaskManagers at once.
Each TaskManager numbers its workers itself ("1-1", "1-2", ...), so two TaskManagers ask for
workers with the same id, and Beam's pool, which keeps one process per id, stopped the wrong
TaskManager's worker when the first one finished (that task then failed and its streams
restarted). Here a StopWorker waits for a worker of that id to exit by itself (the runner closes
its control stream just before asking) and only terminates one when the id is unambiguous.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import threading
import time
import traceback

__all__ = ["serve", "main"]

_LOGGER = logging.getLogger(__name__)

# How long a StopWorker waits for the worker to exit after its runner closed the control stream.
_STOP_GRACE_SECONDS = 10.0

_HARNESS = (
    "from apache_beam.runners.worker.sdk_worker import SdkHarness; "
    "SdkHarness({control!r}, worker_id={worker_id!r}, state_cache_size={cache}, "
    "data_buffer_time_limit_ms={buffer_ms}).run()"
)


def _servicer_class():
    from apache_beam.portability.api import beam_fn_api_pb2
    from apache_beam.runners.worker.worker_pool_main import (
        BeamFnExternalWorkerPoolServicer,
        kill_process_gracefully,
    )

    class LoopbackWorkerPool(BeamFnExternalWorkerPoolServicer):
        """Starts every worker as a process of this interpreter; tolerates repeated ids."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._lock = threading.Lock()
            # worker id -> its processes (one per TaskManager that used the id)
            self._workers: dict[str, list[subprocess.Popen]] = {}

        def StartWorker(self, start_worker_request, unused_context):
            try:
                worker_id = start_worker_request.worker_id
                command = [sys.executable, "-c", _HARNESS.format(
                    control=start_worker_request.control_endpoint.url,
                    worker_id=worker_id,
                    cache=self._state_cache_size,
                    buffer_ms=self._data_buffer_time_limit_ms,
                )]
                worker = subprocess.Popen(command, stdin=subprocess.DEVNULL, close_fds=True)
                with self._lock:
                    # Exited workers stay listed until their StopWorker: that a worker of the
                    # id has exited is how StopWorker tells which one the runner meant.
                    self._workers.setdefault(worker_id, []).append(worker)
                _LOGGER.info("started SDK worker %s (pid %d) for %s", worker_id, worker.pid,
                             start_worker_request.control_endpoint.url)
                return beam_fn_api_pb2.StartWorkerResponse()
            except Exception:  # noqa: BLE001 - reported to the runner, which fails the task
                return beam_fn_api_pb2.StartWorkerResponse(error=traceback.format_exc())

        def StopWorker(self, stop_worker_request, unused_context):
            worker_id = stop_worker_request.worker_id
            deadline = time.monotonic() + _STOP_GRACE_SECONDS
            while True:
                with self._lock:
                    workers = self._workers.get(worker_id, [])
                    exited = [w for w in workers if w.poll() is not None]
                    if exited or not workers:
                        # The worker whose control stream the runner closed has exited.
                        if exited:
                            workers.remove(exited[0])
                        if not workers:
                            self._workers.pop(worker_id, None)
                        return beam_fn_api_pb2.StopWorkerResponse()
                    if time.monotonic() > deadline:
                        if len(workers) == 1:
                            worker = self._workers.pop(worker_id)[0]
                        else:
                            _LOGGER.warning("StopWorker %s: %d workers have that id and none "
                                            "exited; leaving them", worker_id, len(workers))
                            return beam_fn_api_pb2.StopWorkerResponse()
                        break
                time.sleep(0.05)
            _LOGGER.info("stopping SDK worker %s (pid %d)", worker_id, worker.pid)
            kill_process_gracefully(worker)
            return beam_fn_api_pb2.StopWorkerResponse()

        def all_workers(self) -> list[subprocess.Popen]:
            with self._lock:
                return [w for workers in self._workers.values() for w in workers]

    return LoopbackWorkerPool


def serve(port: int, host: str = "127.0.0.1"):
    """Starts the pool's gRPC server on host:port; returns (address, server, servicer)."""
    import grpc
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.portability.api import beam_fn_api_pb2_grpc
    from apache_beam.runners.worker import sdk_worker_main
    from apache_beam.utils import thread_pool_executor

    server = grpc.server(
        thread_pool_executor.shared_unbounded_instance(),
        options=[("grpc.http2.max_pings_without_data", 0), ("grpc.http2.max_ping_strikes", 0)],
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"cannot listen on {host}:{port}")
    pool = _servicer_class()(
        use_process=True,
        # Beam's defaults, as LOOPBACK workers get them.
        state_cache_size=sdk_worker_main._get_state_cache_size_bytes(options=PipelineOptions([])),
        data_buffer_time_limit_ms=sdk_worker_main._get_data_buffer_time_limit_ms([]),
    )
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(pool, server)
    server.start()
    return f"{host}:{bound}", server, pool


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamtap.services.worker_pool",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    address, server, pool = serve(args.port)
    _LOGGER.info("Beam worker pool listening on %s (workers: %s)", address, sys.executable)
    stopped = threading.Event()

    def stop(signum, frame):
        stopped.set()

    import signal

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stopped.wait()
    server.stop(0)
    from apache_beam.runners.worker.worker_pool_main import kill_process_gracefully

    for worker in pool.all_workers():
        kill_process_gracefully(worker, timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
