"""README's "Add your own" examples are real code: README holds them verbatim, and they capture."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

from examples.plugins.chunk_files_sink import ChunkFilesSink
from examples.plugins.command_source import CommandSource
from streamtap.captures import reassemble, verify
from streamtap.pipelines.run import run_capture
from streamtap.plugins import PLUGINS

ROOT = Path(__file__).resolve().parents[1]
MINE = PLUGINS.extended(sources=[CommandSource], sinks=[ChunkFilesSink])
# Writes 0..255 repeated 1,000 times, in pieces of 1,000 bytes.
PROGRAM = "import sys\nfor i in range(256):\n    sys.stdout.buffer.write(bytes([i]) * 1000)"


def test_readme_holds_every_example_verbatim():
    readme = (ROOT / "README.md").read_text()
    examples = re.findall(r"<!-- example: (\S+) -->\n```python\n(.*?)```", readme, re.DOTALL)
    assert [name for name, _ in examples] == [
        "examples/plugins/command_source.py",
        "examples/plugins/chunk_files_sink.py",
    ]
    for name, shown in examples:
        assert shown == (ROOT / name).read_text(), f"README's copy of {name} is out of date"


def test_the_example_source_and_sink_capture_byte_exact(tmp_path):
    config = MINE.parse_config(
        {
            "sources": [{"id": "cmd1", "type": "command", "command": [sys.executable, "-c", PROGRAM]}],
            "chunk": {"max_bytes": 10_000},
            "sinks": [{"type": "chunk_files", "directory": str(tmp_path)}],
        }
    )
    out = io.StringIO()
    assert run_capture(config, ["--runner=FnApiRunner"], duration=60, status_interval=0, out=out) == 0
    location = f"chunkfiles://{tmp_path}"
    assert all(report.ok for report in verify(MINE.read_capture(location)).values())
    output = io.BytesIO()
    reassemble(MINE.read_capture(location, "cmd1"), output)
    assert output.getvalue() == b"".join(bytes([i]) * 1000 for i in range(256))


def test_a_failing_program_is_a_clear_error_in_the_summary(tmp_path):
    failing = [sys.executable, "-c", "import sys; sys.stderr.write('no such device'); sys.exit(3)"]
    config = MINE.parse_config(
        {
            "sources": [{"id": "cmd1", "type": "command", "command": failing,
                         "on_eof": "stop", "max_bytes": 1}],
            "sinks": [{"type": "chunk_files", "directory": str(tmp_path)}],
        }
    )
    out = io.StringIO()
    run_capture(config, ["--runner=FnApiRunner"], duration=3, status_interval=0, out=out)
    assert "exited 3: no such device" in out.getvalue()
