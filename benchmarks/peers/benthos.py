"""The Benthos stand-in for Redpanda Connect in scenario 4: build it, write its config, run it.

Redpanda Connect (github.com/redpanda-data/connect/v4) is not served by this environment's Go
module proxy (not an open-source licence), so benchmarks/peers/benthos/ builds the engine it is
made of, Benthos (MIT), with Benthos' own http_client input and a franz-go Kafka output written
to match Redpanda Connect's kafka_franz. The binary goes to benchmarks/peers/benthos/.bin/
(git-ignored) and is rebuilt only when go.mod, go.sum or main.go change.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

SOURCE = Path(__file__).resolve().parent / "benthos"
BIN_DIR = SOURCE / ".bin"
BINARY = BIN_DIR / "benthos"
_STAMP = BIN_DIR / "sources.sha256"
_SOURCES = ("go.mod", "go.sum", "main.go")
_MODULES = {"benthos": "github.com/redpanda-data/benthos/v4",
            "franz_go": "github.com/twmb/franz-go"}


class BuildError(RuntimeError):
    """Go is missing or `go build` failed; the message says what to do."""


def versions() -> dict[str, str]:
    """Module versions the stand-in is built with, read from go.mod (the one place they live)."""
    text = (SOURCE / "go.mod").read_text()
    found = {}
    for name, module in _MODULES.items():
        match = re.search(rf"^\s*{re.escape(module)} (v\S+)", text, re.MULTILINE)
        found[name] = match.group(1) if match else None
    go = re.search(r"^go (\S+)", text, re.MULTILINE)
    found["go_directive"] = go.group(1) if go else None
    return found


def _digest() -> str:
    digest = hashlib.sha256()
    for name in _SOURCES:
        digest.update(name.encode() + b"\0" + (SOURCE / name).read_bytes() + b"\0")
    return digest.hexdigest()


def build(timeout: float = 1800.0) -> Path:
    """Builds the binary unless the one in .bin/ was built from the same sources; returns it.

    The first build fetches the modules from the Go module proxy and compiles Benthos (about
    2 minutes on 2 cores); later ones reuse Go's module and build caches.
    """
    digest = _digest()
    if BINARY.exists() and _STAMP.exists() and _STAMP.read_text().strip() == digest:
        return BINARY
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            f"Go is needed to build the Benthos stand-in ({SOURCE}): install Go "
            f"{versions()['go_directive']} or newer (https://go.dev/dl) and run again")
    BIN_DIR.mkdir(exist_ok=True)
    partial = BIN_DIR / "benthos.partial"
    # -buildvcs=false: the repo's git state is no input of this binary (and git may refuse a
    # checkout owned by another user).
    command = [go, "build", "-buildvcs=false", "-o", str(partial), "."]
    try:
        done = subprocess.run(command, check=False, cwd=SOURCE, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "GOTOOLCHAIN": "local"})
    except subprocess.TimeoutExpired as error:
        raise BuildError(f"`go build` in {SOURCE} took over {timeout:.0f} s") from error
    if done.returncode != 0:
        output = (done.stderr + done.stdout).strip()
        tail = "\n".join(output.splitlines()[-15:])
        if re.search(r"(?i)proxy|dial tcp|lookup |no such host|i/o timeout|404 Not Found|410 Gone"
                     r"|verifying .*: |missing go.sum entry", output):
            hint = ("fetching Go modules failed: the Go module proxy (`go env GOPROXY`) must be "
                    "reachable, or run `go mod download` in that directory where it is")
        elif "requires go >=" in output or "go.mod requires go" in output:
            hint = f"this Go is too old: go.mod needs Go {versions()['go_directive']} or newer"
        else:
            hint = "see the compiler output"
        raise BuildError(f"building the Benthos stand-in failed ({hint}); to retry by hand: "
                         f"cd {SOURCE} && go build -o .bin/benthos .\n{tail}")
    partial.replace(BINARY)
    _STAMP.write_text(digest + "\n")
    return BINARY


def stream_key(index: int) -> str:
    """The Kafka key of stream `index`: the same as benchmarks/plain_capture.py's."""
    return f"stream-{index:04d}"


def config_yaml(urls: list[str], bootstrap: str, topic: str, read_bytes: int) -> str:
    """A Benthos config that captures every URL as its own stream into `topic`.

    One http_client input per URL under a `broker` input, in stream mode (one long GET, read as
    it comes, reconnected when it ends) cut into `read_bytes` records like the plain script; a
    mapping gives each input's messages their stream's key as metadata, which the output uses as
    the record key. The output keeps kafka_franz's defaults (max_in_flight 10, no batching: every
    record is its own Benthos batch) except compression, which is none here as in streamtap's
    Kafka sink and the plain script (MP3 does not compress; kafka_franz would try snappy).
    """
    inputs = [
        {
            "http_client": {
                "url": url,
                "verb": "GET",
                "stream": {
                    "enabled": True,
                    "reconnect": True,
                    "scanner": {"chunker": {"size": read_bytes}},
                },
            },
            "processors": [{"mapping": f'meta stream = "{stream_key(index)}"'}],
        }
        for index, url in enumerate(urls)
    ]
    config = {
        # No HTTP server (metrics, ping, debug endpoints): nothing listens beyond the capture.
        "http": {"enabled": False},
        "logger": {"level": "WARN", "format": "logfmt"},
        "input": {"broker": {"inputs": inputs}},
        "output": {
            "kafka_franz_standin": {
                "seed_brokers": [bootstrap],
                "topic": topic,
                "key": "${! @stream }",
                "compression": "none",
                "max_in_flight": 10,
            },
        },
    }
    return yaml.safe_dump(config, sort_keys=False)


def command(binary: Path, config_path: Path) -> list[str]:
    """The argv that runs the stand-in on a config; SIGINT stops it gracefully (drains, exits 0)."""
    return [str(binary), "run", str(config_path)]
