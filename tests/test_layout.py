"""The package's shape, checked on its source (STYLE.md, issue 12 "Smaller units, one home per concept"): the
output libraries are imported only by the output layer, and each concept has one home."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "nnkit"


def _imports(path: Path) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, module, names) of every import in `path`, lazy ones inside functions too."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module, tuple(a.name for a in node.names)))
    return out


def _modules() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def test_rich_and_matplotlib_are_imported_only_in_render():
    found = [f"{p.relative_to(PKG.parent)}:{line} imports {mod}" for p in _modules() if p.parent.name != "render"
             for line, mod, _ in _imports(p) if mod.split(".")[0] in ("rich", "matplotlib")]
    assert found == []
