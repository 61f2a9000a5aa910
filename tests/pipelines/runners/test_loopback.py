"""The LOOPBACK worker pool serving two runners whose worker ids repeat (two Flink TaskManagers
both ask for worker "1-1"): each stop reaches the worker its runner meant.

Beam's pool runs in this process as `streamtap run` starts it; the two runners are real Fn API
control services on loopback, doing what a TaskManager does with its worker: accept its control
stream, and when done close that stream and ask the pool to stop the worker. The whole capture on
a real two-TaskManager cluster: tests/test_flink_capture.py.
"""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc, endpoints_pb2
from apache_beam.runners.worker import worker_pool_main

from streamtap.pipelines.runners.loopback import install


class _TaskManager(beam_fn_api_pb2_grpc.BeamFnControlServicer):
    """A runner's control service with one worker: notes when the worker connects and when the
    worker's side of the control stream ends."""

    def __init__(self) -> None:
        self.connected = threading.Event()
        self.worker_gone = threading.Event()
        self._done = threading.Event()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        beam_fn_api_pb2_grpc.add_BeamFnControlServicer_to_server(self, self._server)
        self.url = f"127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"
        self._server.start()

    def Control(self, request_iterator, context):
        self.connected.set()

        def read_responses() -> None:
            try:
                for _ in request_iterator:
                    pass
            except grpc.RpcError:
                pass
            self.worker_gone.set()

        threading.Thread(target=read_responses, daemon=True).start()
        while not self._done.wait(0.05) and context.is_active():
            pass
        yield from ()  # no instruction: the stream ends when the task manager is done

    def close_control_stream(self) -> None:
        self._done.set()

    def stop(self) -> None:
        self._done.set()
        self._server.stop(0)


def _start(pool, worker_id: str, runner: _TaskManager) -> None:
    response = pool.StartWorker(beam_fn_api_pb2.StartWorkerRequest(
        worker_id=worker_id, control_endpoint=endpoints_pb2.ApiServiceDescriptor(url=runner.url)))
    assert not response.error, response.error
    assert runner.connected.wait(10), "the worker did not connect"


def test_a_stop_reaches_the_worker_its_runner_meant_when_two_runners_use_one_id():
    install()  # what Flink.prepare does before a LOOPBACK capture runs
    address, server = worker_pool_main.BeamFnExternalWorkerPoolServicer.start(
        state_cache_size=0, data_buffer_time_limit_ms=0)
    first, second = _TaskManager(), _TaskManager()
    try:
        pool = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(grpc.insecure_channel(address))
        _start(pool, "1-1", first)
        _start(pool, "1-1", second)  # the other TaskManager numbers its workers alike

        # The first TaskManager is done: it closes its worker's control stream, then asks the
        # pool to stop worker 1-1. Beam's pool stopped the second's worker (the last one it had
        # noted under that id) while the second TaskManager still used it.
        first.close_control_stream()
        pool.StopWorker(beam_fn_api_pb2.StopWorkerRequest(worker_id="1-1"))
        assert first.worker_gone.wait(10)
        assert not second.worker_gone.wait(1.0), "the second TaskManager's worker was stopped"

        second.close_control_stream()
        pool.StopWorker(beam_fn_api_pb2.StopWorkerRequest(worker_id="1-1"))
        assert second.worker_gone.wait(10)
    finally:
        first.stop()
        second.stop()
        server.stop(0)
