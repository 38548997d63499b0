"""Dialect modules, the IR and the thinking tables stay pure: no Django, no HTTP, no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE = sorted(
    [*(ROOT / "gateway" / "dialects").glob("*.py"), ROOT / "gateway" / "ir.py", ROOT / "gateway" / "thinking.py"]
)
FORBIDDEN = (
    "django",
    "httpx",
    "aiohttp",
    "requests",
    "urllib.request",
    "socket",
    "asyncio",
    "channels",
    "accounts",
    "usage",
    "sqlite3",
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", PURE, ids=lambda p: p.name)
def test_the_module_imports_nothing_that_does_io(path: Path) -> None:
    bad = {name for name in _imports(path) if name.split(".")[0] in FORBIDDEN or name in FORBIDDEN}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", PURE, ids=lambda p: p.name)
def test_the_module_never_opens_files(path: Path) -> None:
    calls = [
        node
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open"
    ]
    assert not calls
