"""TCP sources: `tcp` connects out to a server, `tcp_listen` accepts connections from devices.

Delivery: every byte each connection delivered, in order. Bytes a peer sent while no connection
was up are not seen; the first chunk of every new connection after the first is marked as a
discontinuity.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from typing import ClassVar

from streamtap.config import SourceConfig, doc
from streamtap.io.connector import ByteSink, Connector
from streamtap.errors import SourceError

__all__ = ["TcpSource", "TcpListenSource", "parse_address"]

_LOGGER = logging.getLogger(__name__)
_READ_SIZE = 256 * 1024


def parse_address(address: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); raises ValueError naming the problem."""
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{address!r} is not host:port")
    host = host.strip("[]")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} has no valid port (1-65535)")
    return host, int(port)


def _validate_address(address: str, path: str) -> list[str]:
    try:
        parse_address(address)
    except ValueError as error:
        return [f"{path}.address: {error}"]
    return []


@dataclass(kw_only=True)
class TcpSource(SourceConfig):
    type_name: ClassVar[str] = "tcp"

    address: str = doc("host:port of the server to connect to.", "")
    connect_timeout: float = doc(
        "Seconds to wait for the connection to open.", 10.0, min=0.001, max=3600
    )
    read_timeout: float | None = doc(
        "Seconds without a byte before the connection is treated as dead; none waits forever.",
        None,
        min=0.001,
        max=86400,
    )

    def validate(self, path: str) -> list[str]:
        return super().validate(path) + _validate_address(self.address, path)

    def connector(self) -> Connector:
        return _TcpConnector(self)


async def _pump(reader: asyncio.StreamReader, sink: ByteSink, read_timeout: float | None) -> None:
    """Copies a connection into the sink until the peer closes it."""
    while True:
        await sink.wait_for_room()
        try:
            data = await asyncio.wait_for(reader.read(_READ_SIZE), read_timeout)
        except asyncio.TimeoutError:
            raise SourceError(f"no data for {read_timeout:g} s") from None
        if not data:
            return
        sink.write(data)


async def _pump_socket(sock: socket.socket, sink: ByteSink, read_timeout: float | None) -> None:
    """Receives a connection into the sink until the peer closes it.

    Straight from the socket, not through asyncio's StreamReader, which copies every byte into
    its buffer and again into a new bytes object per read (~25% of the GIL samples of a 300 MB/s
    capture, benchmark scenario 1). Each read asks for what the sink's current chunk can still
    take, so on a fast stream a read is mostly one whole chunk, which becomes the chunk's payload
    as it is: the kernel's copy is the only one.
    """
    loop = asyncio.get_running_loop()
    while True:
        await sink.wait_for_room()
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, sink.room()), read_timeout)
        except asyncio.TimeoutError:
            raise SourceError(f"no data for {read_timeout:g} s") from None
        if not data:
            return
        sink.write(data)


async def _connect(host: str, port: int) -> socket.socket:
    """A non-blocking socket connected to host:port (each resolved address tried in turn)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
            return sock
        except BaseException as failure:
            sock.close()
            if not isinstance(failure, OSError):
                raise
            error = failure
    raise error or OSError(f"{host}:{port} has no address")


class _TcpConnector(Connector):
    def __init__(self, config: TcpSource):
        self._config = config
        self._host, self._port = parse_address(config.address)

    def describe(self) -> str:
        return f"tcp://{self._config.address}"

    async def run_session(self, sink: ByteSink, resume_offset: int) -> None:
        try:
            sock = await asyncio.wait_for(
                _connect(self._host, self._port), self._config.connect_timeout
            )
        except asyncio.TimeoutError:
            raise SourceError(
                f"could not connect within {self._config.connect_timeout:g} s"
            ) from None
        with sock:
            await _pump_socket(sock, sink, self._config.read_timeout)


@dataclass(kw_only=True)
class TcpListenSource(SourceConfig):
    type_name: ClassVar[str] = "tcp_listen"

    address: str = doc("host:port to listen on (use 127.0.0.1 or a specific interface).", "")
    read_timeout: float | None = doc(
        "Seconds without a byte before a connection is dropped; none waits forever.",
        None,
        min=0.001,
        max=86400,
    )

    def validate(self, path: str) -> list[str]:
        return super().validate(path) + _validate_address(self.address, path)

    def connector(self) -> Connector:
        return _TcpListenConnector(self)


class _TcpListenConnector(Connector):
    """One session per accepted connection. Connections are read one after the other.

    A stream is one ordered byte sequence, so a second device connecting while the first is
    still sending waits (the kernel holds its bytes) until the first one closes.
    """

    def __init__(self, config: TcpListenSource):
        self._config = config
        self._host, self._port = parse_address(config.address)
        self._server: asyncio.base_events.Server | None = None
        self._connections: asyncio.Queue | None = None

    def describe(self) -> str:
        return f"tcp-listen://{self._config.address}"

    async def _ensure_listening(self) -> asyncio.Queue:
        if self._server is None:
            self._connections = asyncio.Queue()

            async def accept(reader, writer):
                await self._connections.put((reader, writer))

            self._server = await asyncio.start_server(
                accept, self._host, self._port, reuse_address=True
            )
            _LOGGER.info("listening on %s", self._config.address)
        return self._connections

    async def run_session(self, sink: ByteSink, resume_offset: int) -> None:
        connections = await self._ensure_listening()
        reader, writer = await connections.get()
        try:
            await _pump(reader, sink, self._config.read_timeout)
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
