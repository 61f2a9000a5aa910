"""Secrets out of sight: what of a configured URL or header may be printed.

A stream URL can carry credentials in its user info (`https://user:password@host/`), in its query
(`?token=...`, often from `${VAR}`) or its fragment, and request headers carry API keys and
cookies. Every log line, status line, summary, error and exception message that shows a URL shows
`redact_url(url)`; header values are shown only through `redact_headers`. A leaf module (it
imports nothing of streamtap), so that every layer can use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

__all__ = ["REDACTED", "redact_headers", "redact_url"]

#: What replaces a secret.
REDACTED = "***"


def redact_url(url: str) -> str:
    """`url` fit for printing: user info, every query value and the fragment replaced by ***.

    The scheme, host, port, path and query parameter names stay, so a reader still sees which
    stream it is: `https://***@radio.example/live?token=***&format=***`. Where the parts cannot
    be told apart (a password with an unescaped `#`, `?` or `/` looks like a bad port; an
    unclosed IPv6 bracket) nothing after the scheme is shown.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    try:
        parts.port  # noqa: B018 -- raises ValueError for a "port" that is not a number
    except ValueError:
        # `user:pa/ss@host` splits into the "host:port" `user:pa` and the path `/ss@host`: where
        # the password ends cannot be told, so nothing after the scheme is shown.
        return f"{parts.scheme}://{REDACTED}" if parts.scheme else "<invalid URL>"
    query = "&".join(_redact_parameter(item) for item in parts.query.split("&"))
    fragment = REDACTED if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _redact_parameter(item: str) -> str:
    if not item:
        return item
    name, equals, _ = item.partition("=")
    # A parameter without '=' may itself be the secret (`?s3cr3t`): hide it whole.
    return f"{name}={REDACTED}" if equals else REDACTED


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Request headers fit for printing: the names, every value replaced by ***."""
    return {name: REDACTED for name in headers}
