"""An HTTP server whose streams never send a byte: for the memory of N idle captured streams.

    python -m benchmarks.peers.idle_http --port 8100

Every GET gets `200 OK` with `Content-Type: audio/mpeg` and then nothing until the client closes
the connection, so a capture of N sources on it holds N open, idle sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from benchmarks.peers.asyncio_floor import raise_open_files

_HEAD = b"HTTP/1.0 200 OK\r\nContent-Type: audio/mpeg\r\nCache-Control: no-cache\r\n\r\n"


async def _session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(_HEAD)
        await writer.drain()
        while await reader.read(4096):
            pass
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def _serve(host: str, port: int) -> None:
    server = await asyncio.start_server(_session, host, port, backlog=4096)
    print(f"idle_http: listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    raise_open_files()
    try:
        asyncio.run(_serve(args.host, args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
