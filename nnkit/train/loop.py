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

from nnkit.errors import CheckpointError, Interrupted, NnkitError, RunDirError, UsageError, first_line
from nnkit.train import checkpoint as ckpt
from nnkit.train import dist as D
from nnkit.train.config import Dataset, Freeze, Optimizer, Schedule, TrainConfig
from nnkit.train.data import Files

__all__ = ["Hooks", "Interrupted", "EvalResult", "TrainResult", "evaluate_checkpoint", "resume_config", "train"]

DENSE_BYTES = 2 << 30
STOP_SYNC_STEPS = 8  # under torchrun the ranks agree on a stop request every this many steps (one tiny all-reduce)


class StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM only set a flag while training; the loop looks at it between steps, where the
    weights, optimizer, RNG streams and step count agree, so the checkpoint it saves resumes exactly. A second
    Ctrl-C interrupts at once (and the run resumes from the last epoch boundary instead)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

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


def head_module(model: Any) -> tuple[str, Any]:
    """The classifier: the last module with parameters of its own (Linear in most nets, a Conv in SqueezeNet)."""
    last = None
    for name, m in model.named_modules():
        if any(True for _ in m.parameters(recurse=False)):
            last = (name, m)
    if last is None:
        raise UsageError("the model has no parameters")
    return last


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


def _build_model(cfg: TrainConfig, nclass: int, channels: int) -> Any:
    """The architecture for this data, its initial weights seeded by --seed."""
    import torch

    from nnkit.archs import build

    torch.manual_seed(cfg.seed)
    try:
        model = build(cfg.arch, num_classes=nclass, in_channels=channels, width=cfg.width)
    except NnkitError:  # build's own one-line refusals (--width on an architecture without it, ...)
        raise
    except Exception as exc:  # noqa: BLE001 - a builder that rejects the class count or the input
        raise UsageError(f"{cfg.arch} cannot be built for {nclass} classes and {channels} input channels "
                         f"({type(exc).__name__}: {first_line(exc)})") from exc
    if cfg.dropout is not None:  # the layers' own p: no parameter changes, so eval builds the model without it
        nn = torch.nn
        kinds = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
        drops = [m for m in model.modules() if isinstance(m, kinds)]
        if not drops:
            raise UsageError(f"--dropout: {cfg.arch} has no dropout layer")
        for m in drops:
            m.p = cfg.dropout
    return model


def _optimizer(cfg: TrainConfig, params: list[Any]) -> Any:
    import torch

    lr, wd = cfg.learning_rate, cfg.weight_decay
    if cfg.optimizer is Optimizer.sgd:
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=wd)
    if cfg.optimizer is Optimizer.adam:
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


def _freeze_backbone(model: Any) -> list[Any]:
    """Freeze every parameter but the head's; return the modules outside the head (kept in eval mode while
    training, so that BatchNorm running statistics and dropout of the frozen backbone do not change)."""
    head_name, head = head_module(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)
    return [m for name, m in model.named_modules()
            if not (name == head_name or name.startswith(head_name + ".")  # the head itself
                    or name == "" or head_name.startswith(name + "."))]  # a container of the head


def _train_mode(net: Any, frozen: list[Any]) -> None:
    net.train()
    for m in frozen:
        m.training = False  # this module only: its children are in the list too


# ---------------------------------------------------------------------------------------------- run directory


def default_run_dir(cfg: TrainConfig) -> Path:
    base = Path("runs") / f"{cfg.arch}-{cfg.dataset.value}"
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
        entries = sorted(p.name for p in path.iterdir())
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


