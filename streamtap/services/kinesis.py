"""A Kinesis-compatible endpoint on loopback: the moto server (`moto[server]`), for demos and tests.

`streamtap services up kinesis` runs `python -m moto.server -H 127.0.0.1 -p 4566` as a daemon
(pid and log in the state dir, so `down` and `status` work from another shell). It speaks the real
Kinesis JSON API over HTTP, so boto3 and the sink talk to it exactly as to AWS: PutRecords with
its 500-record / 5 MiB / 1 MiB limits, ListShards, GetRecords, SplitShard, MergeShards. It never
throttles (the tests put a fault-injecting proxy in front of it) and keeps its data in memory:
`down` forgets every stream. It accepts any credentials and any region.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import urllib.error
import urllib.request
from pathlib import Path

from streamtap.errors import ServiceError
from streamtap.services import process

__all__ = ["KinesisService"]

log = logging.getLogger(__name__)

_START_TIMEOUT = 60.0


class KinesisService:
    """The moto server on 127.0.0.1:port; `up()` returns {"endpoint_url": "http://127.0.0.1:4566", ...}."""

    name = "kinesis"

    @staticmethod
    def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--port",
            type=int,
            default=4566,
            help="TCP port on 127.0.0.1 of the endpoint (default 4566, LocalStack's)",
        )

    def __init__(self, state_dir: Path | None = None, port: int = 4566) -> None:
        """
        Args:
            state_dir: pid, log and info files; default `process.state_dir("kinesis")`.
            port: TCP port on 127.0.0.1.
        """
        self.state_dir = Path(state_dir) if state_dir is not None else process.state_dir(self.name)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = int(port)

    @property
    def log_path(self) -> Path:
        return self.state_dir / "moto.log"

    @property
    def _pid_path(self) -> Path:
        return self.state_dir / "moto.pid"

    @property
    def _info_path(self) -> Path:
        return self.state_dir / "info.json"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self, timeout: float = _START_TIMEOUT) -> dict[str, str]:
        """Starts the endpoint (idempotent: a running one from this state dir is reused)."""
        if process.daemon_pid(self._pid_path) is not None:
            self._adopt_running()
            return self._info()
        if importlib.util.find_spec("moto") is None:
            raise ServiceError(
                "the moto server is not installed: pip install 'moto[server]' (it is in "
                "streamtap's test extra: pip install -e '.[test]')"
            )
        if process.port_open(self.port):
            raise ServiceError(
                f"cannot start kinesis: 127.0.0.1:{self.port} is already in use by another "
                "program; choose another --port"
            )
        self.log_path.write_bytes(b"")
        pid = process.start_daemon(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            self._pid_path,
            self.log_path,
            cwd=self.state_dir,
        )
        try:
            process.wait_for_port(self.port, timeout, self.log_path, pid)
            self._wait_until_answering(timeout)
        except BaseException:
            self.down()
            raise
        self._info_path.write_text(json.dumps({"port": self.port}))
        log.info("kinesis: moto server pid %d on %s", pid, self.endpoint_url)
        return self._info()

    def down(self) -> None:
        """Stops the endpoint; its streams are gone (moto keeps them in memory only)."""
        process.stop_daemon(self._pid_path)
        self._info_path.unlink(missing_ok=True)

    def status(self) -> dict[str, str] | None:
        if process.daemon_pid(self._pid_path) is None:
            return None
        self._adopt_running()
        return self._info()

    def _adopt_running(self) -> None:
        """Takes the port of the endpoint already running from this state dir."""
        try:
            self.port = int(json.loads(self._info_path.read_text())["port"])
        except (OSError, ValueError, KeyError):
            pass

    def _wait_until_answering(self, timeout: float) -> None:
        """Waits until the server answers HTTP (its port opens a moment before the app loads)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=5):
                    return
            except urllib.error.HTTPError:
                return  # it answered
            except OSError as error:
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"the moto server on {self.endpoint_url} does not answer ({error}); "
                        f"see {self.log_path}"
                    ) from None
                time.sleep(0.2)

    def _info(self) -> dict[str, str]:
        return {
            "endpoint_url": self.endpoint_url,
            "region": "any (e.g. us-east-1)",
            "credentials": "any (moto does not check them; none needed for loopback endpoints)",
            "sink": f"type: kinesis, stream: NAME, endpoint_url: {self.endpoint_url}, "
            "create_stream: true",
            "log": str(self.log_path),
        }
