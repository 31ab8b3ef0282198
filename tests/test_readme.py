"""Every `$ nnkit ...` example in the README runs and succeeds (STYLE.md, practice 13; issue 12).

The examples are read from README.md itself, so a new or changed example is tested as written. They run in
README order in one folder (HOME is that folder too, so `~/data` is there): a training example finds the run
of the one before it. What the examples assume exists is made first, small: a CIFAR-10 folder of a few images
in the real format, an image folder, `model.py`, and weights `r18.pt`. Training examples run with their epochs
cut (`--epochs N` becomes N / 30 rounded up, or --epochs 1 is added): the README's accuracy claim is
tests/test_train.py's, here the command lines themselves are under test.
"""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path

import pytest

from nnkit.core.spec import looks_like_shape

README = Path(__file__).resolve().parents[1] / "README.md"


def examples() -> list[tuple[str, list[str]]]:
    """(the line as written, its arguments after `nnkit`) for every `$ nnkit` line of a console block."""
    text = re.sub(r"\\\n\s*", " ", README.read_text(encoding="utf-8"))  # backslash continuations
    found = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            if line.startswith("$ nnkit "):
                args = shlex.split(line[2:], comments=True)
                for redirect in (">", "|"):  # the shell's part of a line: nnkit's output goes to a file or a pipe
                    args = args[:args.index(redirect)] if redirect in args else args
                found.append((line[2:].split("  #")[0].strip(), args[1:]))
    return found


def needs_torch(args: list[str]) -> bool:
    """Chains, solve and the architecture list are the torch-free install's; anything else needs torch."""
    command, target = args[0], next((a for a in args[1:] if not a.startswith("-")), "")
    return not (command in ("solve", "models") or looks_like_shape(target))


def shrink(args: list[str]) -> list[str]:
    """Training examples with their epochs cut (see the module's docstring); the rest as written."""
    if args[0] != "train" or "--resume" in args:  # a resumed run's --epochs is its total: the example's own
        return args
    if "--epochs" in args:
        i = args.index("--epochs") + 1
        return [*args[:i], str(math.ceil(int(args[i]) / 30)), *args[i + 1:]]
    return [*args, "--epochs", "1"]


EXAMPLES = examples()


def _param(line: str, args: list[str]):  # noqa: ANN202 - a pytest.param
    return pytest.param(args, id=line, marks=[pytest.mark.torch] if needs_torch(args) else [])


def test_the_readme_has_examples_of_every_command():
    commands = {args[0] for _, args in EXAMPLES}
    assert {"shape", "params", "flops", "rf", "dwsep", "solve", "models", "summary", "crosscheck", "train",
            "eval"} <= commands, commands


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the examples run in, with what they expect to find."""
    root = tmp_path_factory.mktemp("readme")
    (root / "model.py").write_text(
        "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n        "
        "super().__init__()\n        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), "
        "nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n                                  nn.Linear(8, 10))\n\n    "
        "def forward(self, x):\n        return self.body(x)\n")
    import shutil

    shutil.copytree(README.parent / "examples", root / "examples")  # the model files the README analyses
    return root


@pytest.fixture(scope="module")
def data(home: Path) -> Path:
    """The data and weights the training examples name (`~/data`, `~/flowers`, `r18.pt`), made once."""
    import torch
    import torchvision

    from tests.test_data import make_cifar, make_imagefolder

    make_cifar(home / "data", per_batch=4)
    make_imagefolder(home / "flowers", per_class=2, mode="RGB")
    torch.save(torchvision.models.resnet18().state_dict(), home / "r18.pt")
    return home


@pytest.mark.parametrize("args", [_param(line, args) for line, args in EXAMPLES])
def test_readme_example_runs(nnkit, request, monkeypatch, home, args):
    if args[0] in ("train", "eval"):
        request.getfixturevalue("data")
    monkeypatch.chdir(home)
    monkeypatch.setenv("HOME", str(home))
    run = nnkit(*(str(Path(a).expanduser()) if a.startswith("~") else a for a in shrink(args)))
    assert run.code == 0, run
    assert run.out or run.err, run  # every example prints its answer
