"""README's fault matrix names real tests: every row has one, and every test it names exists (so a
renamed or deleted test cannot leave a row that nothing proves)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _matrix_rows() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Fault matrix", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[1:]]


def _named_tests(cell: str) -> list[tuple[str, str | None]]:
    """(file, test name or None) for each `path::name`, `::name` (the file before) or `path`."""
    named, current = [], None
    for ref in re.findall(r"`([^`]+)`", cell):
        path, _, name = ref.partition("::")
        current = path or current
        named.append((current, name or None))
    return named


def test_every_fault_has_a_test_and_every_named_test_exists():
    rows = _matrix_rows()
    faults = [row[0] for row in rows]
    for needed in ("source restart", "hostile", "broker SIGKILL", "all Kafka brokers down",
                   "TaskManager SIGKILL", "`streamtap run` SIGKILLed", "disk full",
                   "sink unreachable mid-capture", "truncated"):
        assert any(needed in fault for fault in faults), f"no row for {needed!r}: {faults}"
    for row in rows:
        assert len(row) == 4, row
        named = _named_tests(row[3])
        assert named, f"no test for {row[0]!r}"
        for path, name in named:
            source = ROOT / path
            assert source.is_file(), f"{row[0]!r}: {path} does not exist"
            if name is not None:
                functions = {node.name for node in ast.walk(ast.parse(source.read_text()))
                             if isinstance(node, ast.FunctionDef)}
                assert name in functions, f"{row[0]!r}: {path} has no {name}"
