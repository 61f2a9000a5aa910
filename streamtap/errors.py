"""Every error type of streamtap, in one leaf module (it imports nothing of ours), and how a
session's error is said in a few words (describe_error).

Each says what went wrong and what to do; the CLI prints the message and never a traceback for a
user's own mistake.
"""

from __future__ import annotations

import asyncio

__all__ = [
    "ConfigError",
    "Unreachable",
    "SourceError",
    "PermanentSourceError",
    "RunError",
    "ServiceError",
    "EnvelopeError",
    "SinkError",
    "describe_error",
]


class ConfigError(ValueError):
    """The config has one or more problems; `errors` lists each with its key path."""

    def __init__(self, errors: list[str], source: str = "config"):
        self.errors = errors
        lines = "\n".join(f"  - {error}" for error in errors)
        super().__init__(f"{source} has {len(errors)} problem(s):\n{lines}")


class Unreachable(str):
    """A preflight problem that is only about reaching a service right now.

    `streamtap validate` reports it as an error; `streamtap run` warns and starts anyway, because
    the sink keeps retrying and the capture goes on when the service returns.
    """


class SourceError(Exception):
    """A session failed for a reason worth telling the user (bad status, malformed framing).

    The message names the problem and, where there is one, what to do. The runtime logs it,
    counts it in the stream's errors and reconnects with backoff.
    """


class PermanentSourceError(SourceError):
    """A failure that retrying cannot fix (a file that does not exist, a bad URL scheme).

    The runtime still retries (slowly: the file may appear), but reports it as an error every time.
    """


class RunError(RuntimeError):
    """The capture could not be started; the message says what to do."""


class ServiceError(RuntimeError):
    """A service could not be started or reached; the message says why and where its log is."""


class EnvelopeError(ValueError):
    """Bytes that are not a streamtap record envelope (Kinesis): the message says what is wrong."""


class SinkError(RuntimeError):
    """A sink could not write, for good or after its retries: the message says what, where, and
    what to do. It fails the bundle; `streamtap run` prints its message as one line, without the
    tracebacks the runner logs for it."""


def describe_error(error: BaseException) -> str:
    """A session's error in a few words, for status lines and logs ("timed out", ...)."""
    if isinstance(error, SourceError):
        return str(error)
    if isinstance(error, asyncio.TimeoutError):
        return "timed out"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused: is the server running?"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__

