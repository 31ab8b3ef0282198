"""The training loop and evaluation: `train(cfg)` -> TrainResult, `evaluate_checkpoint(path)` -> EvalResult.

Determinism, so that a resumed run equals one run straight through: the epoch's shuffle, the augmentation
generator and torch's global RNG (dropout) are seeded from (seed, epoch) at the start of every epoch, and a
Ctrl-C checkpoint saves their state mid-epoch. Resuming therefore replays exactly what an uninterrupted run
would draw (reseeding every step would be simpler, but torch.manual_seed costs ~70 us, 1-2% of a LeNet step).

Under torchrun each global batch of --batch-size images is cut into one contiguous share per rank and the loss
is summed and divided by the global batch size, so DDP's gradient average is the single-process gradient.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nnkit.errors import (
    CheckpointError,
    Interrupted,
    NnkitError,
    RunDirError,
    TrainingError,
    UsageError,
    first_line,
)
from nnkit.train import checkpoint as ckpt
from nnkit.train import dist as D
from nnkit.train.config import Dataset, Head, Optimizer, Schedule, TrainConfig
from nnkit.train.data import Files
from nnkit.train.transfer import head_module
from nnkit.train.rundir import LOCK_NAME, RunDir

__all__ = ["Hooks", "Interrupted", "EvalResult", "EnsembleResult", "TrainResult", "evaluate_checkpoint",
           "evaluate_ensemble", "head_module", "resume_config", "train"]

DENSE_BYTES = 2 << 30
STOP_SYNC_STEPS = 8  # under torchrun the ranks agree on a stop request every this many steps (one tiny all-reduce)


class StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM during a run.

    Inside the step loop (`deferring`) a signal only sets a flag; the loop looks at it between steps, where the
    weights, optimizer, RNG streams and step count agree, so the checkpoint it saves resumes exactly. A second
    Ctrl-C interrupts at once (and the run resumes from the last epoch boundary instead). Outside the loop
    (loading data, building the model, the final test and plots) there is no step to finish, so the signal
    interrupts at once, SIGTERM as Ctrl-C does. Under torchrun every signal waits for the loop, where the ranks
    agree on it (`always_defer`).
    """

    def __init__(self, always_defer: bool = False) -> None:
        self.requested = False
        self.deferring = False
        self.always_defer = always_defer
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        again = self.requested and signum == signal.SIGINT
        self.requested = True
        if again or not (self.deferring or self.always_defer):
            raise KeyboardInterrupt

    def check(self) -> None:
        """Between set-up phases: a signal that waited (always_defer) stops here in one process."""
        if self.requested and not self.always_defer:
            raise KeyboardInterrupt

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


class _Stop(Exception):
    """Raised by the loop itself at a step boundary when a stop was requested."""


@dataclass(frozen=True)
class TrainResult:
    run_dir: str
    best_checkpoint: str
    last_checkpoint: str
    val_accuracy: float  # the best validation accuracy (the weights in best.pt and in the returned model)
    best_epoch: int
    epochs_run: int  # epochs completed in total, including those before a resume
    stopped_early: bool
    test_accuracy: float | None
    test_loss: float | None
    history: tuple[dict[str, Any], ...]
    arch: str
    dataset: str
    device: str
    world_size: int
    params: int
    seconds: float
    images_per_s: float  # training images per second over this process's epochs (all ranks together)


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


class Hooks:
    """Progress callbacks (the CLI draws a progress bar with them); the loop itself prints nothing."""

    def epoch_start(self, epoch: int, epochs: int, steps: int, done: int) -> None: ...

    def step(self, epoch: int, step: int) -> None: ...

    def epoch_end(self, row: dict[str, Any]) -> None: ...

    def note(self, text: str) -> None:
        """Something the user should know that is not an error (the CLI prints it on stderr)."""

    def should_stop(self, row: dict[str, Any]) -> bool:
        """Asked after each epoch, once its checkpoints are written: True ends the run there as early stopping
        does (best weights restored, test split measured, summary written). nnkit tune's pruner stops this way."""
        return False


# ---------------------------------------------------------------------------------------------- pieces


