"""A real internet radio station on loopback: Icecast 2 fed by one ffmpeg MP3 encoder per mount.

`IcecastService(...).up()` writes an icecast.xml into its state directory, starts Debian's
`icecast2` bound to 127.0.0.1 only, then starts one `ffmpeg -re` per mount that encodes a
generated signal (a sine tone mixed with seeded pink noise, different per mount) to MP3 and
sends it to Icecast in real time. Listeners get what they would get from a real station:
`200 audio/mpeg`, an initial burst, live data at the configured bitrate, and ICY metadata
(`StreamTitle`) when they send `Icy-MetaData: 1`.

Facts measured with Icecast 2.4.4 and ffmpeg 5.1 (Debian 12) that callers should know:

- A new listener does NOT start at an MP3 frame boundary. Icecast keeps a non-Ogg stream as
  the 2048-byte blocks it read from the source and may start a listener at any of them, so a
  capture begins with 0..~420 bytes of a partial frame. ffmpeg's MP3 demuxer skips that junk
  silently. A capture that is cut mid-frame at its end makes `ffmpeg -v error` print
  "invalid new backstep -1" (exit status still 0); trimmed to its last complete frame it
  decodes with no message at all.
- Icecast logs `Unsupported or legacy stream type: "audio/mpeg"` when a source logs in. That
  is harmless: the "generic" handler is its MP3 handler and it does ICY metadata.
- Icecast listens with a backlog of 5 connections; a benchmark that opens hundreds of
  listeners at once sees some SYNs dropped and retried after 1 s. Stagger or retry connects.
"""

from __future__ import annotations

import argparse
import base64
import grp
import json
import logging
import os
import pwd
import re
import resource
import secrets
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import escape

from streamtap.services import process
from streamtap.errors import ServiceError

__all__ = ["IcecastService"]

logger = logging.getLogger(__name__)

_INSTALL_HINT = "install with apt-get install icecast2 ffmpeg"
_MOUNT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_BITRATE = re.compile(r"^[1-9][0-9]*k?$")
# Icecast's per-mount queue (bytes) that a listener may fall behind before it is dropped.
# It is one shared buffer per mount, not per listener, so being generous costs little memory:
# 8 MiB is ~8.7 minutes at 128 kbit/s, enough for a paused or throttled test client.
_QUEUE_SIZE = 8 * 1024 * 1024


def _is_aac(mount: str) -> bool:
    """A mount named *.aac streams AAC (ADTS frames, audio/aac); every other one MP3."""
    return mount.endswith(".aac")


