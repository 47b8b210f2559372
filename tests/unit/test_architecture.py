"""The house plan holds: data flows one way (cli -> orchestration -> engine -> build -> the
parts -> config), no module imports one above it, there is no import cycle (imports inside
functions included), the loop never reads the config, and modules stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

SRC = REPO / "src" / "trainrun"

# Higher imports lower, never the reverse. Within one layer, imports are allowed as long as
# they make no cycle. (docs/architecture.md shows the same layers.)
LAYERS: dict[str, int] = {
    "cli": 9,
    "commands": 8,
    "preflight": 7, "tools": 7,
    "engine": 6,
    "build": 5,
    "data": 4,
    "report": 3,
    "targets": 2,
    "config": 1,
    "errors": 0, "files": 0, "__init__": 0,
}
LONG_MODULE = 300  # lines: a module that grows past it is split by job


def module_name(path: Path, root: Path = SRC.parent) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS["__init__"] if len(parts) == 1 else LAYERS[parts[1]]


def imports(path: Path, known: set[str], root: Path = SRC.parent) -> set[str]:
    """Every trainrun module ``path`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text())
    this = module_name(path, root)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            # ``from pkg import module`` imports that module; ``from module import name``, module
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name.startswith("trainrun"):
                found.add(name)
    found.discard(this)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = set(modules())
    return {name: imports(path, known) - {"trainrun"} for name, path in modules().items()}


def test_every_module_has_a_layer(graph):
    for name in graph:
        assert name == "trainrun" or name.split(".")[1] in LAYERS, \
            f"{name}: add it to LAYERS (and docs/architecture.md)"


def upward_edges(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if layer(b) > layer(a))


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Depth-first search over every import edge."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_module_imports_a_layer_above_it(graph):
    upward = upward_edges(graph)
    assert upward == [], "imports that flow upwards:\n  " + "\n  ".join(upward)


def test_there_is_no_import_cycle(graph):
    cycles = find_cycles(graph)
    assert cycles == [], "import cycles:\n  " + "\n  ".join(" -> ".join(c) for c in cycles)


def test_the_checks_catch_a_cycle_and_an_upward_import(tmp_path):
    """The checks can fail: a function-level import that closes a cycle is found by imports()
    and both checks report it."""
    pkg = tmp_path / "trainrun"
    (pkg / "engine").mkdir(parents=True)
    (pkg / "build.py").write_text("def f():\n    from trainrun.engine import loop\n")
    (pkg / "engine" / "loop.py").write_text("from trainrun.build import Setup\n")
    known = {"trainrun.build", "trainrun.engine.loop", "trainrun.engine"}
    fake = {"trainrun.build": imports(pkg / "build.py", known, root=tmp_path),
            "trainrun.engine.loop": imports(pkg / "engine" / "loop.py", known, root=tmp_path)}
    assert fake == {"trainrun.build": {"trainrun.engine.loop"}, "trainrun.engine.loop": {"trainrun.build"}}
    assert upward_edges(fake) == ["trainrun.build -> trainrun.engine.loop"]
    assert find_cycles(fake) == [["trainrun.build", "trainrun.engine.loop", "trainrun.build"]]


def test_the_loop_reads_settings_not_the_config():
    tree = ast.parse((SRC / "engine" / "loop.py").read_text())
    reads = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "cfg"]
    assert reads == [], f"engine/loop.py reads .cfg at lines {reads}: read typed settings (build.LoopSettings)"


def test_modules_stay_small():
    long = [f"{name}: {n} lines" for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > LONG_MODULE]
    assert long == [], f"modules over {LONG_MODULE} lines (split them by job):\n  " + "\n  ".join(long)


def test_no_private_imports_of_other_packages():
    private = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.module.startswith("trainrun"):
                parts = node.module.split(".") + [a.name for a in node.names]
                if any(p.startswith("_") and p != "__future__" for p in parts):
                    private.append(f"{name}: from {node.module} import {', '.join(a.name for a in node.names)}")
    assert private == [], "private imports:\n  " + "\n  ".join(private)


def test_every_module_has_a_row_in_the_rooms_table():
    """docs/architecture.md stays true as modules come and go: each one is named in its rooms
    table (a row `| room/ | `name.py` | what it does |`)."""
    doc = (REPO / "docs" / "architecture.md").read_text()
    rows = [line for line in doc.splitlines() if line.startswith("|")]
    named = {name for line in rows for name in re_names(line)}
    unnamed = [str(p.relative_to(REPO)) for p in sorted((REPO / "src").rglob("*.py"))
               if p.name not in ("__init__.py", "__main__.py") and p.name not in named]
    assert not unnamed, f"add a row to docs/architecture.md's rooms table for: {unnamed}"


def re_names(line: str) -> list[str]:
    """The ``file.py`` names in backticks in one table row (``a.py``, ``b.py`` or ``base.py, x.py``)."""
    names = [name.strip() for cell in line.split("`")[1::2] for name in cell.split(",")]
    return [name.rsplit("/", 1)[-1] for name in names if name.endswith(".py")]
