"""completions/ is generated from the app: regenerate and compare; and the bash script works in a real
bash."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gen_completions  # noqa: E402


def test_completion_scripts_have_not_drifted():
    for shell, text in gen_completions.scripts().items():
        path = ROOT / "completions" / f"nnkit.{shell}"
        assert path.read_text() == text, f"{path} is stale: run python scripts/gen_completions.py"


def _complete_in_bash(tmp_path: Path, words: str) -> list[str]:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    launcher = bindir / "nnkit"  # the console script, whichever environment runs the tests
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} -m nnkit \"$@\"\n")
    launcher.chmod(0o755)
    script = (f"source {ROOT / 'completions' / 'nnkit.bash'}\n"
              f"COMP_WORDS=({words}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\n"
              "_nnkit_completion nnkit\n"
              "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completion_in_a_real_bash(tmp_path):
    assert "shape" in _complete_in_bash(tmp_path, "nnkit sh")
    assert "resnet50" in _complete_in_bash(tmp_path, "nnkit params resnet5")