def prepare_run_dir(path: Path) -> Path:
    """Create it and prove it is writable (after the data and the model were checked, before training)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".nnkit-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(f"--out {path}: not writable ({exc.strerror or exc})") from exc
    return path


# ---------------------------------------------------------------------------------------------- training


def _plain(value: Any) -> Any:
    return value.value if hasattr(value, "value") else value


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
    saved = TrainConfig.from_dict(state["config"])
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
    from nnkit.archs import get_arch

    cfg = cfg.validate().resolved()
    if cfg.freeze is Freeze.backbone and not cfg.weights:
        raise UsageError("--freeze backbone needs --weights PATH: without it the frozen backbone would stay "
                         "randomly initialised")
    hooks = hooks or Hooks()
    d = D.from_env()
    device = resolve_device(cfg.device, d)
    info = get_arch(cfg.arch)
    amp = amp_dtype(device) if cfg.amp else None
    run_dir = Path(os.path.expanduser(cfg.out)) if cfg.out else default_run_dir(cfg)
    if d.main:
        check_run_dir(run_dir, resuming=resume is not None)
    D.init(d, device)
    try:
        with StopRequest() as stop:
            return _train(cfg, resume, hooks, d, device, info, amp, run_dir, stop)
    except RuntimeError as exc:
        if not d.on:
            raise
        # gloo and nccl report a peer that died as a RuntimeError from the collective in backward()
        raise D.DistributedError(f"rank {d.rank} of {d.world}: training stopped, another rank failed or "
                                 f"disconnected ({first_line(exc, 200)}); resume with --resume {run_dir}") from exc
    finally:
        D.done(d)


def _train(cfg: TrainConfig, resume: dict[str, Any] | None, hooks: Hooks, d: D.Dist, device: Any, info: Any,
           amp: Any, run_dir: Path, stop: StopRequest) -> TrainResult:
    import contextlib

    import torch
    import torch.nn.functional as F

    from nnkit.train.augment import augment
    from nnkit.train.data import load_data
    from nnkit.train.metrics import plot_curves, write_metrics

    started = time.perf_counter()
    if d.main or not cfg.download:
        data = load_data(cfg, info.min_input, info.input, download=cfg.download and d.main)
    if d.on and cfg.download:
        D.barrier(d)
        if not d.main:
            data = load_data(cfg, info.min_input, info.input)
    nclass, (c, h, w) = len(data.classes), data.shape
    if resume is not None:
        if tuple(resume["classes"]) != data.classes or tuple(resume["input"]) != (c, h, w):
            raise CheckpointError(f"--resume {resume['path']}: the data now has {nclass} classes at {c}x{h}x{w}, "
                                  f"the run had {len(resume['classes'])} at "
                                  f"{'x'.join(map(str, resume['input']))}")

    model = _build_model(cfg, nclass, c)
    if cfg.weights and resume is None:
        taken, replaced = load_weights(model, cfg.weights)
        if replaced and d.main:
            hooks.note(f"--weights {cfg.weights}: {taken} tensors loaded; {len(replaced)} left new because their "
                       f"shape differs (a new head): {', '.join(replaced)}")
    frozen = _freeze_backbone(model) if cfg.freeze is Freeze.backbone else []
    if d.main:
        prepare_run_dir(run_dir)  # the data and the model are fine: only now the run directory is created
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
    partial = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, images of this epoch (at an interruption)
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
            partial_seconds = float(resume.get("partial_seconds", 0.0))

    g = torch.Generator(device=device)  # augmentation
    shuffle = torch.Generator()

    def rng_state() -> dict[str, Any]:
        return {"torch": torch.get_rng_state(), "augment": g.get_state().cpu(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda"
                else torch.empty(0, dtype=torch.uint8)}

    def state(epoch_done: int, step: int = 0, part: Any = None, secs: float = 0.0, kind: str = "last") -> dict:
        s = {"format": ckpt.FORMAT, "version": ckpt.VERSION, "kind": kind, "arch": cfg.arch,
             "arch_options": {"num_classes": nclass, "in_channels": c, "width": cfg.width},
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
        """This rank's (loss sum, correct, images) of the epoch so far; every step's share has hi - lo images."""
        return torch.stack([loss_acc * ((hi - lo) / scale), correct_acc.double(),
                            torch.tensor(float(seen), dtype=torch.float64, device=device)])

    _train_mode(net, frozen)
    epoch, completed, t0 = start_epoch, 0, time.perf_counter()
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
                partial = torch.zeros(3, dtype=torch.float64)
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
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
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
            sums = D.all_sum(d, epoch_sums()) + partial.to(device)  # partial: the interrupted run's sums, all ranks
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0 + partial_seconds
            ev = evaluate(model, xva, yva, a, b, nclass, max(gb, 256), device, cfg.channels_last, amp, cfg.workers)
            imgs = float(sums[2])
            row = {"epoch": epoch, "train_loss": float(sums[0]) / imgs, "train_accuracy": float(sums[1]) / imgs,
                   "val_loss": ev["loss"], "val_accuracy": ev["accuracy"],
                   "lr": opt.param_groups[0]["lr"], "images_per_s": imgs / max(seconds, 1e-9),
                   "seconds": seconds}
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
            part = partial + D.all_sum(d, epoch_sums()).cpu()  # every rank stopped at this same step
        if d.main:
            if part is not None:
                ckpt.save(state(epoch - 1, completed, part, secs), run_dir / "last.pt")
            write_metrics(run_dir, history)
        if not (run_dir / "last.pt").exists():
            raise Interrupted(f"interrupted in epoch {epoch} before the first checkpoint; nothing to resume, "
                              f"{run_dir} holds no run") from None
        raise Interrupted(f"interrupted in epoch {epoch}; continue with: nnkit train --resume {run_dir}") \
            from None
    if patience_left is not None and patience_left <= 0 and len(history) < cfg.epochs:
        stopped_early = True

    # Restore the best weights (early stopping or not) and measure them on the test split.
    D.barrier(d)
    if (run_dir / "best.pt").exists():
        model.load_state_dict(ckpt.load(run_dir / "best.pt", map_location=device)["model"])
    test_acc = test_loss = None
    if data.test is not None:
        ev = evaluate(model, data.test.x, data.test.y, a, b, nclass, max(gb, 256), device, cfg.channels_last, amp)
        test_acc, test_loss = ev["accuracy"], ev["loss"]
    if d.main:
        write_metrics(run_dir, history)
        if history:
            plot_curves(run_dir / "curves.png", history, f"{cfg.arch} on {data.name}")
        ckpt.write_json(run_dir / "summary.json", {"val_accuracy": best_acc, "best_epoch": best_epoch,
                                                   "epochs_run": len(history), "test_accuracy": test_acc,
                                                   "test_loss": test_loss, "stopped_early": stopped_early})
    D.barrier(d)
    return TrainResult(
        run_dir=str(run_dir), best_checkpoint=str(run_dir / "best.pt"), last_checkpoint=str(run_dir / "last.pt"),
        val_accuracy=best_acc, best_epoch=best_epoch, epochs_run=len(history), stopped_early=stopped_early,
        test_accuracy=test_acc, test_loss=test_loss, history=tuple(history), arch=cfg.arch, dataset=data.name,
        device=str(device), world_size=d.world, params=params, seconds=time.perf_counter() - started,
        images_per_s=images_seen / train_time if train_time else 0.0)


# ---------------------------------------------------------------------------------------------- evaluation


def evaluate_checkpoint(path: str, dataset: Dataset | None = None, data_dir: str | None = None,
                        split: str | None = None, device: str | None = None, batch_size: int = 256) -> EvalResult:
    """Evaluate a checkpoint; by default on the split it was validated on, with its own normalisation."""
    from nnkit.archs import build, get_arch
    from nnkit.train.data import load_data

    state = ckpt.load(path)
    cfg = TrainConfig.from_dict(state["config"])
    if dataset is not None and dataset is not cfg.dataset:
        cfg = replace(cfg, dataset=dataset, data_dir=data_dir or None)
    elif data_dir:
        cfg = replace(cfg, data_dir=data_dir)
    cfg = replace(cfg, download=False).validate()
    dev = resolve_device(device)
    info = get_arch(state["arch"])
    c, h, w = (int(v) for v in state["input"])
    data = load_data(cfg, (h, w), (c, h, w))
    split = split or "val"
    part = data.split(split)
    classes = tuple(state["classes"])
    if data.shape != (c, h, w):
        raise CheckpointError(f"{state['path']}: the model takes {c}x{h}x{w}, {data.name} gives "
                              f"{'x'.join(map(str, data.shape))}")
    if len(data.classes) != len(classes):
        raise CheckpointError(f"{state['path']}: the model has {len(classes)} classes, {data.name} has "
                              f"{len(data.classes)}")
    opts = state.get("arch_options", {})
    model = build(info.name, num_classes=len(classes), in_channels=c, width=opts.get("width"))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{state['path']}: weights do not fit {info.name} "
                              f"({first_line(exc)})") from exc
    model.to(dev)
    a, b = _normaliser(tuple(state["mean"]), tuple(state["std"]), dev)
    ev = evaluate(model, part.x, part.y, a, b, len(classes), batch_size, dev)
    conf = ev["confusion"]
    per_class = tuple((name, int(conf[i].sum()), float(conf[i, i]) / int(conf[i].sum()) if conf[i].sum() else None)
                      for i, name in enumerate(classes))
    return EvalResult(checkpoint=state["path"], arch=info.name, dataset=data.name, split=split,
                      images=ev["images"], loss=ev["loss"], accuracy=ev["accuracy"],
                      top5=ev["top5"] if len(classes) > 5 else None, per_class=per_class,
                      confusion=tuple(tuple(int(v) for v in r) for r in conf.tolist()), classes=classes)
