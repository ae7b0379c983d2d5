"""Where the developer tools stand: beside the product, never inside it.

The product (``bridge``, ``jobs``) never imports ``devtools``: the wheel and the image do
not have it. The bench's modes import the bench's stack, never the command or each other,
so that one mode can change (or go) without the others.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "devtools" / "bench"


def _imports(path: Path) -> Iterator[str]:
    """Every module ``path`` imports (``from a import b`` counts as ``a`` and ``a.b``)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_the_product_never_imports_the_developer_tools() -> None:
    found = [
        f"{path.relative_to(ROOT)}: {name}"
        for package in ("bridge", "jobs")
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in _imports(path)
        if name == "devtools" or name.startswith("devtools.")
    ]
    assert found == []


def test_bench_modes_import_the_stack_not_the_command_nor_each_other() -> None:
    modes = {p.stem for p in BENCH.glob("*.py")} - {"__init__", "command", "stack"}
    assert {"burst", "ingest", "starts", "usage", "reconcile", "scrape"} <= modes
    for mode in sorted(modes):
        used = {
            name.removeprefix("devtools.bench.")
            for name in _imports(BENCH / f"{mode}.py")
            if name.startswith("devtools.bench.")
        }
        assert used <= {"stack"} | {f"stack.{n}" for n in _names(BENCH / "stack.py")}, mode


def _names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names
