"""Evaluation: a model on uint8 images (each epoch's validation, the final test), a checkpoint on a split, and an
ensemble of checkpoints (the mean of their probabilities) beside each member alone."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from nnkit.errors import CheckpointError, first_line
from nnkit.train import checkpoint as ckpt
from nnkit.train.checkpoint import saved_config
from nnkit.train.config import Dataset
from nnkit.train.data import Files, loader, normaliser
from nnkit.train.device import resolve_device
from nnkit.train.model import arch_info, network_for


@dataclass(frozen=True)
class EvalResult:
    checkpoint: str
    arch: str
    dataset: str
    split: str
    images: int
    loss: float
    accuracy: float
    top5: float | None  # None with 5 classes or fewer
    per_class: tuple[tuple[str, int, float | None], ...]  # (class, images, accuracy; None: no image of it)
    confusion: tuple[tuple[int, ...], ...]  # rows: true class, columns: predicted
    classes: tuple[str, ...] = field(default=())


def evaluate(model: Any, x: Any, y: Any, a: Any, b: Any, num_classes: int, batch: int, device: Any,
             channels_last: bool = False, amp: Any = None, workers: int | None = None) -> dict[str, Any]:
    """Loss, top-1, top-5 and the confusion matrix of `model` on uint8 images `x` (on any device)."""
    import contextlib

    import torch
    import torch.nn.functional as F

    modes = [(m, m.training) for m in model.modules()]  # a frozen backbone stays in eval mode afterwards
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=device)
    top5 = torch.zeros((), dtype=torch.long, device=device)
    conf = torch.zeros(num_classes * num_classes, dtype=torch.long, device=device)
    k = min(5, num_classes)
    if isinstance(x, Files):
        batches: Any = iter(loader(x, [list(range(i, min(i + batch, len(y)))) for i in range(0, len(y), batch)],
                                   workers, device))
    with torch.inference_mode():
        for i in range(0, len(y), batch):
            xb = next(batches) if isinstance(x, Files) else x[i:i + batch]
            xb = xb.to(device, non_blocking=True).float().mul_(a).add_(b)
            yb = y[i:i + batch].to(device, non_blocking=True)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            ctx = torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
            with ctx:
                out = model(xb)
            out = out.float()
            loss += F.cross_entropy(out, yb, reduction="sum").double()
            pred = out.argmax(1)
            conf += torch.bincount(yb * num_classes + pred, minlength=num_classes * num_classes)
            top5 += (out.topk(k, 1).indices == yb[:, None]).any(1).sum()
    for m, mode in modes:
        m.training = mode
    n = max(1, len(y))
    c = conf.view(num_classes, num_classes).cpu()
    return {"loss": float(loss) / n, "accuracy": float(c.diag().sum()) / n, "top5": float(top5) / n,
            "confusion": c, "images": len(y)}


def _eval_data(state: dict[str, Any], dataset: Dataset | None, data_dir: str | None, split: str | None) -> Any:
    """The split a checkpoint is evaluated on (by default the one it was validated on), checked against it."""
    from nnkit.train.data import load_data

    cfg = saved_config(state)
    if dataset is not None and dataset is not cfg.dataset:
        cfg = replace(cfg, dataset=dataset, data_dir=data_dir or None)
    elif data_dir:
        cfg = replace(cfg, data_dir=data_dir)
    cfg = replace(cfg, download=False).validate()
    c, h, w = (int(v) for v in state["input"])
    data = load_data(cfg, (h, w), (c, h, w))
    if data.shape != (c, h, w):
        raise CheckpointError(f"{state['path']}: the model takes {c}x{h}x{w}, {data.name} gives "
                              f"{'x'.join(map(str, data.shape))}")
    if len(data.classes) != len(state["classes"]):
        raise CheckpointError(f"{state['path']}: the model has {len(state['classes'])} classes, {data.name} has "
                              f"{len(data.classes)}")
    return data, data.split(split or "val")


def _load_model(state: dict[str, Any], dev: Any) -> tuple[str, Any]:
    """The checkpoint's model with its weights, on `dev`, and the architecture's name."""
    name = arch_info(state["arch"]).name
    model = network_for(state)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{state['path']}: weights do not fit {name} ({first_line(exc)})") from exc
    return name, model.to(dev)


def _per_class(conf: Any, classes: tuple[str, ...]) -> tuple[tuple[str, int, float | None], ...]:
    return tuple((name, int(conf[i].sum()), float(conf[i, i]) / int(conf[i].sum()) if conf[i].sum() else None)
                 for i, name in enumerate(classes))


def evaluate_checkpoint(path: str, dataset: Dataset | None = None, data_dir: str | None = None,
                        split: str | None = None, device: str | None = None, batch_size: int = 256) -> EvalResult:
    """Evaluate a checkpoint; by default on the split it was validated on, with its own normalisation."""
    state = ckpt.load(path)
    data, part = _eval_data(state, dataset, data_dir, split)
    dev = resolve_device(device)
    name, model = _load_model(state, dev)
    classes = tuple(state["classes"])
    a, b = normaliser(tuple(state["mean"]), tuple(state["std"]), dev)
    ev = evaluate(model, part.x, part.y, a, b, len(classes), batch_size, dev)
    conf = ev["confusion"]
    return EvalResult(checkpoint=state["path"], arch=name, dataset=data.name, split=split or "val",
                      images=ev["images"], loss=ev["loss"], accuracy=ev["accuracy"],
                      top5=ev["top5"] if len(classes) > 5 else None, per_class=_per_class(conf, classes),
                      confusion=tuple(tuple(int(v) for v in r) for r in conf.tolist()), classes=classes)


@dataclass(frozen=True)
class EnsembleResult:
    ensemble: EvalResult  # the mean of the members' probabilities; its checkpoint is "ensemble of N"
    members: tuple[EvalResult, ...]  # each member on the same images, from its own probabilities


def _log_probabilities(model: Any, x: Any, a: Any, b: Any, batch: int, device: Any) -> Any:
    """log_softmax of the model's outputs on uint8 images `x`, in eval mode, as one float64 CPU tensor."""
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        if isinstance(x, Files):
            batches = loader(x, [list(range(i, min(i + batch, len(x)))) for i in range(0, len(x), batch)], None,
                             device)
        else:
            batches = (x[i:i + batch] for i in range(0, len(x), batch))
        for xb in batches:
            xb = xb.to(device, non_blocking=True).float().mul_(a).add_(b)
            out.append(torch.log_softmax(model(xb).double(), 1).cpu())
    return torch.cat(out)


