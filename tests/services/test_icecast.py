"""IcecastService against the real icecast2 and ffmpeg binaries, on loopback."""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path

import pytest

from streamtap.services import process
from streamtap.services.icecast import IcecastService
from streamtap.errors import ServiceError
from streamtap.services.process import free_port

# Harmless if tests/conftest.py registers the plugin too: pytest imports a plugin name once.
pytest_plugins = ["tests.fixtures.icecast"]
# Importing the plugin's helpers below, before pytest registers it, would otherwise leave the
# module without assertion rewriting (and make pytest warn about it).
pytest.register_assert_rewrite("tests.fixtures.icecast")
from tests.fixtures.icecast import (  # noqa: E402
    AAC_MOUNT,
    MP3_MOUNTS,
    mp3_decode_errors,
    mp3_frame_span,
    read_stream,
    wait_for_icy_title,
)

CAPTURE = 32 * 1024  # bytes per mount: ~2 s of 128 kbit/s audio, served from the burst


def test_mounts_stream_mp3_that_decodes(icecast: IcecastService, tmp_path: Path) -> None:
    captures = {}
    for mount in ("radio1", "radio2", "radio3"):
        data, ctype = read_stream(icecast.mount_url(mount), CAPTURE)
        assert ctype.startswith("audio/mpeg")
        assert len(data) == CAPTURE
        start, end = mp3_frame_span(data)
        # A new listener starts wherever Icecast's 2048-byte read blocks start, not at a
        # frame boundary; the partial frame before the first header is < 1 frame (418 B).
        assert 0 <= start < 1441, f"no MP3 frame near the start of {mount}"
        assert end > CAPTURE - 1441
        # The leading partial frame is skipped silently by ffmpeg; only a frame cut off at the
        # end is reported ("invalid new backstep"), so cut at the last complete frame.
        assert mp3_decode_errors(data[:end], tmp_path / f"{mount}.mp3") == ""
        captures[mount] = data[start:end]
    # Different tone and noise seed per mount: no frame of radio1 appears in radio2.
    assert captures["radio1"] != captures["radio2"]
    assert captures["radio1"][:4096] not in captures["radio2"]
    assert captures["radio2"][1000:1400] not in captures["radio3"]


def test_set_title_reaches_icy_listeners(icecast: IcecastService) -> None:
    title = f"Test Ünïcode – {uuid.uuid4().hex[:8]} it's"
    titles = wait_for_icy_title(
        icecast.mount_url("radio2"), title, timeout=20, on_connect=lambda: icecast.set_title("radio2", title)
    )
    assert titles[-1] == title


def test_set_title_unknown_mount_fails(icecast: IcecastService) -> None:
    with pytest.raises(ServiceError, match="nosuchmount"):
        icecast.set_title("nosuchmount", "x")


def test_status_and_up_is_idempotent(icecast: IcecastService) -> None:
    status = icecast.status()
    assert status is not None
    assert status["feeders"] == f"{len(icecast.mounts)}/{len(icecast.mounts)} running"
    assert status["url"] == f"http://127.0.0.1:{icecast.port}"
    assert status["mounts"].split() == [icecast.mount_url(m) for m in (*MP3_MOUNTS, AAC_MOUNT)]
    started = time.monotonic()
    info = icecast.up()
    assert time.monotonic() - started < 1.0  # no restart
    assert info == {k: v for k, v in status.items() if k not in ("pid", "feeders")}
    assert icecast.status()["pid"] == status["pid"]
    # Another process (here: another object) on the same state dir sees the same station,
    # even when constructed with the default port.
    other = IcecastService(state_dir=icecast.state_dir)
    assert other.status()["url"] == status["url"]
    assert other.mount_url("radio1") == icecast.mount_url("radio1")


def test_down_and_feeder_restart(tmp_path: Path) -> None:
    service = IcecastService(state_dir=tmp_path / "ice", port=free_port(), mounts=["solo"], bitrate="64k")
    assert service.status() is None
    try:
        info = service.up()
        assert info["mounts"] == service.mount_url("solo")
        # A dead feeder is restarted by up() without restarting Icecast.
        pid = service.status()["pid"]
        process.stop_daemon(tmp_path / "ice" / "ffmpeg-solo.pid")
        assert service.status()["feeders"] == "0/1 running"
        service.up()
        assert service.status()["feeders"] == "1/1 running"
        assert service.status()["pid"] == pid
    finally:
        service.down()
    assert service.status() is None
    assert not process.port_open(service.port)
    assert not list((tmp_path / "ice").glob("*.pid"))
    service.down()  # stopping a stopped station is a no-op


def test_up_fails_when_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        service = IcecastService(state_dir=tmp_path / "ice", port=sock.getsockname()[1], mounts=1)
        with pytest.raises(ServiceError, match="already in use"):
            service.up()
    assert service.status() is None


def test_up_fails_with_log_tail_when_bind_fails(tmp_path: Path) -> None:
    # Bound but not listening: the pre-check's connect is refused, Icecast's bind() fails.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        service = IcecastService(state_dir=tmp_path / "ice", port=sock.getsockname()[1], mounts=1)
        with pytest.raises(ServiceError, match="(?s)icecast did not start.*listener socket"):
            service.up()
    assert service.status() is None
    assert not list((tmp_path / "ice").glob("*.pid"))


def test_up_fails_clearly_without_binaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    service = IcecastService(state_dir=tmp_path / "ice", port=free_port())
    with pytest.raises(ServiceError, match="apt-get install icecast2 ffmpeg"):
        service.up()


def test_passwords_stay_in_state_dir(icecast: IcecastService) -> None:
    creds = icecast.state_dir / "credentials.json"
    assert creds.stat().st_mode & 0o077 == 0
    text = creds.read_text()
    assert "hackme" not in text
    info = " ".join(icecast.status().values())
    for secret in json.loads(text).values():
        assert secret not in info
