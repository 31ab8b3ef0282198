"""The torch-free install (`pip install .`): the arithmetic works, and every command that needs torch says in
one line how to install it (issue 12). Runs in any environment: the child process blocks the [torch] extra's
modules, as if they were not installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

NEEDS_TORCH = [
    ["summary", "resnet18"],
    ["summary", "resnet18", "--train"],
    ["params", "resnet18"],
    ["shape", "resnet18", "--depth", "1"],
    ["flops", "mobilenet_v2", "--input", "3x160x160"],
    ["rf", "vgg16"],
    ["crosscheck", "resnet18"],
    ["dwsep", "mobilenet_v1"],
    ["dwsep", "efficientnet_b0"],
    ["train", "lenet5", "--out", "{tmp}/run"],
    ["eval", "{tmp}/best.pt"],
]
WITHOUT_TORCH = [
    ["shape", "3x32x32", "conv(6,5)"],
    ["summary", "3x32x32", "conv(6,5)", "-f", "table"],
    ["models", "resnet18"],
    ["dwsep", "32x112x112", "--out", "64", "-k", "3"],
]

# A child that cannot import the [torch] extra, and runs each command in turn through typer's runner.
CHILD = """
import json, sys
for name in ("torch", "torchvision", "torchinfo", "fvcore", "matplotlib", "sklearn", "numpy"):
    sys.modules[name] = None  # `import torch` now raises ModuleNotFoundError, as on the torch-free install
from typer.testing import CliRunner
from nnkit.cli import app
runs = [CliRunner().invoke(app, args) for args in json.loads(sys.argv[1])]
print(json.dumps([[r.exit_code, r.stdout, r.stderr] for r in runs]))
"""


def _run(commands: list[list[str]], tmp: Path) -> list[tuple[int, str, str]]:
    (tmp / "net.py").write_text("import torch\n\n\nclass Net(torch.nn.Module):\n    pass\n")
    (tmp / "best.pt").write_bytes(b"not really a checkpoint")
    args = [[a.format(tmp=tmp) for a in c] for c in commands]
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    return [tuple(r) for r in json.loads(out.stdout)]


def test_commands_that_need_torch_say_how_to_install_it(tmp_path):
    for args, (code, out, err) in zip(NEEDS_TORCH, _run(NEEDS_TORCH, tmp_path)):
        assert code == 1 and out == "" and err.count("\n") == 1, (args, code, out, err)
        assert err.startswith("nnkit: ") and \
            err.endswith(" needs torch, which is not installed: pip install 'nnkit[torch]'\n"), (args, err)


def test_a_user_model_that_imports_torch_names_its_own_line(tmp_path):
    """The user's file imports torch itself, before nnkit does: its one-line error points at that line."""
    [(code, out, err)] = _run([["summary", "{tmp}/net.py:Net", "--input", "3x32x32"]], tmp_path)
    assert code == 1 and err.startswith(f"nnkit: {tmp_path / 'net.py'}, line 1: ModuleNotFoundError") \
        and "torch" in err and err.count("\n") == 1, err


def test_the_arithmetic_works_without_torch(tmp_path):
    for args, (code, out, err) in zip(WITHOUT_TORCH, _run(WITHOUT_TORCH, tmp_path)):
        assert code == 0 and out, (args, err)