def _scored(logp: Any, y: Any, classes: tuple[str, ...], checkpoint: str, arch: str, dataset: str,
            split: str) -> EvalResult:
    import torch
    import torch.nn.functional as F

    k = len(classes)
    pred = logp.argmax(1)
    conf = torch.bincount(y * k + pred, minlength=k * k).view(k, k)
    top5 = float((logp.topk(min(5, k), 1).indices == y[:, None]).any(1).double().mean()) if len(y) else 0.0
    n = max(1, len(y))
    return EvalResult(checkpoint=checkpoint, arch=arch, dataset=dataset, split=split, images=len(y),
                      loss=float(F.nll_loss(logp, y, reduction="sum")) / n, accuracy=float(conf.diag().sum()) / n,
                      top5=top5 if k > 5 else None, per_class=_per_class(conf, classes),
                      confusion=tuple(tuple(int(v) for v in r) for r in conf.tolist()), classes=classes)


def evaluate_ensemble(paths: list[str], dataset: Dataset | None = None, data_dir: str | None = None,
                      split: str | None = None, device: str | None = None,
                      batch_size: int = 256) -> EnsembleResult:
    """The ensemble of several checkpoints (the mean of their probabilities) and each member alone, on the first
    member's data; every member must take the same input and name the same classes in the same order."""
    import torch

    states = [ckpt.load(p) for p in paths]
    first = states[0]
    for st in states[1:]:
        if list(st["classes"]) != list(first["classes"]):
            shown = ", ".join(map(str, st["classes"][:4])) + (", ..." if len(st["classes"]) > 4 else "")
            raise CheckpointError(f"{st['path']}: its {len(st['classes'])} classes ({shown}) differ from "
                                  f"{first['path']}'s {len(first['classes'])}; an ensemble averages the same "
                                  "classes")
        if list(st["input"]) != list(first["input"]):
            raise CheckpointError(f"{st['path']}: takes {'x'.join(map(str, st['input']))}, {first['path']} takes "
                                  f"{'x'.join(map(str, first['input']))}; an ensemble's members take one input")
    data, part = _eval_data(first, dataset, data_dir, split)
    dev = resolve_device(device)
    classes = tuple(first["classes"])
    where = (data.name, split or "val")
    total = None
    members = []
    for st in states:
        name, model = _load_model(st, dev)
        a, b = normaliser(tuple(st["mean"]), tuple(st["std"]), dev)  # each member its own normalisation
        logp = _log_probabilities(model, part.x, a, b, batch_size, dev)
        del model
        members.append(_scored(logp, part.y, classes, st["path"], name, *where))
        total = logp.exp() if total is None else total.add_(logp.exp())
    mean = (total / len(states)).clamp_min_(torch.finfo(torch.float64).tiny).log_()
    ensemble = _scored(mean, part.y, classes, f"ensemble of {len(states)}",
                       " + ".join(dict.fromkeys(m.arch for m in members)), *where)
    return EnsembleResult(ensemble=ensemble, members=tuple(members))
