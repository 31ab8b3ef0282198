"""Transfer learning's three modes, on any nn.Module (the trainer's, or a meta-device copy for `nnkit summary`):

1. --weights alone: everything trains from the loaded weights;
2. --freeze MODULE (every parameter registered up to and including MODULE's stays as loaded) or --trainable
   A,B (only these modules train); --freeze backbone is --trainable with the classifier head;
3. --head new: the loaded network is kept whole, its own outputs included, and one new fully connected layer on
   top of it maps them to the data's classes; only that layer trains.

Frozen modules stay in eval mode while the rest trains, so BatchNorm running statistics and dropout of the frozen
part do not change: a frozen tensor is bit-for-bit what was loaded.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from nnkit.errors import CheckpointError, UsageError

BACKBONE = "backbone"  # --freeze backbone: every module but the classifier head
NONE = "none"


def parse_modules(text: str | None) -> tuple[str, ...] | None:
    """--trainable 'layer4, fc' -> ('layer4', 'fc'); None when not given."""
    if text is None:
        return None
    names = tuple(dict.fromkeys(w.strip() for w in text.split(",") if w.strip()))
    if not names:
        raise UsageError(f"--trainable '{text}': name the modules that train, e.g. --trainable layer4,fc")
    return names


def head_module(model: Any) -> tuple[str, Any]:
    """The classifier: the last module with parameters of its own (Linear in most nets, a Conv in SqueezeNet)."""
    last = None
    for name, m in model.named_modules():
        if any(True for _ in m.parameters(recurse=False)):
            last = (name, m)
    if last is None:
        raise UsageError("the model has no parameters")
    return last


def _within(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r + ".") or r == "" for r in roots)


def _ancestor(path: str, roots: Iterable[str]) -> bool:
    """`path` contains one of `roots` (the whole model contains everything)."""
    return any(r != path and (path == "" or r.startswith(path + ".")) for r in roots)


def _check_names(option: str, names: Iterable[str], paths: list[str], what: str) -> None:
    known = [p for p in paths if p]
    for name in names:
        if name not in paths:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else \
                f"; its top-level modules: {', '.join(p for p in known if '.' not in p)}"
            raise UsageError(f"{option} {name}: {what} has no module of that name{hint}")


def select(model: Any, *, freeze: str = NONE, trainable: tuple[str, ...] | None = None,
           what: str = "the model") -> list[Any]:
    """Set requires_grad for --freeze or --trainable; return the frozen modules (to be kept in eval mode)."""
    named = list(model.named_modules())
    paths = [p for p, _ in named]
    if trainable is not None or freeze == BACKBONE:
        roots = list(trainable) if trainable is not None else [head_module(model)[0]]
        if trainable is not None:
            _check_names("--trainable", roots, paths, what)
        option = f"--trainable {','.join(roots)}" if trainable is not None else "--freeze backbone"

        def trains(path: str) -> bool:
            return _within(path, roots)
    elif freeze and freeze != NONE:
        _check_names("--freeze", [freeze], paths, what)
        roots = [freeze]
        option = f"--freeze {freeze}"
        # In pre-order the module's subtree ends at the last path inside it; everything up to there is frozen,
        # its ancestors' own parameters too (registered before it: a ViT's class token).
        index = {p: i for i, p in enumerate(paths)}
        end = max(i for i, p in enumerate(paths) if _within(p, roots))

        def trains(path: str) -> bool:
            return index[path] > end
    else:
        return []
    owner = {id(p): path for path, m in named for p in m.parameters(recurse=False)}
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(trains(owner[id(p)]))
    if not any(p.requires_grad for p in params):
        raise UsageError(f"{option}: no parameter is left to train"
                         + (" (those modules have none)" if trainable is not None else ""))
    if all(p.requires_grad for p in params):
        raise UsageError(f"{option}: every parameter still trains, nothing is frozen")
    # containers of a trained module keep train mode: their own mode does nothing, their children's is set
    return [m for path, m in named if not trains(path) and not _ancestor(path, roots)]


def train_mode(net: Any, frozen: list[Any]) -> None:
    """net.train(), the frozen modules excepted."""
    net.train()
    for m in frozen:
        m.training = False  # this module only: its children are in the list too


def new_head(base: Any, base_outputs: int, num_classes: int) -> Any:
    """Mode 3: `base` whole and frozen, one new nn.Linear(base_outputs, num_classes) on top that trains."""
    from torch import nn

    class WithNewHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = base
            self.head = nn.Linear(base_outputs, num_classes)

        def forward(self, x: Any) -> Any:
            return self.head(self.base(x))

    model = WithNewHead()
    for p in base.parameters():
        p.requires_grad_(False)
    return model


def base_outputs(state: dict[str, Any], model: Any, weights: str) -> int:
    """How many outputs the network in `state` (a state dict) had: its classifier's rows."""
    name, _ = head_module(model)
    key = f"{name}.weight" if name else "weight"
    if key not in state:
        raise CheckpointError(f"--weights {weights}: no '{key}' (the classifier of this architecture), so --head "
                              "new cannot tell how many outputs the loaded network has")
    return int(state[key].shape[0])


def load_whole(model: Any, state: dict[str, Any], weights: str) -> None:
    """Every tensor of `model` from `state`, or a one-line refusal: --head new keeps the network whole."""
    own = model.state_dict()
    missing = [k for k in own if k not in state or state[k].shape != own[k].shape]
    if missing:
        raise CheckpointError(f"--weights {weights}: --head new keeps the loaded network whole, but "
                              f"{len(missing)} of its tensors are missing or of another shape (first: "
                              f"{missing[0]}); these weights are for another architecture")
    model.load_state_dict({k: state[k] for k in own})


def classifier_outputs(model: Any) -> int:
    """The outputs of a classifier's last layer with parameters (Linear: out_features, a Conv: out_channels)."""
    _, head = head_module(model)
    for attr in ("out_features", "out_channels"):
        if isinstance(getattr(head, attr, None), int):
            return int(getattr(head, attr))
    raise UsageError(f"--head new: the model's last layer with parameters ({type(head).__name__}) has no "
                     "out_features or out_channels to put a new layer on")


def transferred(target: Any, *, freeze: str = NONE, trainable: tuple[str, ...] | None = None, head: str = "own",
                num_classes: int | None = None) -> Any:
    """A meta-device Target (nnkit.introspect.target) with a transfer mode applied, for `nnkit summary`: the
    trainable column and the training-memory estimate then show what `nnkit train` with the same options trains.
    With head 'new', num_classes is the new layer's (default: as many as the network's own outputs)."""
    from dataclasses import replace

    from nnkit.introspect.build import on_meta

    if head == "new":
        if freeze != NONE or trainable is not None:
            raise UsageError("--head new trains only the new layer; leave out --freeze and --trainable")

        def make() -> Any:
            base = target.rebuild()
            outputs = classifier_outputs(base)
            return on_meta(lambda: new_head(base, outputs, num_classes or outputs))

        return replace(target, name=f"{target.name} + new head", model=make(), rebuild=make)
    if freeze == NONE and trainable is None:
        return target

    def frozen() -> Any:
        model = target.rebuild()
        select(model, freeze=freeze, trainable=trainable, what=target.name)
        return model

    return replace(target, model=frozen(), rebuild=frozen)
