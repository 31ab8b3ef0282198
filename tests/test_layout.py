"""The package's shape, checked on its source (STYLE.md, issue 12 "Smaller units, one home per concept"): the
output libraries are imported only by the output layer, and each concept has one home."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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


def test_the_optimizer_names_are_one_vocabulary():
    """nnkit train's --optimizer and nnkit summary --train's are the same Enum, so they cannot drift apart."""
    from nnkit.core.optim import Optimizer
    from nnkit.introspect.memory import Optimizer as Counted
    from nnkit.train.config import Optimizer as Trained

    assert Trained is Counted is Optimizer


@pytest.mark.parametrize("text,message", [
    ("flip,,crop", "--augment 'flip,,crop': an empty name in the list"),
    ("rotat", "--augment: unknown augmentation 'rotat' (did you mean rotate?); valid: flip, vflip"),
])
def test_tune_checks_augmentations_as_train_does(nnkit, text, message):
    from nnkit.errors import UsageError
    from nnkit.train.tune import parse_param

    with pytest.raises(UsageError) as tuned:
        parse_param("augment", [text])
    run = nnkit("train", "lenet5", "--augment", text, "--epochs", "1")
    assert run.code == 2 and run.err == f"nnkit: {tuned.value}\n" and message in run.err, run


def test_archs_train_and_tune_complete_names_with_one_function():
    from nnkit.cli import common, train, tune

    arch = [p for p in (train.ArchArg.__metadata__ + tune.ArchArg.__metadata__)]
    assert all(p.autocompletion is common.complete_target for p in arch)
