"""What streamtap changes in kafka-python, installed when a Kafka client is opened, never at import.

Two changes, both process-wide and idempotent (`install()`):

- record batches are checksummed in C (google-crc32c) when the `crc32c` package is missing;
- SASL passwords this process hands to kafka-python (`hide_password()`) are masked in the log
  records of the loggers that show client configs and request bytes at DEBUG.

Importing streamtap or parsing a config leaves kafka-python as it is: `client.open_client` calls
`install()` right before it opens a producer, consumer or admin client.
"""

from __future__ import annotations

import logging
import threading

__all__ = ["hide_password", "install", "installed"]

# The loggers whose DEBUG records carry client configs or request contents.
_LOGGERS = ("kafka.admin.client", "kafka.net.connection", "kafka.protocol.parser")

_lock = threading.Lock()
_installed = False


def install() -> None:
    """Installs the C checksum and the password filters into kafka-python, once per process."""
    global _installed
    with _lock:
        if _installed:
            return
        _use_native_crc32c()
        for name in _LOGGERS:
            logging.getLogger(name).addFilter(_HidePasswords())
        _installed = True


def installed() -> bool:
    """True once install() has run in this process."""
    return _installed


def hide_password(password: str | None) -> None:
    """Masks `password` in kafka-python's log records from now on (once install() has run)."""
    if password:
        _HidePasswords.passwords.add(password)


def _use_native_crc32c() -> None:
    """Makes kafka-python checksum record batches in C when the `crc32c` package is missing.

    kafka-python computes the CRC-32C of every record batch with the `crc32c` package if it is
    installed, else in pure Python: ~15 ms per 64 KiB chunk, which caps a producer or reader at
    a few MB/s. google-crc32c (a streamtap dependency already) computes the same checksum in C.
    """
    try:
        from kafka.record import default_records, util
    except ImportError:  # pragma: no cover - another kafka-python layout: leave it alone
        return
    if getattr(util, "crc32c_c", True) is not None or not hasattr(default_records, "calc_crc32c"):
        return
    import google_crc32c

    def calc_crc32c(memview) -> int:
        return google_crc32c.value(bytes(memview))

    default_records.calc_crc32c = calc_crc32c


class _HidePasswords(logging.Filter):
    """Masks the SASL passwords this process uses in kafka-python's log records.

    At DEBUG kafka-python logs the admin client's whole configuration and every request, raw
    bytes included, so the password shows in clear text (always with PLAIN, whose token carries
    it). Every client streamtap opens registers its password here (hide_password).
    """

    passwords: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.passwords:
            return True
        message = record.getMessage()
        masked = message
        for password in tuple(self.passwords):  # a snapshot: other threads may add one
            for form in (password, repr(password.encode("utf-8"))[2:-1]):
                masked = masked.replace(form, "********")
        if masked != message:
            record.msg, record.args = masked, None
        return True
