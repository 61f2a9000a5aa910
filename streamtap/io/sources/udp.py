"""UDP source: every datagram that reaches the bound address, concatenated in arrival order.

A datagram is never split across chunks (a chunk is cut before a datagram that would not fit),
so datagram-framed sensor records stay whole. UDP gives no delivery guarantee: datagrams the
network or a full socket buffer dropped cannot be seen or marked.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import ClassVar

from streamtap.config import SourceConfig, doc
from streamtap.io.connector import ByteSink, Connector
from streamtap.io.sources.tcp import parse_address

__all__ = ["UdpSource"]


@dataclass(kw_only=True)
class UdpSource(SourceConfig):
    type_name: ClassVar[str] = "udp"

    address: str = doc("host:port to receive datagrams on.", "")
    receive_buffer_bytes: int = doc(
        "Kernel receive buffer (SO_RCVBUF); larger rides out bursts without drops.",
        4 * 1024 * 1024,
        min=1,
        max=2**31 - 1,
    )

    def validate(self, path: str) -> list[str]:
        errors = super().validate(path)
        try:
            parse_address(self.address)
        except ValueError as error:
            errors.append(f"{path}.address: {error}")
        return errors

    def connector(self) -> Connector:
        return _UdpConnector(self)


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, sink: ByteSink, closed: asyncio.Future):
        self._sink = sink
        self._closed = closed

    def datagram_received(self, data: bytes, addr) -> None:
        self._sink.write(data, whole=True)

    def error_received(self, exc: Exception) -> None:
        if not self._closed.done():
            self._closed.set_exception(exc)


class _UdpConnector(Connector):
    def __init__(self, config: UdpSource):
        self._config = config
        self._host, self._port = parse_address(config.address)

    def describe(self) -> str:
        return f"udp://{self._config.address}"

    async def run_session(self, sink: ByteSink, resume_offset: int) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._config.receive_buffer_bytes)
        sock.bind((self._host, self._port))
        closed = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Receiver(sink, closed), sock=sock
        )
        try:
            await closed  # datagrams arrive through the protocol until an error or cancellation
        finally:
            transport.close()
