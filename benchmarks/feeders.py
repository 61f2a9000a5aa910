"""Load generators that run as separate processes, so they never share the GIL with a capture.

`python -m benchmarks.feeders tcp --port P --bytes N` serves N bytes of incompressible data to
the first client on 127.0.0.1:P as fast as the socket takes them, then holds the connection open
(the capture ends by its own byte limit) for at most --hold seconds. With --seed S the data is
feeder_block(S) repeated, so a benchmark can check what was captured.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import sys
import time

_BLOCK = 1024 * 1024


def feeder_block(seed: int) -> bytes:
    """The 1 MiB block a feeder started with --seed repeats."""
    return random.Random(seed).randbytes(_BLOCK)


def serve_tcp(port: int, total: int, hold: float, accept_timeout: float,
              seed: int | None = None) -> int:
    block = os.urandom(_BLOCK) if seed is None else feeder_block(seed)
    view = memoryview(block)
    with socket.create_server(("127.0.0.1", port)) as listener:
        listener.settimeout(accept_timeout)
        print("listening", flush=True)
        connection, _ = listener.accept()
        with connection:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
            sent = 0
            started = time.monotonic()
            while sent < total:
                piece = view[: min(_BLOCK, total - sent)]
                connection.sendall(piece)
                sent += len(piece)
            elapsed = time.monotonic() - started
            print(f"sent {sent} bytes in {elapsed:.3f} s", flush=True)
            # Hold the connection: a live stream does not end; the capture stops at max_bytes.
            connection.settimeout(hold)
            try:
                while connection.recv(4096):
                    pass
            except OSError:
                pass
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.feeders")
    sub = parser.add_subparsers(dest="kind", required=True)
    tcp = sub.add_parser("tcp", help="one TCP client, N bytes as fast as possible")
    tcp.add_argument("--port", type=int, required=True)
    tcp.add_argument("--bytes", type=int, required=True)
    tcp.add_argument("--hold", type=float, default=60.0, help="seconds to hold the connection")
    tcp.add_argument("--accept-timeout", type=float, default=60.0)
    tcp.add_argument("--seed", type=int, default=None, help="send feeder_block(SEED) repeated")
    args = parser.parse_args(argv)
    return serve_tcp(args.port, args.bytes, args.hold, args.accept_timeout, args.seed)


if __name__ == "__main__":
    sys.exit(main())
