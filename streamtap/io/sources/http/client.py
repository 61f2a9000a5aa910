"""The HTTP/1.1 client of the `http` source: one GET of a stream URL, spoken directly on asyncio.

`HttpClient.get()` connects (TLS with certificate and hostname checks for https, extra CAs from
ca_file), sends the request (Basic auth from the URL's user:password, configured headers, and
`Icy-MetaData: 1` when asked; credentials only to the origin of the configured URL), reads the
response head within connect_timeout, follows redirects (loops and too many are errors), and
turns error statuses into SourceErrors that say what to do. The caller receives the body
(`streamtap.io.sources.http.receiver.receive_body`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from streamtap.errors import PermanentSourceError, SourceError
from streamtap.io.sources.http.connection import (
    Connection,
    Target,
    open_stream,
    opening_slot,
    os_error_text,
    url_problem,
    within,
)
from streamtap.io.sources.http.response import TOKEN, Head, malformed, read_head
from streamtap.redaction import redact_url

__all__ = ["HttpClient", "header_problems", "status_error"]

log = logging.getLogger(__name__)

_USER_AGENT = "streamtap/0.1"
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_X509_V_ERR_HOSTNAME_MISMATCH = 62  # OpenSSL's verify code when the name is not in the cert
# Headers the client must own: it relies on `Connection: close` and sends no body.
_RESERVED_HEADERS = frozenset({"connection", "content-length", "transfer-encoding"})
# Request headers that carry credentials: sent only to the origin of the configured URL.
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


def header_problems(path: str, name: str, value: Any) -> list[str]:
    """What is wrong with a configured request header (config key `path`), if anything."""
    errors = []
    if not TOKEN.fullmatch(name):
        errors.append(f"{path}: {name!r} is not a valid header name")
    elif name.lower() in _RESERVED_HEADERS:
        errors.append(f"{path}: {name} is set by the connector and cannot be configured")
    if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
        errors.append(f"{path}: the value must be one line of text without CR, LF or NUL")
    return errors


def status_error(head: Head, target: Target) -> SourceError:
    """The error of a response that is neither a success nor a redirect, with advice."""
    status = head.status
    if status in (401, 407):
        advice = "check the credentials (user:password@ in the URL, or headers)"
    elif status == 403:
        advice = (
            "the server refused access (listener limit or blocked client?); "
            "check the URL and headers"
        )
    elif status in (404, 410):
        advice = "check the URL (for Icecast: is the mount live?)"
    elif status in (408, 429):
        advice = "the server is throttling, will retry"
    elif 500 <= status < 600:
        advice = "server busy/failing, will retry"
    elif 300 <= status < 400:
        advice = "an unsupported redirect; check the URL"
    else:
        advice = "check the URL and headers"
    reason = f" {head.reason}" if head.reason else ""
    return SourceError(f"HTTP {status}{reason} from {target.where}: {advice}")


class HttpClient:
    """GETs one stream URL: a connection per redirect hop, the last one's response handed over.

    One per stream; it keeps the SSL context it builds on first https use (on the worker).
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        icy_metadata: bool = False,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        max_redirects: int = 5,
        gather_seconds: float = 0.0,
        ca_file: str | None = None,
    ):
        """Arguments as the HttpSource fields of the same names (see there)."""
        self._url = url
        self._headers = dict(headers or {})
        self._icy_metadata = icy_metadata
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_redirects = max_redirects
        self._gather_seconds = gather_seconds
        self._ca_file = ca_file
        self._ssl_context: ssl.SSLContext | None = None  # built on first https use, on the worker

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ssl_context"] = None  # SSLContexts don't pickle; rebuilt where it's needed
        return state

    @contextlib.asynccontextmanager
    async def get(self) -> AsyncIterator[tuple[Connection, Head]]:
        """The connection and the 2xx response head of a GET of the URL, redirects followed.

        Use as `async with client.get() as (conn, head):` and read the body from `conn`. The
        connection is closed when the block ends, and aborted if it raised (nothing is left to
        say to a server that failed us, and a cancelled session must not linger in a TLS
        shutdown). Raises SourceError (PermanentSourceError for an unusable URL or ca_file).
        """
        first = Target.parse(self._url)
        target = first
        chain = [first]
        while True:
            conn, head = await self._open(target, target.origin == first.origin)
            clean = False
            try:
                if head.status in _REDIRECT_STATUSES:
                    target = self._follow(head, target, chain)
                    clean = True
                    continue
                if not 200 <= head.status < 300:
                    raise status_error(head, target)
                yield conn, head
                clean = True
                return
            finally:
                conn.close(abort=not clean)

    async def _open(self, target: Target, send_credentials: bool) -> tuple[Connection, Head]:
        """Connects, sends the request and reads the response head: at most
        OPENINGS_PER_SERVER of these at once per server in this process (opening_slot), the
        rest wait their turn (not counted in connect_timeout)."""
        async with opening_slot(target.address):
            conn = await self._connect(target)
            try:
                await conn.send(self._request(target, send_credentials))
                return conn, await self._response_head(conn)
            except BaseException:
                conn.close(abort=True)
                raise

    async def _response_head(self, conn: Connection) -> Head:
        """The response head, within connect_timeout (and read_timeout between bytes).

        A server with a full listen queue (Icecast's holds 5) can leave a connection the client
        thinks is open and the server never accepted: nothing ever comes. 1,000 streams
        connecting to one Icecast at once overflowed its queue ~600 times; in 3 of 13 runs a few
        dozen streams that had started together then got nothing for the whole read timeout
        (30 s) before being reopened.
        """
        seconds = self._connect_timeout
        try:
            return await within(seconds, read_head(conn))
        except asyncio.TimeoutError:
            raise SourceError(
                f"no response from {conn.target.where} within {seconds:g} s of sending the "
                "request (the server may not have accepted the connection); it will be "
                "reopened (raise connect_timeout for slow servers)"
            ) from None

    def _request(self, target: Target, send_credentials: bool) -> bytes:
        headers = {
            "Host": target.host_header,
            "User-Agent": _USER_AGENT,
            "Accept": "*/*",
        }
        if self._icy_metadata:
            headers["Icy-MetaData"] = "1"
        parts = urlsplit(self._url)
        if send_credentials and parts.username is not None:
            user_pass = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(user_pass.encode()).decode()
        for name, value in self._headers.items():
            if not send_credentials and name.lower() in _CREDENTIAL_HEADERS:
                continue
            # A configured header replaces a default of the same name (User-Agent, Host ...).
            for existing in [n for n in headers if n.lower() == name.lower()]:
                del headers[existing]
            headers[name] = value
        headers["Connection"] = "close"
        lines = [f"GET {target.request_target} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")

    async def _connect(self, target: Target) -> Connection:
        context = self._context() if target.scheme == "https" else None
        try:
            reader, writer = await within(
                self._connect_timeout,
                open_stream(
                    target.host,
                    target.port,
                    ssl=context,
                    server_hostname=target.host if context else None,
                ),
            )
        except asyncio.TimeoutError:
            raise SourceError(
                f"connecting to {target.address} timed out after {self._connect_timeout:g} "
                "s: is the server up? (raise connect_timeout for slow links)"
            ) from None
        except ssl.SSLCertVerificationError as error:
            problem = str(error.verify_message or error.reason or error).rstrip(".")
            if error.verify_code == _X509_V_ERR_HOSTNAME_MISMATCH:
                advice = "use the host name (or IP) the certificate was issued for in the URL"
            else:
                advice = (
                    "if the server uses a self-signed or private-CA certificate, set ca_file to "
                    "a PEM file that holds it"
                )
            raise SourceError(
                f"TLS certificate of {target.address} was rejected: {problem}; {advice}"
            ) from None
        except OSError as error:
            raise SourceError(
                f"cannot connect to {target.address}: {os_error_text(error)}; check the host "
                "and port in the URL"
            ) from None
        return Connection(reader, writer, target, self._read_timeout, self._gather_seconds)

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            context = ssl.create_default_context()  # certificate and hostname checks on
            if self._ca_file:
                try:
                    context.load_verify_locations(cafile=self._ca_file)
                except (OSError, ssl.SSLError) as error:
                    raise PermanentSourceError(
                        f"ca_file {self._ca_file!r} cannot be used: {error}; give a "
                        "readable PEM file of CA certificates"
                    ) from None
            self._ssl_context = context
        return self._ssl_context

    def _follow(self, head: Head, target: Target, chain: list[Target]) -> Target:
        """The target a redirect points to; raises if it leads nowhere or loops."""
        location = head.get("location")
        if not location:
            raise malformed(target, f"HTTP {head.status} redirect without a Location header")
        new_url = urljoin(target.url, location.strip())
        problem = url_problem(new_url)
        if problem:
            raise SourceError(
                f"{target.where} redirects to {redact_url(new_url)!r}, which cannot be followed: "
                f"{problem}"
            )
        new = Target.parse(new_url)
        hops = " -> ".join(t.where for t in [*chain, new])
        if any(t.url == new.url for t in chain):
            raise SourceError(f"redirect loop: {hops}; check the URL")
        if len(chain) > self._max_redirects:
            raise SourceError(
                f"too many redirects (max_redirects is {self._max_redirects}): {hops}; "
                "check the URL or raise max_redirects"
            )
        log.debug("HTTP %s redirect: %s -> %s", head.status, target.where, new.where)
        chain.append(new)
        return new
