"""`tcp_listen` with devices connected at once: real TCP clients on 127.0.0.1, captured end to end
(FnApiRunner, Parquet). Every connection is read at once, each its own session; each client's
bytes reassemble exactly from the chunks tagged with it. The sequential case and `tcp` (connecting
out): tests/io/test_capture_sources.py."""

from __future__ import annotations

import itertools
import logging
import os
import random
import socket
import threading
import time

from tests.helpers import assert_verified, capture, chunks_of, free_port, wait_until


def _connect(port: int, timeout: float = 20.0) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port))
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _config(source: dict, path, max_bytes=16384) -> dict:
    return {
        "sources": [source],
        "chunk": {"max_bytes": max_bytes, "max_seconds": 0.5},
        "window_seconds": 1,
        "sinks": [{"type": "parquet", "path": str(path)}],
    }


def test_concurrent_connections_are_read_at_once_and_each_reassembles_exactly(tmp_path):
    port = free_port()
    payloads = [os.urandom(150_000 + 7_919 * i) for i in range(6)]
    peers: list[str | None] = [None] * len(payloads)
    all_open = threading.Barrier(len(payloads), timeout=60)
    done_at: list[float] = []

    def device(index: int) -> None:
        data, rng = payloads[index], random.Random(index)
        with _connect(port) as connection:
            peers[index] = f"127.0.0.1:{connection.getsockname()[1]}"
            connection.sendall(data[:1000])
            all_open.wait()  # every device is connected and has sent before any sends more
            position = 1000
            while position < len(data):
                size = rng.randint(500, 6000)
                connection.sendall(data[position:position + size])
                position += size
                time.sleep(rng.uniform(0, 0.004))
        done_at.append(time.monotonic())

    devices = [threading.Thread(target=device, args=(i,), daemon=True) for i in range(6)]
    for thread in devices:
        thread.start()
    capture(_config({"id": "devices", "type": "tcp_listen", "address": f"127.0.0.1:{port}",
                     "max_bytes": sum(map(len, payloads))}, tmp_path))
    for thread in devices:
        thread.join(10)

    chunks = chunks_of(str(tmp_path), "devices")
    assert {c.tags["peer"] for c in chunks} == set(peers)
    for peer, data in zip(peers, payloads):
        mine = [c for c in chunks if c.tags["peer"] == peer]
        assert b"".join(c.payload for c in mine) == data, peer
        assert len({c.session for c in mine}) == 1  # one session per connection
        assert [c.discontinuity for c in mine[1:]] == [False] * (len(mine) - 1)
    report = assert_verified(str(tmp_path), streams=1)["devices"]
    assert report.sessions == 6 and report.discontinuities == 5
    # The connections were read at once, not one after another: their chunks interleave.
    switches = sum(a.tags["peer"] != b.tags["peer"] for a, b in itertools.pairwise(chunks))
    assert switches > 3 * len(payloads), switches


def test_connections_beyond_max_connections_are_closed_with_a_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    port = free_port()
    first, second, last = os.urandom(40_000), os.urandom(30_000), os.urandom(20_000)
    refused = threading.Event()
    results: dict[str, bytes] = {}

    def devices() -> None:
        one, two = _connect(port), _connect(port)
        one.sendall(first[:10_000])
        two.sendall(second[:10_000])
        time.sleep(0.5)
        with _connect(port) as third:  # a third while two are open: closed at once
            third.settimeout(5)
            try:
                results["third"] = third.recv(100)
            except ConnectionResetError:
                results["third"] = b""
            refused.set()
        one.sendall(first[10_000:])
        one.close()
        time.sleep(0.5)  # the first is gone: room for another
        with _connect(port) as fourth:
            fourth.sendall(last)
        two.sendall(second[10_000:])
        two.close()

    thread = threading.Thread(target=devices, daemon=True)
    thread.start()
    capture(_config({"id": "limited", "type": "tcp_listen", "address": f"127.0.0.1:{port}",
                     "max_connections": 2,
                     "max_bytes": len(first) + len(second) + len(last)}, tmp_path))
    thread.join(10)
    wait_until(refused.is_set, 5, "the third connection to be answered")

    assert results["third"] == b""  # closed without a byte read
    chunks = chunks_of(str(tmp_path), "limited")
    by_peer: dict[str, bytearray] = {}
    for chunk in chunks:
        by_peer.setdefault(chunk.tags["peer"], bytearray()).extend(chunk.payload)
    assert sorted(map(bytes, by_peer.values()), key=len) == [last, second, first]
    assert "closed the connection from 127.0.0.1:" in caplog.text
    assert "max_connections (2) are open" in caplog.text
    assert_verified(str(tmp_path), streams=1)


def test_max_connections_has_a_declared_range():
    from streamtap.errors import ConfigError
    from streamtap.plugins import parse_config

    for bad in (0, 5000):
        try:
            parse_config(_config({"id": "l", "type": "tcp_listen", "address": "127.0.0.1:9",
                                  "max_connections": bad}, "/tmp/x"))
        except ConfigError as error:
            assert "sources[0].max_connections: must be between 1 and 1024" in str(error)
        else:
            raise AssertionError(f"max_connections {bad} was accepted")
