"""ruff passes: pyflakes, the banned module-level imports (torch & co. stay lazy, STYLE.md practice 4) and the
line length, as pyproject.toml's [tool.ruff] configures them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_passes():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
                          "."],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "No module named ruff" not in out.stderr, "ruff is not installed: it is in requirements/dev.txt"
    assert out.returncode == 0, out.stdout + out.stderr
