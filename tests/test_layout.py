"""The house rules of the package, read from the source: imports point one way, no cycles.

cli -> pipelines, captures, services -> plugins -> io, transforms -> config, chunk, errors.
Nothing in io/, transforms/, pipelines/ or config/ imports services/ (local infrastructure for
demos and tests; services/ may use pipelines/runners/), runner plug-ins import neither the
plug-in list nor the rest of pipelines/, and no two modules import each other, directly or around
a loop, including imports inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "streamtap"

# Module prefixes that must never import modules with the other prefixes.
FORBIDDEN = {
    "streamtap.io": ("streamtap.services", "streamtap.pipelines", "streamtap.plugins",
                     "streamtap.cli", "streamtap.captures"),
    "streamtap.transforms": ("streamtap.services", "streamtap.pipelines", "streamtap.plugins",
                             "streamtap.cli", "streamtap.captures"),
    "streamtap.pipelines": ("streamtap.services", "streamtap.cli"),
    # Runner plug-ins are listed in plugins.py, which run.py chooses through: below both.
    "streamtap.pipelines.runners": ("streamtap.plugins", "streamtap.pipelines.run",
                                    "streamtap.pipelines.capture", "streamtap.captures"),
    "streamtap.config": ("streamtap.io", "streamtap.transforms", "streamtap.pipelines",
                         "streamtap.services", "streamtap.plugins", "streamtap.cli",
                         "streamtap.captures"),
    "streamtap.chunk": ("streamtap.",),
    "streamtap.errors": ("streamtap.",),
}


def _within(module: str, prefix: str) -> bool:
    """True if `module` is `prefix` or inside it ("streamtap." means any streamtap module)."""
    return module.startswith(prefix) if prefix.endswith(".") else (
        module == prefix or module.startswith(prefix + ".")
    )


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The streamtap modules `path` imports anywhere in it (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a.b import c` imports a.b.c when c is a module, else a.b.
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in modules
                else node.module
                for alias in node.names
            ]
        else:
            continue
        found.update(name for name in names if name.startswith("streamtap"))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_every_import_names_a_module_that_exists():
    modules = _modules()
    missing = {
        f"{name} imports {target}"
        for name, targets in _graph().items()
        for target in targets
        if target not in modules
    }
    assert not missing, sorted(missing)


def test_imports_point_one_way():
    graph = _graph()
    wrong = sorted(
        f"{name} imports {target}"
        for name, targets in graph.items()
        for prefix, banned in FORBIDDEN.items()
        if _within(name, prefix)
        for target in targets
        if any(_within(target, b) for b in banned)
    )
    assert not wrong, wrong


def test_no_import_cycles():
    graph = _graph()
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph.get(name, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, cycles


def test_no_module_is_over_500_lines():
    long = sorted(
        f"{_module_name(path)}: {count} lines"
        for path in PACKAGE.rglob("*.py")
        if (count := len(path.read_text().splitlines())) > 520
    )
    assert not long, long


def test_every_module_says_its_job_first():
    silent = sorted(
        _module_name(path)
        for path in PACKAGE.rglob("*.py")
        if path.read_text().strip() and ast.get_docstring(ast.parse(path.read_text())) is None
    )
    assert not silent, silent
