"""The model a run trains: built for the data (an architecture or a chain), its initial weights seeded, --weights
loaded, a transfer mode applied (nnkit.train.transfer) and --dropout set; and rebuilt from a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nnkit.errors import CheckpointError, NnkitError, UsageError, first_line
from nnkit.train import checkpoint as ckpt
from nnkit.train.config import Head, TrainConfig


def arch_info(arch: str) -> Any:
    """The ArchInfo of a named architecture, or one made for a chain written in the layer language."""
    from nnkit.archs import get_arch
    from nnkit.train.chain_model import chain_info, is_chain

    return chain_info(arch) if is_chain(arch) else get_arch(arch)


def load_weights(model: Any, path: str) -> tuple[int, list[str]]:
    """Copy every tensor whose name and shape match; a head of another class count stays new.

    Returns the number of tensors copied and the names of those left new because their shape differs."""
    import torch

    state = ckpt.load_state_dict(path)
    own = model.state_dict()
    taken, replaced = 0, []
    with torch.no_grad():
        for k, v in state.items():
            if k in own and own[k].shape == v.shape:
                own[k].copy_(v)
                taken += 1
            elif k in own:
                replaced.append(k)
    if taken == 0:
        raise CheckpointError(f"--weights {path}: no tensor matches this model by name and shape "
                              f"(weights for another architecture?)")
    return taken, replaced


def network(arch: str, nclass: int, channels: int, width: float | None) -> Any:
    """The architecture (or chain) for this data; a builder's refusal of the class count or input as one line."""
    from nnkit.train.chain_model import network

    try:
        return network(arch, num_classes=nclass, in_channels=channels, width=width)
    except NnkitError:  # build's own one-line refusals (--width on an architecture without it, ...)
        raise
    except Exception as exc:  # noqa: BLE001 - a builder that rejects the class count or the input
        raise UsageError(f"{arch} cannot be built for {nclass} classes and {channels} input channels "
                         f"({type(exc).__name__}: {first_line(exc)})") from exc


def set_dropout(model: Any, cfg: TrainConfig, frozen: list[Any] | tuple[Any, ...] = ()) -> None:
    """--dropout: every dropout layer's p (no parameter changes, so eval builds the model without it). Layers a
    transfer mode freezes stay in eval mode, where dropout does nothing: --dropout with only those is refused."""
    if cfg.dropout is None:
        return
    from torch import nn

    kinds = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
    drops = [m for m in model.modules() if isinstance(m, kinds)]
    if not drops:
        raise UsageError(f"--dropout: {cfg.arch} has no dropout layer")
    still = {id(sub) for f in frozen for sub in f.modules()}
    if all(id(m) in still for m in drops):
        raise UsageError(f"--dropout: every dropout layer of {cfg.arch} is frozen (--head new, --freeze, "
                         "--trainable), and frozen layers stay in eval mode, where dropout does nothing")
    for m in drops:
        m.p = cfg.dropout


@dataclass
class Built:
    model: Any
    frozen: list[Any]  # modules kept in eval mode while the rest trains
    options: dict[str, Any]  # the checkpoint's arch_options: what rebuilds this model (network_for)
    note: str | None = None


def build_model(cfg: TrainConfig, nclass: int, channels: int, resume: dict[str, Any] | None = None) -> Built:
    """The model for this data, its initial weights seeded by --seed, --weights loaded and the transfer mode
    applied (nnkit.train.transfer); on --resume the weights come later, from the checkpoint."""
    import torch

    from nnkit.train import transfer

    torch.manual_seed(cfg.seed)
    options: dict[str, Any] = {"num_classes": nclass, "in_channels": channels, "width": cfg.width}
    if cfg.head is Head.new:
        state = None if resume is not None else ckpt.load_state_dict(cfg.weights or "")
        if resume is not None:
            outputs = int(resume["arch_options"]["base_outputs"])
        else:
            from nnkit.introspect.build import on_meta

            outputs = transfer.base_outputs(state, on_meta(lambda: network(cfg.arch, nclass, channels,
                                                                           cfg.width)), cfg.weights or "")
        base = network(cfg.arch, outputs, channels, cfg.width)
        if state is not None:
            transfer.load_whole(base, state, cfg.weights or "")
        options.update(head=Head.new.value, base_outputs=outputs)
        set_dropout(base, cfg, [base])
        return Built(transfer.new_head(base, outputs, nclass), [m for _, m in base.named_modules()], options)
    model = network(cfg.arch, nclass, channels, cfg.width)
    note = None
    if cfg.weights and resume is None:
        taken, replaced = load_weights(model, cfg.weights)
        if replaced:
            note = (f"--weights {cfg.weights}: {taken} tensors loaded; {len(replaced)} left new because their "
                    f"shape differs (a new head): {', '.join(replaced)}")
    from nnkit.train.chain_model import is_chain

    frozen = transfer.select(model, freeze=cfg.freeze, trainable=cfg.trainable,
                             what="the chain" if is_chain(cfg.arch) else cfg.arch)
    set_dropout(model, cfg, frozen)
    return Built(model, frozen, options, note)


def network_for(state: dict[str, Any]) -> Any:
    """The model a checkpoint's weights belong to, rebuilt from its arch and arch_options (eval, ensembles)."""
    from nnkit.train import transfer

    opts = state.get("arch_options", {})
    c = int(state["input"][0])
    classes = len(state["classes"])
    if opts.get("head") == Head.new.value:
        outputs = int(opts["base_outputs"])
        return transfer.new_head(network(state["arch"], outputs, c, opts.get("width")), outputs, classes)
    return network(state["arch"], classes, c, opts.get("width"))


def check_model_memory(cfg: TrainConfig, info: Any) -> None:
    """A --width that multiplies the channels beyond memory: counted on the meta device first (at the
    architecture's own input channels and ten classes: the data is not loaded yet, and the head is a small
    part), refused before the data and the real weights, their gradients and optimizer state are allocated."""
    nclass, channels = 10, info.input[0]
    from nnkit.archs import build
    from nnkit.core.numbers import physical_memory
    from nnkit.introspect.build import on_meta

    try:
        model = on_meta(lambda: build(cfg.arch, num_classes=nclass, in_channels=channels, width=cfg.width))
    except Exception:  # noqa: BLE001 - the real build below says what is wrong, in its own words
        return
    need = 16 * sum(p.numel() for p in model.parameters())  # float32 weights, gradients, two Adam moments
    have = physical_memory()
    if have and need > have:
        raise UsageError(f"--width {cfg.width:g}: {cfg.arch} would have about {need // 16:,} parameters, "
                         f"{need / 2**30:,.1f} GiB to train, more than this machine's {have / 2**30:,.1f} GiB")
