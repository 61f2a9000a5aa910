"""TCP sources: `tcp` connects out to a server, `tcp_listen` accepts connections from devices.

Delivery: every byte each connection delivered, in order. Bytes a peer sent while no connection
was up are not seen; the first chunk of every new connection after the first is marked as a
discontinuity. `tcp_listen` reads all its connections at once, each a session of its own
(streamtap.io.sessions): a chunk holds one connection's bytes and names it (tag `peer`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass
from typing import ClassVar

from streamtap.config import SourceConfig, doc
from streamtap.io.connector import ByteSink, Connector
from streamtap.errors import SourceError

__all__ = ["TcpSource", "TcpListenSource", "parse_address"]

_LOGGER = logging.getLogger(__name__)


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
        if read_timeout is None:
            data = await loop.sock_recv(sock, sink.room())
        else:
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
    """Devices connect in; every connection is read at once, each its own session.

    The stream is the connections' chunks interleaved whole: a chunk holds the bytes of one
    connection only and names it (tag `peer`, its own `session`); one connection's bytes are its
    chunks in seq order. Connections beyond `max_connections` are closed as they come, with a
    warning.
    """

    type_name: ClassVar[str] = "tcp_listen"

    address: str = doc("host:port to listen on (use 127.0.0.1 or a specific interface).", "")
    read_timeout: float | None = doc(
        "Seconds without a byte before a connection is dropped; none waits forever.",
        None,
        min=0.001,
        max=86400,
    )
    max_connections: int = doc(
        "Most connections read at once, each its own session; one more is accepted and closed "
        "at once (a warning says so) until one of them ends.",
        64,
        min=1,
        max=1024,
    )

    def validate(self, path: str) -> list[str]:
        return super().validate(path) + _validate_address(self.address, path)

    def connector(self) -> Connector:
        return _TcpListenConnector(self)


# A full listener says so at most this often (with the count refused meanwhile).
_REFUSAL_LOG_SECONDS = 10.0


class _TcpListenConnector(Connector):
    """A session is the listener's life: every accepted connection is read at once into a
    session of its own (ByteSink.open_session), up to max_connections."""

    def __init__(self, config: TcpListenSource):
        self._config = config
        self._host, self._port = parse_address(config.address)
        self._refused = 0
        self._refusal_logged_at = -1e9

    def describe(self) -> str:
        return f"tcp-listen://{self._config.address}"

    async def run_session(self, sink: ByteSink, resume_offset: int) -> None:
        loop = asyncio.get_running_loop()
        listener = socket.create_server((self._host, self._port))
        listener.setblocking(False)
        _LOGGER.info("%s: listening on %s (at most %d connections at once)", self._config.id,
                     self._config.address, self._config.max_connections)
        readers: set[asyncio.Task] = set()
        try:
            while True:
                connection, peer = await loop.sock_accept(listener)
                if len(readers) >= self._config.max_connections:
                    connection.close()
                    self._refuse(peer)
                    continue
                task = loop.create_task(self._read(connection, _peer_text(peer), sink))
                readers.add(task)
                task.add_done_callback(readers.discard)
        finally:
            listener.close()
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    async def _read(self, connection: socket.socket, peer: str, sink: ByteSink) -> None:
        """Reads one connection into a session of its own until the peer closes it."""
        session = sink.open_session({"peer": peer})
        _LOGGER.info("%s: connection from %s", self._config.id, peer)
        error = None
        try:
            with connection:
                connection.setblocking(False)
                await _pump_socket(connection, session, self._config.read_timeout)
        except SourceError as failure:
            error = str(failure)
        except OSError as failure:
            error = (failure.strerror or str(failure) or type(failure).__name__).lower()
        finally:
            session.close(error)

    def _refuse(self, peer) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._refusal_logged_at >= _REFUSAL_LOG_SECONDS:
            _LOGGER.warning(
                "%s: closed the connection from %s: max_connections (%d) are open; %d refused "
                "so far (raise max_connections to read more devices at once)",
                self._config.id, _peer_text(peer), self._config.max_connections, self._refused,
            )
            self._refusal_logged_at = now


def _peer_text(peer) -> str:
    """An accepted peer address as host:port ([v6]:port)."""
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
