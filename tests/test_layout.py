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


KNOWN_REACHES: set[tuple[str, str]] = set()


def test_archs_never_import_the_analysis():
    """archs/ is below introspect/: the table's generator, which measures models, lives in introspect/."""
    found = [f"{p.relative_to(PKG.parent)}:{line} imports {mod}" for p in sorted((PKG / "archs").rglob("*.py"))
             for line, mod, _ in _imports(p) if mod.startswith("nnkit.introspect")]
    assert found == []


def _private_reaches(path: Path) -> list[tuple[str, str]]:
    """(what, where from) for each private name `path` uses from outside its own package: `from a._b import c`,
    `from a import _b`, `a._b` on an imported nnkit module. Inside a package its modules share what they like."""
    own = ".".join(path.relative_to(PKG.parent).with_suffix("").parts[:-1])
    found = []

    def check(dotted: str, where: str) -> None:
        parts = dotted.split(".")
        for i, part in enumerate(parts):
            if part.startswith("_") and not part.startswith("__"):
                home = ".".join(parts[:i])
                if not (own == home or own.startswith(home + ".")):
                    found.append((dotted, where))
                return

    modules: dict[str, str] = {}
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nnkit"):
            check(node.module, node.module)
            for a in node.names:
                check(f"{node.module}.{a.name}", node.module)
                modules[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("nnkit"):
                    check(a.name, a.name)
                    modules[a.asname or a.name] = a.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            check(f"{modules[node.value.id]}.{node.attr}", modules[node.value.id])
    return found


def test_no_module_uses_another_packages_private_names():
    found = {(str(p.relative_to(PKG.parent)), where): what for p in _modules() for what, where in _private_reaches(p)}
    assert {k: v for k, v in found.items() if k not in KNOWN_REACHES} == {}
    assert set(found) >= KNOWN_REACHES  # one fixed: take it off the list


def test_an_analysis_says_whether_it_is_a_chain():
    """Views read Analysis.chain (a model's rows get a type column) instead of re-parsing its source."""
    from nnkit.core.chain import analyze_chain, truncate
    from nnkit.render.views import view

    a = analyze_chain("3x32x32", ["conv(6,5) relu"])
    assert a.chain and truncate(a, "1").chain
    doc, tab = view(a, "shape")
    assert "type" not in tab.columns
    from dataclasses import replace

    assert "type" in view(replace(a, chain=False), "shape")[1].columns  # the same rows, as a model's