def resolve_device(name: str | None, d: D.Dist | None = None) -> Any:
    import torch

    if name is None:
        if torch.cuda.is_available():
            name = "cuda"
        else:
            name = "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"--device {name}: not a device (cpu, cuda, cuda:1, mps)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine")
        if d is not None and d.on and dev.index is None:
            dev = torch.device("cuda", d.local_rank)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS is not available on this machine")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {name}: unsupported device type {dev.type}")
    return dev


def amp_dtype(device: Any) -> Any:
    """bf16 where the device has it (CPU, Ampere+ CUDA), else fp16 (older CUDA, with a GradScaler)."""
    import torch

    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16
    raise UsageError(f"--amp: mixed precision is not supported on {device.type} by nnkit (use cpu or cuda)")


def lr_at(step: int, total: int, per_epoch: int, cfg: TrainConfig) -> float:
    """The learning rate of step `step` (0-based) of `total`: linear warmup, then the schedule.

    onecycle is torch.optim.lr_scheduler.OneCycleLR with its defaults (Smith & Topin 2019; pct_start 0.3,
    div_factor 25, final_div_factor 1e4, cosine annealing), step for step; --warmup-epochs sets its rising phase.
    step multiplies by 0.1 after a third and after two thirds of the steps (MultiStepLR, gamma 0.1).
    """
    base = cfg.learning_rate
    warm = int(round(cfg.warmup_epochs * per_epoch))
    if cfg.schedule is Schedule.onecycle:
        lo, end = base / 25, base / 25 / 1e4
        up_end = float(warm - 1) if warm else 0.3 * total - 1  # OneCycleLR's phase end: pct_start*total - 1

        def anneal(start: float, stop: float, pct: float) -> float:
            return stop + (start - stop) / 2 * (math.cos(math.pi * pct) + 1)

        if step <= up_end:
            return anneal(lo, base, step / up_end) if up_end > 0 else base
        return anneal(base, end, (step - up_end) / max(1e-12, total - 1 - up_end))
    if step < warm:
        return base * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    if cfg.schedule is Schedule.cosine:
        return base * (1 + math.cos(math.pi * t)) / 2
    if cfg.schedule is Schedule.step:
        return base * 0.1 ** min(2, (3 * (step - warm)) // max(1, total - warm))
    return base


def _mix(*parts: int) -> int:
    """A 63-bit seed from several integers (splitmix-style), stable across Python runs (no hash())."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


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


def _normaliser(mean: tuple[float, ...], std: tuple[float, ...], device: Any) -> tuple[Any, Any]:
    """uint8 -> (x/255 - mean)/std as one multiply-add: x*a + b."""
    import torch

    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    return 1.0 / (255.0 * s), -m / s


def loader(files: Files, batches: list[list[int]], workers: int | None, device: Any) -> Any:
    """A DataLoader that decodes `files` in the given batches (the loop's own order), in worker processes,
    into pinned memory, two batches ahead per worker."""
    import torch

    w = min(8, os.cpu_count() or 1) if workers is None else workers
    return torch.utils.data.DataLoader(files, batch_sampler=batches, num_workers=w,
                                       pin_memory=device.type == "cuda", prefetch_factor=2 if w else None)


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


def _network(arch: str, nclass: int, channels: int, width: float | None) -> Any:
    """The architecture (or chain) for this data; a builder's refusal of the class count or input as one line."""
    from nnkit.train.chain_model import network

    try:
        return network(arch, num_classes=nclass, in_channels=channels, width=width)
    except NnkitError:  # build's own one-line refusals (--width on an architecture without it, ...)
        raise
    except Exception as exc:  # noqa: BLE001 - a builder that rejects the class count or the input
        raise UsageError(f"{arch} cannot be built for {nclass} classes and {channels} input channels "
                         f"({type(exc).__name__}: {first_line(exc)})") from exc


def _set_dropout(model: Any, cfg: TrainConfig, frozen: list[Any] | tuple[Any, ...] = ()) -> None:
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


def _build_model(cfg: TrainConfig, nclass: int, channels: int, resume: dict[str, Any] | None = None) -> Built:
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

            outputs = transfer.base_outputs(state, on_meta(lambda: _network(cfg.arch, nclass, channels,
                                                                            cfg.width)), cfg.weights or "")
        base = _network(cfg.arch, outputs, channels, cfg.width)
        if state is not None:
            transfer.load_whole(base, state, cfg.weights or "")
        options.update(head=Head.new.value, base_outputs=outputs)
        _set_dropout(base, cfg, [base])
        return Built(transfer.new_head(base, outputs, nclass), [m for _, m in base.named_modules()], options)
    model = _network(cfg.arch, nclass, channels, cfg.width)
    note = None
    if cfg.weights and resume is None:
        taken, replaced = load_weights(model, cfg.weights)
        if replaced:
            note = (f"--weights {cfg.weights}: {taken} tensors loaded; {len(replaced)} left new because their "
                    f"shape differs (a new head): {', '.join(replaced)}")
    from nnkit.train.chain_model import is_chain

    frozen = transfer.select(model, freeze=cfg.freeze, trainable=cfg.trainable,
                             what="the chain" if is_chain(cfg.arch) else cfg.arch)
    _set_dropout(model, cfg, frozen)
    return Built(model, frozen, options, note)


def network_for(state: dict[str, Any]) -> Any:
    """The model a checkpoint's weights belong to, rebuilt from its arch and arch_options (eval, ensembles)."""
    from nnkit.train import transfer

    opts = state.get("arch_options", {})
    c = int(state["input"][0])
    classes = len(state["classes"])
    if opts.get("head") == Head.new.value:
        outputs = int(opts["base_outputs"])
        return transfer.new_head(_network(state["arch"], outputs, c, opts.get("width")), outputs, classes)
    return _network(state["arch"], classes, c, opts.get("width"))


PARTIAL = 6  # the length of epoch_sums()


def _grad_norm(params: list[Any], clip: float | None, acc: Any) -> None:
    """The total 2-norm of the gradients (clipped to `clip` when given, torch.nn.utils.clip_grad_norm_), added to
    acc = (sum, steps, max) on the device, without a synchronisation. A step whose gradients are not finite
    (fp16 overflow, which the GradScaler skips) is left out of the statistics."""
    import torch

    if clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    norm = norm.detach().double()
    ok = torch.isfinite(norm)
    acc[0] += torch.where(ok, norm, 0.0)
    acc[1] += ok.double()
    acc[2] = torch.maximum(acc[2], torch.where(ok, norm, 0.0))


def _check_model_memory(cfg: TrainConfig, info: Any) -> None:
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


def _optimizer(cfg: TrainConfig, params: list[Any]) -> Any:
    import torch

    lr, wd = cfg.learning_rate, cfg.weight_decay
    if cfg.optimizer is Optimizer.sgd:
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=wd)
    if cfg.optimizer is Optimizer.adam:
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


# ---------------------------------------------------------------------------------------------- run directory


def default_run_dir(cfg: TrainConfig) -> Path:
    from nnkit.train.chain_model import is_chain

    base = Path("runs") / f"{'chain' if is_chain(cfg.arch) else cfg.arch}-{cfg.dataset.value}"
    p, i = base, 2
    while p.exists():
        p, i = Path(f"{base}-{i}"), i + 1
    return p


def check_run_dir(path: Path, resuming: bool) -> None:
    """Refuse, touching nothing, a --out that is a file or a directory holding anything (a new run goes into a
    new or empty directory; only --resume writes into a run directory again)."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--out {path}: exists and is not a directory")
    if resuming or not path.is_dir():
        return
    try:
        entries = sorted(p.name for p in path.iterdir() if p.name != LOCK_NAME)  # a dead run's lock is no file
    except OSError as exc:
        raise RunDirError(f"--out {path}: cannot read the directory ({exc.strerror or exc})") from exc
    if "last.pt" in entries:
        raise RunDirError(f"--out {path}: holds a run already (last.pt); continue it with --resume {path} "
                          f"or choose another --out")
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise RunDirError(f"--out {path}: not empty ({len(entries)} entr{'y' if len(entries) == 1 else 'ies'}: "
                          f"{shown}); a new run is written only into a new or empty directory, so choose "
                          f"another --out")


def prepare_run_dir(rundir: RunDir, resume: dict[str, Any] | None = None) -> Path:
    """Create the directory and own it (after the data and the model were checked, before training): writing
    the lock proves it writable. Whatever another run did before the lock was taken is checked again under it:
    a new run still needs an empty directory, a resumed one the checkpoint it loaded."""
    rundir.claim()
    check_run_dir(rundir.path, resuming=resume is not None)
    if resume is not None and "file_id" in resume and ckpt.file_id(resume["path"]) != resume["file_id"]:
        raise RunDirError(f"--resume {rundir.path}: {resume['path']} changed since it was read (another run "
                          f"wrote it meanwhile); run the same command again to continue from the new state")
    return rundir.path


# ---------------------------------------------------------------------------------------------- training


def _plain(value: Any) -> Any:
    return value.value if hasattr(value, "value") else value


def saved_config(state: dict[str, Any]) -> TrainConfig:
    """The TrainConfig a checkpoint recorded; an edited one (a wrong type, an unknown choice, a value that
    makes no sense) is a CheckpointError, not an internal error."""
    try:
        return TrainConfig.from_dict(state["config"]).validate()
    except UsageError as exc:
        raise CheckpointError(f"{state['path']}: its recorded settings do not hold ({exc}); edited?") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{state['path']}: its recorded settings are malformed ({first_line(exc, 80)}); "
                              f"edited?") from None


def resume_config(source: str, cfg_epochs: int | None, **overrides: Any) -> tuple[TrainConfig, dict[str, Any]]:
    """The saved config of the run in `source` (a run dir or a checkpoint), with --epochs applied.

    overrides: settings the user gave again (arch, dataset): a value other than the run's is refused. The CLI
    refuses every other training option given with --resume before it gets here (--device, --data-dir and
    --workers may change: they do not change what is trained).
    """
    state = ckpt.load(source)
    if state.get("kind") != "last" or "optimizer" not in state:
        raise CheckpointError(f"--resume {state['path']}: a {state.get('kind', 'weights')} checkpoint holds no "
                              f"optimizer state; resume from the run directory or its last.pt")
    saved = saved_config(state)
    for key, value in overrides.items():
        if value is None:
            continue
        old = getattr(saved, key)
        if _plain(old) != _plain(value):
            raise CheckpointError(f"--resume {state['path']}: the run trained {key} '{_plain(old)}', not "
                                  f"'{_plain(value)}'; start a new run with --out instead")
    cfg = replace(saved, epochs=saved.epochs if cfg_epochs is None else cfg_epochs,
                  out=str(Path(state["path"]).parent))
    if cfg.epochs < int(state["epoch"]):
        raise UsageError(f"--epochs {cfg.epochs}: the run has completed {state['epoch']} epochs already "
                         f"(--epochs is the total)")
    return cfg.validate(), state


def train(cfg: TrainConfig, resume: dict[str, Any] | None = None, hooks: Hooks | None = None) -> TrainResult:
    """Train cfg.arch on cfg.dataset; `resume` is a checkpoint from resume_config().

    Ctrl-C and SIGTERM (in the main thread) save a resumable checkpoint at the next step boundary and raise
    Interrupted.
    """
    cfg = cfg.validate().resolved()
    hooks = hooks or Hooks()
    d = D.from_env()
    device = resolve_device(cfg.device, d)
    info = arch_info(cfg.arch)
    if cfg.width is not None:
        _check_model_memory(cfg, info)
    amp = amp_dtype(device) if cfg.amp else None
    run_dir = Path(os.path.expanduser(cfg.out)) if cfg.out else default_run_dir(cfg)
    rundir = RunDir(run_dir, "--out" if resume is None else "--resume", new=resume is None)
    if d.main:
        rundir.probe()
        check_run_dir(run_dir, resuming=resume is not None)
    D.init(d, device)
    try:
        with StopRequest(always_defer=d.on) as stop:
            return _train(cfg, resume, hooks, d, device, info, amp, rundir, stop)
    except KeyboardInterrupt:  # outside the step loop's own handling: loading data, building the model
        if (run_dir / "last.pt").exists():
            raise Interrupted(f"interrupted; continue with: nnkit train --resume {run_dir}") from None
        raise Interrupted("interrupted before the first checkpoint; nothing was kept (run the same command "
                          "again to start over)") from None
    except RuntimeError as exc:
        if not d.on:
            raise
        # gloo and nccl report a peer that died as a RuntimeError from the collective in backward()
        raise D.DistributedError(f"rank {d.rank} of {d.world}: training stopped, another rank failed or "
                                 f"disconnected ({first_line(exc, 200)}); resume with --resume {run_dir}") from exc
    finally:
        rundir.release()  # without a checkpoint this takes back what the run wrote: --out accepts it again
        D.done(d)


def arch_info(arch: str) -> Any:
    """The ArchInfo of a named architecture, or one made for a chain written in the layer language."""
    from nnkit.archs import get_arch
    from nnkit.train.chain_model import chain_info, is_chain

    return chain_info(arch) if is_chain(arch) else get_arch(arch)


def _train(cfg: TrainConfig, resume: dict[str, Any] | None, hooks: Hooks, d: D.Dist, device: Any, info: Any,
           amp: Any, rundir: RunDir, stop: StopRequest) -> TrainResult:
    import contextlib

    import torch
    import torch.nn.functional as F

    from nnkit.train.augment import augment
    from nnkit.train.data import load_data
    from nnkit.train.metrics import plot_curves, write_metrics

    started = time.perf_counter()
    run_dir = rundir.path
    if d.main or not cfg.download:
        data = load_data(cfg, info.min_input, info.input, download=cfg.download and d.main)
    if d.on and cfg.download:
        D.barrier(d)
        if not d.main:
            data = load_data(cfg, info.min_input, info.input)
    nclass, (c, h, w) = len(data.classes), data.shape
    if info.family == "chain":
        from nnkit.train.chain_model import check_fits

        check_fits(cfg.arch, data.shape, nclass, data.name, new_head=cfg.head is Head.new)
    if resume is not None:
        if tuple(resume["classes"]) != data.classes or tuple(resume["input"]) != (c, h, w):
            raise CheckpointError(f"--resume {resume['path']}: the data now has {nclass} classes at {c}x{h}x{w}, "
                                  f"the run had {len(resume['classes'])} at "
                                  f"{'x'.join(map(str, resume['input']))}")

    built = _build_model(cfg, nclass, c, resume)
    model, frozen = built.model, built.frozen
    if built.note and d.main:
        hooks.note(built.note)
    stop.check()
    if d.main:
        prepare_run_dir(rundir, resume)  # the data and the model are fine: only now the directory is made
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]

    opt = _optimizer(cfg, trainable)
    scaler = torch.amp.GradScaler(device.type) if amp is torch.float16 else None

    # Data on the device. Normalised float32 where that takes at most DENSE_BYTES (MNIST at 32x32: 221 MB, CIFAR:
    # 614 MB), so a batch is one gather; uint8 (a quarter of that) and a multiply-add per batch above it.
    a, b = _normaliser(data.mean, data.std, device)
    streamed = isinstance(data.train.x, Files)  # a large image folder: decoded by DataLoader workers per batch
    xtr, ytr = data.train.x if streamed else data.train.x.to(device), data.train.y.to(device)
    dense = not streamed and xtr.numel() * 4 <= DENSE_BYTES
    if dense:
        xtr = xtr.float().mul_(a).add_(b)
    xva = data.val.x if isinstance(data.val.x, Files) else data.val.x.to(device)
    yva = data.val.y.to(device)
    n = len(ytr)
    gb = min(cfg.batch_size, n)
    steps = max(1, n // gb)  # drop the last partial batch: every step has the same size (and every rank a share)
    if d.on and gb < d.world:
        raise UsageError(f"--batch-size {gb} is smaller than the {d.world} processes")
    total = cfg.epochs * steps

    net = model
    if d.on:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # Gradients allocated before DDP becomes views into its buckets (gradient_as_bucket_view: no copy), and
        # kept (zeroed, not set to None) so that autograd accumulates into them: a gradient autograd allocates
        # itself may have other strides (a 1-channel conv) and makes DDP warn "Grad strides do not match".
        for p in trainable:
            p.grad = torch.zeros_like(p)
        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                  gradient_as_bucket_view=True)
    if cfg.compile:
        net = torch.compile(net)

    history: list[dict[str, Any]] = []
    best_acc, best_epoch, start_epoch, start_step = -1.0, 0, 1, 0
    partial = torch.zeros(PARTIAL, dtype=torch.float64)  # this epoch's sums so far, at an interruption (epoch_sums)
    partial_seconds = 0.0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        history = [dict(r) for r in resume["history"]]
        best_acc, best_epoch = float(resume["best_val_accuracy"]), int(resume["best_epoch"])
        start_epoch, start_step = int(resume["epoch"]) + 1, int(resume.get("step", 0))
        if start_step:  # an epoch cut short by Ctrl-C: `epoch` counts the completed ones, `step` this one's
            partial = resume["partial"].to(dtype=torch.float64)
            partial = torch.cat([partial, torch.zeros(PARTIAL - len(partial), dtype=torch.float64)])  # older runs
            partial_seconds = float(resume.get("partial_seconds", 0.0))

    g = torch.Generator(device=device)  # augmentation
    shuffle = torch.Generator()

    def rng_state() -> dict[str, Any]:
        return {"torch": torch.get_rng_state(), "augment": g.get_state().cpu(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda"
                else torch.empty(0, dtype=torch.uint8)}

    def state(epoch_done: int, step: int = 0, part: Any = None, secs: float = 0.0, kind: str = "last") -> dict:
        s = {"format": ckpt.FORMAT, "version": ckpt.VERSION, "kind": kind, "arch": cfg.arch,
             "arch_options": built.options,
             "input": [c, h, w], "classes": list(data.classes), "dataset": data.name, "val_from": data.val_from,
             "test_from": data.test_from, "mean": list(data.mean), "std": list(data.std), "config": cfg.to_dict(),
             "epoch": epoch_done,
             "step": step, "history": history, "best_val_accuracy": best_acc, "best_epoch": best_epoch,
             "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "rng": rng_state()}
        if kind == "last":
            s["optimizer"] = opt.state_dict()
            s["scaler"] = scaler.state_dict() if scaler is not None else {}
            if part is not None:
                s["partial"], s["partial_seconds"] = part.cpu(), secs
        return s

    if d.main:
        ckpt.write_json(run_dir / "config.json", {**cfg.to_dict(), "val_from": data.val_from,
                                                  "test_from": data.test_from,
                                                  "classes": list(data.classes), "input": [c, h, w],
                                                  "world_size": d.world, "device": str(device),
                                                  "params": params})  # nnkit runs reads it without torch
    stopped_early = False
    images_seen, train_time = 0, 0.0
    ctx = (lambda: torch.autocast(device.type, dtype=amp)) if amp is not None else contextlib.nullcontext
    lo = d.rank * gb // d.world  # this rank's share of every global batch
    hi = (d.rank + 1) * gb // d.world
    # DDP averages gradients over ranks, so this rank's mean loss times world*share/gb gives the mean over the
    # global batch; 1 when the batch splits evenly (always in one process), and then no multiply at all.
    scale = d.world * (hi - lo) / gb
    patience_left = None
    if cfg.patience is not None:
        patience_left = cfg.patience - (len(history) - best_epoch if history else 0)

    def epoch_sums() -> Any:
        """This epoch's (loss sum, correct, images, gradient norm sum, steps counted in it, gradient norm max) so
        far, all ranks together (every step's share has hi - lo images), the interrupted run's part included.
        The gradient norms are taken after DDP's all-reduce, so every rank has the same ones: not summed."""
        local = torch.stack([loss_acc * ((hi - lo) / scale), correct_acc.double(),
                             torch.tensor(float(seen), dtype=torch.float64, device=device)])
        old = partial.to(device)
        return torch.cat([D.all_sum(d, local) + old[:3], grads[:2] + old[3:5],
                          torch.maximum(grads[2:], old[5:])])

    from nnkit.train.transfer import train_mode

    train_mode(net, frozen)
    epoch, completed, t0 = start_epoch, 0, time.perf_counter()
    stop.check()
    stop.deferring = True  # from here a signal waits for the next step boundary
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            if patience_left is not None and patience_left <= 0:
                stopped_early = True
                break
            shuffle.manual_seed(_mix(cfg.seed, epoch))
            perm = torch.randperm(n, generator=shuffle).to(device)
            first = start_step if epoch == start_epoch else 0
            completed = first
            if first == 0:
                partial = torch.zeros(PARTIAL, dtype=torch.float64)
                partial_seconds = 0.0
                # Random streams per epoch (augmentation; dropout and the like): an epoch replays identically.
                g.manual_seed(_mix(cfg.seed, epoch, 1))
                torch.manual_seed(_mix(cfg.seed, epoch, 2))
            else:  # resuming inside an epoch: the streams as they were at the interruption
                rng = resume["rng"]
                g.set_state(rng["augment"].to(g.get_state().device))
                torch.set_rng_state(rng["torch"])
                if device.type == "cuda" and rng["cuda"].numel():
                    torch.cuda.set_rng_state(rng["cuda"], device)
            if streamed:
                stream = iter(loader(xtr, [perm[s * gb + lo: s * gb + hi].tolist() for s in range(first, steps)],
                                     cfg.workers, device))
            loss_acc = torch.zeros((), dtype=torch.float64, device=device)
            correct_acc = torch.zeros((), dtype=torch.long, device=device)
            grads = torch.zeros(3, dtype=torch.float64, device=device)  # norm sum, steps counted, max
            seen = 0
            hooks.epoch_start(epoch, cfg.epochs, steps, first)
            t0 = time.perf_counter()
            for step in range(first, steps):
                if stop.requested if not d.on else ((step - first) % STOP_SYNC_STEPS == 0
                                                    and D.any_rank(d, stop.requested, device)):
                    raise _Stop
                for group in opt.param_groups:
                    group["lr"] = lr_at((epoch - 1) * steps + step, total, steps, cfg)
                idx = perm[step * gb + lo: step * gb + hi]
                if dense:
                    xb = xtr[idx]
                else:
                    xb = (next(stream).to(device, non_blocking=True) if streamed else xtr[idx]).float()
                    xb = xb.mul_(a).add_(b)
                yb = ytr[idx]
                xb = augment(xb, cfg.augment, g, (lo, hi, gb) if d.on else None)
                if cfg.channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                with ctx():
                    out = net(xb)
                    loss = F.cross_entropy(out.float(), yb, label_smoothing=cfg.label_smoothing)
                if scale != 1.0:
                    loss = loss * scale
                opt.zero_grad(set_to_none=not d.on)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)  # the norm (and the clip) of the true gradients
                    _grad_norm(trainable, cfg.clip_grad, grads)
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    _grad_norm(trainable, cfg.clip_grad, grads)
                    opt.step()
                # accumulated on the device (no synchronisation inside the epoch); neither needs autograd
                loss_acc += loss.detach()
                correct_acc += (out.argmax(1) == yb).sum()
                seen += len(yb)
                completed = step + 1
                try:
                    hooks.step(epoch, step)
                except KeyboardInterrupt:  # a hook's Ctrl-C comes at a step boundary too: stop there, cleanly
                    stop.requested = True
            sums = epoch_sums()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0 + partial_seconds
            ev = evaluate(model, xva, yva, a, b, nclass, max(gb, 256), device, cfg.channels_last, amp, cfg.workers)
            imgs = float(sums[2])
            row = {"epoch": epoch, "train_loss": float(sums[0]) / imgs, "train_accuracy": float(sums[1]) / imgs,
                   "val_loss": ev["loss"], "val_accuracy": ev["accuracy"],
                   "lr": opt.param_groups[0]["lr"], "images_per_s": imgs / max(seconds, 1e-9),
                   "seconds": seconds,
                   "grad_norm_mean": float(sums[3]) / float(sums[4]) if float(sums[4]) else None,
                   "grad_norm_max": float(sums[5]) if float(sums[4]) else None}
            if not (math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])):
                # the weights are lost to NaN/inf from here on: saving them would overwrite the last good state
                kept = (f"last.pt keeps epoch {epoch - 1}, the last finite state" if epoch > 1 else
                        "no epoch ended finite, so nothing was kept")
                which, key = ("training", "train_loss") if not math.isfinite(row["train_loss"]) else \
                    ("validation", "val_loss")
                raise TrainingError(f"epoch {epoch}: the {which} loss became {_show_float(row[key])} at learning "
                                    f"rate {cfg.learning_rate:g}; stopped ({kept}); try a lower --lr")
            images_seen += int(imgs)
            train_time += seconds
            history.append(row)
            improved = ev["accuracy"] > best_acc
            if improved:
                best_acc, best_epoch = ev["accuracy"], epoch
            if patience_left is not None:
                patience_left = cfg.patience if improved else patience_left - 1
            if d.main:
                if improved:
                    ckpt.save(state(epoch, kind="best"), run_dir / "best.pt")
                ckpt.save(state(epoch), run_dir / "last.pt")
                write_metrics(run_dir, history)
            completed = 0  # last.pt now holds this epoch whole
            hooks.epoch_end(row)
            if hooks.should_stop(row):
                stopped_early = True
                break
        else:
            epoch = cfg.epochs
    except (KeyboardInterrupt, _Stop) as exc:
        # At a step boundary (_Stop), save the steps of this epoch done so far, so that --resume replays the rest
        # exactly. Anywhere else (a second Ctrl-C) the state is torn: last.pt keeps the last whole epoch.
        part = None
        if isinstance(exc, _Stop) and 0 < completed < steps:
            secs = time.perf_counter() - t0 + partial_seconds
            part = epoch_sums().cpu()  # every rank stopped at this same step
            if not torch.isfinite(part).all():  # diverged inside this epoch: keep the last whole, finite epoch
                part = None
        if d.main:
            if part is not None:
                ckpt.save(state(epoch - 1, completed, part, secs), run_dir / "last.pt")
            write_metrics(run_dir, history)
        if not (run_dir / "last.pt").exists():
            raise Interrupted(f"interrupted in epoch {epoch} before the first checkpoint; nothing was kept (run "
                              f"the same command again to start over)") from None
        raise Interrupted(f"interrupted in epoch {epoch}; continue with: nnkit train --resume {run_dir}") \
            from None
    stop.deferring = False  # no step to finish any more: a signal during the test and plots stops at once
    try:
        # a signal during the last epoch's evaluation or checkpoint: the run stops here
        if D.any_rank(d, stop.requested, device) if d.on else stop.requested:
            raise KeyboardInterrupt
        if patience_left is not None and patience_left <= 0 and len(history) < cfg.epochs:
            stopped_early = True

        # Restore the best weights (early stopping or not) and measure them on the test split.
        D.barrier(d)
        if (run_dir / "best.pt").exists():
            model.load_state_dict(ckpt.load(run_dir / "best.pt", map_location=device)["model"])
        test_acc = test_loss = None
        if data.test is not None:
            ev = evaluate(model, data.test.x, data.test.y, a, b, nclass, max(gb, 256), device, cfg.channels_last,
                          amp, cfg.workers)
            test_acc, test_loss = ev["accuracy"], ev["loss"]
        if d.main:
            write_metrics(run_dir, history)
            if history:
                plot_curves(run_dir / "curves.png", history, f"{cfg.arch} on {data.name}")
            ckpt.write_json(run_dir / "summary.json", {"val_accuracy": best_acc, "best_epoch": best_epoch,
                                                       "epochs_run": len(history), "test_accuracy": test_acc,
                                                       "test_loss": test_loss, "stopped_early": stopped_early})
        D.barrier(d)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted after the last epoch, during the final test; the checkpoints are "
                          f"complete, finish with: nnkit train --resume {run_dir}") from None
    return TrainResult(
        run_dir=str(run_dir), best_checkpoint=str(run_dir / "best.pt"), last_checkpoint=str(run_dir / "last.pt"),
        val_accuracy=best_acc, best_epoch=best_epoch, epochs_run=len(history), stopped_early=stopped_early,
        test_accuracy=test_acc, test_loss=test_loss, history=tuple(history), arch=cfg.arch, dataset=data.name,
        device=str(device), world_size=d.world, params=params, seconds=time.perf_counter() - started,
        images_per_s=images_seen / train_time if train_time else 0.0)


def _show_float(x: float) -> str:
    return "NaN (not a number)" if math.isnan(x) else "infinite"


# ---------------------------------------------------------------------------------------------- evaluation


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
    a, b = _normaliser(tuple(state["mean"]), tuple(state["std"]), dev)
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
        a, b = _normaliser(tuple(st["mean"]), tuple(st["std"]), dev)  # each member its own normalisation
        logp = _log_probabilities(model, part.x, a, b, batch_size, dev)
        del model
        members.append(_scored(logp, part.y, classes, st["path"], name, *where))
        total = logp.exp() if total is None else total.add_(logp.exp())
    mean = (total / len(states)).clamp_min_(torch.finfo(torch.float64).tiny).log_()
    ensemble = _scored(mean, part.y, classes, f"ensemble of {len(states)}",
                       " + ".join(dict.fromkeys(m.arch for m in members)), *where)
    return EnsembleResult(ensemble=ensemble, members=tuple(members))