class IcecastService:
    """Icecast 2 on 127.0.0.1:port with `mounts` live MP3 streams, managed through pid files.

    State (config, credentials, logs, pid files) lives in `state_dir`, so `down()` and
    `status()` work from another process than the one that called `up()`.
    """

    name = "icecast"

    @staticmethod
    def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
        """Adds --port, --mounts and --bitrate (dest: port, mounts, bitrate) to `parser`."""
        parser.add_argument("--port", type=int, default=8000,
                            help="TCP port on 127.0.0.1 to listen on (default 8000)")
        parser.add_argument("--mounts", type=int, default=3,
                            help="number of mounts radio1..radioN (default 3)")
        parser.add_argument("--bitrate", default="128k",
                            help="MP3 bitrate of every mount, ffmpeg syntax (default 128k)")

    def __init__(
        self,
        state_dir: Path | None = None,
        port: int = 8000,
        mounts: int | Sequence[str] = 3,
        bitrate: str = "128k",
        max_clients: int = 2000,
    ) -> None:
        """
        Args:
            state_dir: where config, credentials, logs and pid files go; default
                `streamtap.services.process.state_dir("icecast")`.
            port: TCP port on 127.0.0.1.
            mounts: a count N (mounts radio1..radioN) or explicit mount names (a name ending
                in .aac streams AAC in ADTS frames, audio/aac, instead of MP3).
            bitrate: MP3 bitrate per mount in ffmpeg syntax, e.g. "128k" (bits per second).
            max_clients: the most listeners Icecast accepts, over all mounts.
        """
        self.state_dir = Path(state_dir) if state_dir is not None else process.state_dir(self.name)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = int(port)
        if isinstance(mounts, int):
            if mounts < 1:
                raise ValueError(f"mounts must be at least 1, got {mounts}")
            names = [f"radio{i}" for i in range(1, mounts + 1)]
        else:
            names = [m.strip("/") for m in mounts]
        for m in names:
            if not _MOUNT_NAME.match(m):
                raise ValueError(f"invalid mount name {m!r}: use letters, digits, '.', '_', '-'")
        if not names or len(set(names)) != len(names):
            raise ValueError(f"mount names must be non-empty and unique, got {names}")
        self.mounts: list[str] = names
        if not _BITRATE.match(bitrate):
            raise ValueError(f"invalid bitrate {bitrate!r}: use e.g. '128k'")
        self.bitrate = bitrate
        self.max_clients = int(max_clients)

    # ---- paths -------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.state_dir / "icecast.xml"

    @property
    def log_path(self) -> Path:
        """Icecast's error and access log (it writes both to stderr, which goes here)."""
        return self.state_dir / "icecast.log"

    @property
    def _pid_path(self) -> Path:
        return self.state_dir / "icecast.pid"

    @property
    def _info_path(self) -> Path:
        return self.state_dir / "info.json"

    @property
    def _credentials_path(self) -> Path:
        return self.state_dir / "credentials.json"

    def _feeder_pid_path(self, mount: str) -> Path:
        return self.state_dir / f"ffmpeg-{mount}.pid"

    def _feeder_log_path(self, mount: str) -> Path:
        return self.state_dir / f"ffmpeg-{mount}.log"

    # ---- public API ----------------------------------------------------------------------------

    def up(self, timeout: float = 30.0) -> dict[str, str]:
        """Starts Icecast and one feeder per mount; returns when every mount streams MP3.

        Idempotent: if Icecast already runs from this state dir, its info is returned (and
        feeders that died are restarted). `timeout` (seconds) bounds each wait.
        Raises ServiceError with the tail of the relevant log if anything fails to start.
        """
        if process.daemon_pid(self._pid_path) is not None:
            self._adopt_running()
            missing = [m for m in self.mounts if process.daemon_pid(self._feeder_pid_path(m)) is None]
            if missing:
                logger.warning("icecast: restarting dead feeders for %s", ", ".join(missing))
                self._start_feeders(missing, timeout)
            return self._info()

        icecast_bin = shutil.which("icecast2") or shutil.which("icecast")
        ffmpeg_bin = shutil.which("ffmpeg")
        if icecast_bin is None or ffmpeg_bin is None:
            missing_bins = [n for n, b in (("icecast2", icecast_bin), ("ffmpeg", ffmpeg_bin)) if b is None]
            raise ServiceError(f"{' and '.join(missing_bins)} not found on PATH; {_INSTALL_HINT}")

        # Feeders left over from a crashed run would hold stale pid files: clear them first.
        for pid_file in self.state_dir.glob("ffmpeg-*.pid"):
            process.stop_daemon(pid_file, timeout=5)
        if process.port_open(self.port):
            raise ServiceError(
                f"cannot start icecast: 127.0.0.1:{self.port} is already in use by another program; "
                f"choose another --port"
            )

        self._write_config()
        started = time.monotonic()
        # Keep earlier runs' log lines out of the error tail of this run.
        self.log_path.write_bytes(b"")
        pid = process.start_daemon(self._icecast_command(icecast_bin),
                                   self._pid_path, self.log_path, cwd=self.state_dir)
        logger.info("icecast: started pid %d on 127.0.0.1:%d (state %s)", pid, self.port, self.state_dir)
        try:
            try:
                process.wait_for_port(self.port, timeout, self.log_path, pid)
            except ServiceError as err:
                raise ServiceError(f"icecast did not start: {err}") from None
            self._write_info()
            self._start_feeders(self.mounts, timeout)
        except BaseException:
            # Leave nothing half-running behind a failed up().
            self.down()
            raise
        logger.info("icecast: %d mount(s) streaming %.1f s after start",
                    len(self.mounts), time.monotonic() - started)
        return self._info()

    def down(self) -> None:
        """Stops the feeders, then Icecast. Safe to call when nothing runs."""
        # Feeders first: stopping Icecast first would make them log connection errors.
        for pid_file in sorted(self.state_dir.glob("ffmpeg-*.pid")):
            if process.stop_daemon(pid_file, timeout=5):
                logger.info("icecast: stopped feeder %s", pid_file.stem.removeprefix("ffmpeg-"))
        if process.stop_daemon(self._pid_path):
            logger.info("icecast: stopped (state %s)", self.state_dir)
        self._info_path.unlink(missing_ok=True)

    def status(self) -> dict[str, str] | None:
        """Info about the running station plus pids and feeder health; None if Icecast is down."""
        pid = process.daemon_pid(self._pid_path)
        if pid is None:
            return None
        self._adopt_running()
        info = self._info()
        info["pid"] = str(pid)
        alive = [m for m in self.mounts if process.daemon_pid(self._feeder_pid_path(m)) is not None]
        info["feeders"] = f"{len(alive)}/{len(self.mounts)} running"
        return info

    def mount_url(self, mount: str) -> str:
        """The listener URL of `mount` ("radio1" or "/radio1")."""
        self._adopt_running()
        return f"{self._base_url()}/{mount.strip('/')}"

    def set_title(self, mount: str, title: str) -> None:
        """Sets the mount's stream title via Icecast's admin API.

        Listeners that asked for `Icy-MetaData: 1` see `StreamTitle='<title>';` (UTF-8) in
        the next metadata block after the data that is live now (after their burst).
        """
        self._adopt_running()
        query = urllib.parse.urlencode(
            {"mount": "/" + mount.strip("/"), "mode": "updinfo", "song": title, "charset": "UTF-8"}
        )
        creds = self._credentials()
        token = base64.b64encode(f"admin:{creds['admin']}".encode()).decode()
        request = urllib.request.Request(
            f"{self._base_url()}/admin/metadata?{query}", headers={"Authorization": f"Basic {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                body = response.read().decode(errors="replace")
        except urllib.error.HTTPError as err:
            body = err.read().decode(errors="replace")
            raise ServiceError(f"icecast refused the title for {mount}: HTTP {err.code} {body.strip()}") from None
        except OSError as err:
            raise ServiceError(f"cannot reach icecast at {self._base_url()}: {err}") from None
        if "<return>1</return>" not in body:
            raise ServiceError(f"icecast did not set the title for {mount}: {body.strip()}")

    # ---- internals -----------------------------------------------------------------------------

    def _base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _info(self) -> dict[str, str]:
        base = self._base_url()
        return {
            "url": base,
            "mounts": " ".join(f"{base}/{m}" for m in self.mounts),
            "status_json": f"{base}/status-json.xsl",
            "bitrate": self.bitrate,
            "state_dir": str(self.state_dir),
            "log": str(self.log_path),
        }

    def _write_info(self) -> None:
        self._info_path.write_text(json.dumps(
            {"port": self.port, "mounts": self.mounts, "bitrate": self.bitrate,
             "max_clients": self.max_clients}
        ))

    def _adopt_running(self) -> None:
        """If a station runs from this state dir, use its port and mounts, not our defaults.

        So `IcecastService().set_title(...)` in a test process reaches the station that
        `streamtap services up icecast --port 9000` started.
        """
        if process.daemon_pid(self._pid_path) is None:
            return
        try:
            saved = json.loads(self._info_path.read_text())
        except (OSError, ValueError):
            return
        if saved.get("port") != self.port or saved.get("mounts") != self.mounts:
            logger.debug("icecast: adopting running station on port %s", saved.get("port"))
        self.port = int(saved.get("port", self.port))
        self.mounts = list(saved.get("mounts", self.mounts))
        self.bitrate = str(saved.get("bitrate", self.bitrate))
        self.max_clients = int(saved.get("max_clients", self.max_clients))

    def _credentials(self) -> dict[str, str]:
        """Random source/relay/admin passwords, created once per state dir (file mode 0600)."""
        try:
            creds = json.loads(self._credentials_path.read_text())
            if all(creds.get(k) for k in ("source", "relay", "admin")):
                return creds
        except (OSError, ValueError):
            pass
        # token_hex: safe unescaped in XML and in the icecast:// URL's userinfo.
        creds = {k: secrets.token_hex(16) for k in ("source", "relay", "admin")}
        fd = os.open(self._credentials_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(creds, f)
        return creds

    def _changeowner(self) -> str:
        """Icecast refuses to run as root unless told which user to switch to after binding."""
        if os.geteuid() != 0:
            return ""
        for user, group in (("icecast2", "icecast"), ("nobody", "nogroup"), ("nobody", "nobody")):
            try:
                pwd.getpwnam(user)
                grp.getgrnam(group)
            except KeyError:
                continue
            return (f"    <changeowner><user>{user}</user><group>{group}</group></changeowner>\n")
        raise ServiceError("running as root but neither user icecast2 nor nobody exists; " + _INSTALL_HINT)

    def _write_config(self) -> None:
        creds = self._credentials()
        share = Path("/usr/share/icecast2")
        # Logs go to stderr ("-"), which start_daemon sends to icecast.log. Icecast opens log
        # files only after dropping root to the icecast2 user, and that user usually cannot
        # enter a root-owned 0700 state dir (pytest's tmp dirs are such); stderr was opened by
        # us, before the switch, so logging works wherever the state dir is.
        config = f"""<icecast>
  <location>loopback</location>
  <admin>streamtap@localhost</admin>
  <limits>
    <clients>{self.max_clients + len(self.mounts) + 8}</clients>
    <sources>{len(self.mounts) + 2}</sources>
    <queue-size>{_QUEUE_SIZE}</queue-size>
    <client-timeout>30</client-timeout>
    <header-timeout>15</header-timeout>
    <source-timeout>10</source-timeout>
    <burst-on-connect>1</burst-on-connect>
    <burst-size>65535</burst-size>
  </limits>
  <authentication>
    <source-password>{escape(creds['source'])}</source-password>
    <relay-password>{escape(creds['relay'])}</relay-password>
    <admin-user>admin</admin-user>
    <admin-password>{escape(creds['admin'])}</admin-password>
  </authentication>
  <hostname>127.0.0.1</hostname>
  <listen-socket>
    <port>{self.port}</port>
    <bind-address>127.0.0.1</bind-address>
  </listen-socket>
  <mount type="default">
    <!-- ICY StreamTitle bytes are sent in this charset; Icecast's default is ISO-8859-1. -->
    <charset>UTF-8</charset>
  </mount>
  <fileserve>1</fileserve>
  <paths>
    <basedir>{escape(str(share))}</basedir>
    <logdir>{escape(str(self.state_dir))}</logdir>
    <webroot>{escape(str(share / 'web'))}</webroot>
    <adminroot>{escape(str(share / 'admin'))}</adminroot>
    <alias source="/" destination="/status.xsl"/>
  </paths>
  <logging>
    <accesslog>-</accesslog>
    <errorlog>-</errorlog>
    <loglevel>3</loglevel>
  </logging>
  <security>
    <chroot>0</chroot>
{self._changeowner()}  </security>
</icecast>
"""
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(config)

    def _icecast_command(self, icecast_bin: str) -> list[str]:
        """icecast2 -c icecast.xml, with enough file descriptors for max_clients listeners.

        Icecast needs one descriptor per listener and source; a 1024 soft limit (common in CI)
        would make it fail accept() long before max_clients. The limit is raised in a shell
        that then execs icecast (same pid), so the caller's own limits stay untouched.
        """
        command = [icecast_bin, "-c", str(self.config_path)]
        needed = self.max_clients + len(self.mounts) + 128
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY or soft >= needed:
            return command
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if target < needed:
            logger.warning("icecast: open-file limit %d < %d; it will refuse listeners beyond ~%d",
                           hard, needed, hard - 128)
        return ["/bin/sh", "-c", f'ulimit -n {target} 2>/dev/null; exec "$@"', "sh", *command]

    def _feeder_command(self, mount: str, index: int) -> list[str]:
        """ffmpeg encoding a per-mount signal to MP3 and sending it to Icecast in real time.

        The signal is a sine tone (330 Hz, 440 Hz, ...) plus pink noise seeded by the mount's
        index: deterministic per mount, distinct between mounts, and noisy enough that MP3
        bytes differ frame to frame (so byte comparisons in tests mean something).
        """
        ffmpeg_bin = shutil.which("ffmpeg") or "ffmpeg"
        creds = self._credentials()
        frequency = 220 + 110 * index
        graph = (
            f"sine=frequency={frequency}:sample_rate=44100[tone];"
            f"anoisesrc=color=pink:seed={index}:amplitude=0.25:sample_rate=44100[noise];"
            "[tone][noise]amix=inputs=2:normalize=0,aformat=channel_layouts=stereo[out0]"
        )
        if _is_aac(mount):  # AAC in ADTS frames, as AAC radio stations send it
            codec = ["-c:a", "aac", "-b:a", self.bitrate, "-content_type", "audio/aac", "-f", "adts"]
        else:
            # A live stream has no ID3 tag or Xing header: listeners would never see them.
            codec = ["-c:a", "libmp3lame", "-b:a", self.bitrate, "-id3v2_version", "0",
                     "-write_xing", "0", "-content_type", "audio/mpeg", "-f", "mp3"]
        return [
            ffmpeg_bin, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "warning",
            # -re: read (generate) input at its native rate, i.e. a live station, not a flood.
            "-re", "-f", "lavfi", "-i", graph, *codec, "-ice_name", mount,
            f"icecast://source:{creds['source']}@127.0.0.1:{self.port}/{mount}",
        ]

    def _start_feeders(self, mounts: Sequence[str], timeout: float) -> None:
        for mount in mounts:
            index = self.mounts.index(mount) + 1
            self._feeder_log_path(mount).write_bytes(b"")
            pid = process.start_daemon(self._feeder_command(mount, index),
                                       self._feeder_pid_path(mount), self._feeder_log_path(mount))
            logger.info("icecast: started feeder pid %d for /%s", pid, mount)
        for mount in mounts:
            self._wait_streaming(mount, timeout)

    def _wait_streaming(self, mount: str, timeout: float) -> None:
        """Waits until a GET of the mount answers 200 audio/mpeg with bytes."""
        url = f"{self._base_url()}/{mount}"
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            if process.daemon_pid(self._feeder_pid_path(mount)) is None:
                raise ServiceError(
                    f"the ffmpeg feeder for /{mount} exited; see {self._feeder_log_path(mount)}:\n"
                    f"{self._tail(self._feeder_log_path(mount))}\nicecast log {self.log_path}:\n"
                    f"{self._tail(self.log_path)}\n(if a tool is missing, {_INSTALL_HINT})"
                )
            if process.daemon_pid(self._pid_path) is None:
                raise ServiceError(f"icecast exited; see {self.log_path}:\n{self._tail(self.log_path)}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    ctype = response.headers.get("Content-Type", "")
                    wanted = "audio/aac" if _is_aac(mount) else "audio/mpeg"
                    if response.status == 200 and ctype.startswith(wanted) and response.read(1):
                        return
                    last_error = f"HTTP {response.status} {ctype}"
            except urllib.error.HTTPError as err:
                last_error = f"HTTP {err.code}"  # 404 until the source has logged in
            except OSError as err:
                last_error = str(err)
            time.sleep(0.1)
        raise ServiceError(
            f"/{mount} is not streaming after {timeout:.0f} s (last answer: {last_error}); "
            f"see {self._feeder_log_path(mount)}:\n{self._tail(self._feeder_log_path(mount))}\n"
            f"icecast log {self.log_path}:\n{self._tail(self.log_path)}"
        )

    def _tail(self, path: Path, lines: int = 20) -> str:
        """The end of a log with the passwords blanked: ffmpeg errors may quote the source URL."""
        text = process._tail(path, lines)
        try:
            for secret in self._credentials().values():
                text = text.replace(secret, "***")
        except OSError:
            pass
        return text
