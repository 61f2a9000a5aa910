"""Secrets never printed: URL user info, query values and header values of an http source.

`streamtap.redaction` on its own, then whole captures against a real loopback HTTP server that
fails in every way that prints the URL (mid-stream close, redirects, 401, 503, a stall, a
redirect loop) before it streams: every status line, summary line, log record (at DEBUG) and
the CLI's output are searched for the secrets, which the server must have received.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import subprocess
import uuid

import pytest

from streamtap.pipelines.run import run_capture
from streamtap.plugins import parse_config
from streamtap.redaction import redact_headers, redact_url
from tests.helpers import STREAMTAP, assert_verified, write_config
from tests.io.sources.http_servers import ServerThread, head

# --- redact_url ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, shown",
    [
        ("https://radio.example/live.mp3", "https://radio.example/live.mp3"),
        ("https://dj:pw@radio.example:8443/live?q=1", "https://***@radio.example:8443/live?q=***"),
        ("http://token@h/", "http://***@h/"),
        ("http://h/s?token=abc&format=mp3", "http://h/s?token=***&format=***"),
        ("http://h/s?abc123", "http://h/s?***"),
        ("http://h/s?a=&b", "http://h/s?a=***&***"),
        ("http://h/s#access_token=x", "http://h/s#***"),
        ("http://user:pa/ss@host/x", "http://***"),  # an unescaped '/' in the password
        ("http://user:pa#ss@host/x", "http://***"),
        ("http://[::1/x?t=1", "<invalid URL>"),
    ],
)
def test_redact_url_hides_user_info_query_values_and_fragment(url, shown):
    assert redact_url(url) == shown


def test_redact_headers_keeps_the_names_only():
    assert redact_headers({"Authorization": "Bearer x", "X-Key": "y"}) == {
        "Authorization": "***", "X-Key": "***"}


# --- captures against a server that fails first ---------------------------------------------------


class _Secrets:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        self.token = f"tok{tag}T"
        self.password = f"pw{tag}P"
        self.key = f"key{tag}K"
        self.cookie = f"ck{tag}C"
        self.server_token = f"srv{tag}S"  # a token the server hands out in a redirect

    def all(self) -> list[str]:
        return [self.token, self.password, self.key, self.cookie, self.server_token]

    def assert_absent(self, text: str, where: str) -> None:
        for secret in self.all():
            assert secret not in text, f"{secret} printed in {where}:\n" + "\n".join(
                line for line in text.splitlines() if secret in line)


def _failing_then_streaming_server(secrets: _Secrets) -> ServerThread:
    """Answers /live with a failure of each kind that names the URL, then streams for good."""
    attempts = {"live": 0}

    async def handle(request, writer: asyncio.StreamWriter) -> None:
        path = request.target.split("?")[0]
        if path == "/moved":
            writer.write(head("HTTP/1.1 503 Service Unavailable"))
            return
        attempts["live"] += 1
        attempt = attempts["live"]
        if attempt == 1:  # closes mid-stream
            writer.write(head(headers={"Content-Length": "50000"}) + b"a" * 1000)
        elif attempt == 2:  # a redirect carrying a token of the server's, to a failing URL
            location = f"/moved?sig={secrets.server_token}&expires=1"
            writer.write(head("HTTP/1.1 302 Found", {"Location": location}))
        elif attempt == 3:
            writer.write(head("HTTP/1.1 401 Unauthorized"))
        elif attempt == 4:  # stalls past read_timeout
            writer.write(head(headers={"Content-Type": "audio/mpeg"}) + b"b" * 500)
            await writer.drain()
            await asyncio.sleep(3)
        elif attempt == 5:  # a redirect back to where it came from
            writer.write(head("HTTP/1.1 301 Moved", {"Location": request.target}))
        else:  # streams until the client leaves
            writer.write(head(headers={"Content-Type": "audio/mpeg"}))
            while True:
                writer.write(os.urandom(4096))
                await writer.drain()
                await asyncio.sleep(0.05)
        await writer.drain()

    return ServerThread(handle)


def _source(url: str, secrets_in_config: dict[str, str]) -> dict:
    return {
        "id": "radio",
        "type": "http",
        "url": url,
        "headers": {"X-Api-Key": secrets_in_config["key"],
                    "Cookie": f"session={secrets_in_config['cookie']}"},
        "read_timeout": 1.0,
        "reconnect": {"initial_delay": 0.05, "max_delay": 0.2},
    }


def _assert_the_server_got_the_secrets(server: ServerThread, secrets: _Secrets) -> None:
    live = [r for r in server.requests if r.target.startswith("/live")]
    assert len(live) >= 6, [r.target for r in server.requests]
    first = live[0]
    assert first.target == f"/live?token={secrets.token}&station=1"
    assert first.headers["x-api-key"] == secrets.key
    assert first.headers["cookie"] == f"session={secrets.cookie}"
    basic = base64.b64encode(f"listener:{secrets.password}".encode()).decode()
    assert first.headers["authorization"] == f"Basic {basic}"
    assert any(r.target.startswith(f"/moved?sig={secrets.server_token}") for r in server.requests)


def test_an_in_process_capture_prints_no_secret_in_status_summary_or_logs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    secrets = _Secrets()
    with _failing_then_streaming_server(secrets) as server:
        url = server.url(f"/live?token={secrets.token}&station=1",
                         userinfo=f"listener:{secrets.password}@")
        config = parse_config({
            "sources": [_source(url, {"key": secrets.key, "cookie": secrets.cookie})],
            "chunk": {"max_bytes": 65536, "max_seconds": 0.5},
            "window_seconds": 2,
            "sinks": [{"type": "parquet", "path": str(tmp_path / "capture")}],
        })
        out = io.StringIO()
        code = run_capture(config, ["--runner=FnApiRunner"], duration=8, status_interval=0.5,
                           out=out)
    output = out.getvalue()
    assert code == 0, output
    _assert_the_server_got_the_secrets(server, secrets)
    # Every failure was reported, with the (redacted) URL.
    assert "radio" in output and "errors 0" not in output.split("summary")[-1], output
    assert "token=***" in caplog.text and "sig=***" in caplog.text
    for expected in ("mid-stream", "HTTP 503", "HTTP 401", "no data for 1 s", "redirect loop"):
        assert expected in caplog.text, expected
    secrets.assert_absent(output, "the status and summary lines")
    secrets.assert_absent(caplog.text, "the log")
    secrets.assert_absent(repr(config), "the config's repr")
    assert_verified(str(tmp_path / "capture"), streams=1)


def test_the_cli_prints_no_secret_from_env_variables_in_run_or_validate(tmp_path):
    secrets = _Secrets()
    env = dict(os.environ, ST_TOKEN=secrets.token, ST_PASSWORD=secrets.password,
               ST_KEY=secrets.key, ST_COOKIE=secrets.cookie)
    with _failing_then_streaming_server(secrets) as server:
        url = f"http://listener:${{ST_PASSWORD}}@127.0.0.1:{server.port}/live?token=${{ST_TOKEN}}&station=1"
        config = write_config(tmp_path / "pipeline.yaml", {
            "sources": [_source(url, {"key": "${ST_KEY}", "cookie": "${ST_COOKIE}"})],
            "chunk": {"max_bytes": 65536, "max_seconds": 0.5},
            "window_seconds": 2,
            "sinks": [{"type": "parquet", "path": str(tmp_path / "capture")}],
        })
        run = subprocess.run(
            [*STREAMTAP, "--log-level", "debug", "run", str(config), "--duration", "10",
             "--status-interval", "0.5"],
            env=env, capture_output=True, text=True, timeout=180, check=False,
        )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    _assert_the_server_got_the_secrets(server, secrets)
    assert "token=***" in output and "HTTP 401" in output and "redirect loop" in output
    secrets.assert_absent(output, "`streamtap run`'s output")

    # validate: a URL it refuses names the problem, not the secrets in it.
    bad = write_config(tmp_path / "bad.yaml", {
        "sources": [_source(
            "http://listener:${ST_PASSWORD}@127.0.0.1:99999/live?token=${ST_TOKEN}",
            {"key": "${ST_KEY}", "cookie": "${ST_COOKIE}"},
        ), _source("ftp://u:${ST_PASSWORD}@h/x?token=${ST_TOKEN}", {"key": "", "cookie": ""})
            | {"id": "radio2"}],
        "sinks": [{"type": "parquet", "path": str(tmp_path / "capture")}],
    })
    check = subprocess.run([*STREAMTAP, "validate", str(bad)], env=env, capture_output=True,
                           text=True, timeout=60, check=False)
    assert check.returncode != 0
    assert "sources[0].url" in check.stderr and "Port out of range" in check.stderr, check.stderr
    assert "sources[1].url: scheme 'ftp'" in check.stderr, check.stderr
    secrets.assert_absent(check.stdout + check.stderr, "`streamtap validate`'s output")
