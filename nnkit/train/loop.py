"""The training loop: `train(cfg)` -> TrainResult, one epoch's steps in `train_one_epoch`.

Its pieces live beside it: the model a run trains (nnkit.train.model; transfer learning in nnkit.train.transfer),
the optimizer and the learning-rate schedule (nnkit.train.optim), the run directory (nnkit.train.rundir) and
evaluation (nnkit.train.evaluation, whose public names are importable from here too).

Determinism, so that a resumed run equals one run straight through: the epoch's shuffle, the augmentation
generator and torch's global RNG (dropout) are seeded from (seed, epoch) at the start of every epoch, and a
Ctrl-C checkpoint saves their state mid-epoch. Resuming therefore replays exactly what an uninterrupted run
would draw (reseeding every step would be simpler, but torch.manual_seed costs ~70 us, 1-2% of a LeNet step).

Under torchrun each global batch of --batch-size images is cut into one contiguous share per rank and the loss
is summed and divided by the global batch size, so DDP's gradient average is the single-process gradient.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nnkit.errors import CheckpointError, Interrupted, TrainingError, UsageError, first_line
from nnkit.train import checkpoint as ckpt
from nnkit.train import dist as D
from nnkit.train.checkpoint import saved_config
from nnkit.train.config import Head, TrainConfig
from nnkit.train.data import Files, loader, normaliser
from nnkit.train.device import amp_dtype, resolve_device
# evaluate is looked up here at every epoch, so that a test can stand in for it (nnkit.train.loop.evaluate)
from nnkit.train.evaluation import EnsembleResult, EvalResult, evaluate, evaluate_checkpoint, evaluate_ensemble
from nnkit.train.model import Built, arch_info, build_model, check_model_memory
from nnkit.train.optim import grad_norm, lr_at, make_optimizer
from nnkit.train.rundir import RunDir, check_run_dir, default_run_dir, prepare_run_dir
from nnkit.train.transfer import head_module

__all__ = ["Hooks", "Interrupted", "EvalResult", "EnsembleResult", "TrainResult", "evaluate_checkpoint",
           "evaluate_ensemble", "head_module", "lr_at", "mix_seed", "resume_config", "train", "train_one_epoch"]

DENSE_BYTES = 2 << 30
STOP_SYNC_STEPS = 8  # under torchrun the ranks agree on a stop request every this many steps (one tiny all-reduce)
PARTIAL = 6  # the length of _Run.epoch_sums()


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


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (splitmix-style), stable across Python runs (no hash())."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


# ---------------------------------------------------------------------------------------------- resuming


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


# ---------------------------------------------------------------------------------------------- training


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
        check_model_memory(cfg, info)
    amp = amp_dtype(device) if cfg.amp else None
    run_dir = Path(os.path.expanduser(cfg.out)) if cfg.out else default_run_dir(cfg)
    rundir = RunDir(run_dir, "--out" if resume is None else "--resume", new=resume is None)
    if d.main:
        rundir.probe()
        check_run_dir(run_dir, resuming=resume is not None)
    D.init(d, device)
    try:
        with StopRequest(always_defer=d.on) as stop:
            started = time.perf_counter()
            run = _setup(cfg, resume, hooks, d, device, info, amp, rundir, stop)
            _fit(run, hooks, stop)
            return _finish(run, stop, started)
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


@dataclass
class _Sums:
    """One epoch's running sums on the device (no synchronisation inside the epoch); `seen` counts images."""

    loss: Any
    correct: Any
    grads: Any  # gradient norm sum, steps counted, max
    seen: int = 0


@dataclass
class _Run:
    """Everything the epochs of one run share, set up once by _setup and advanced by train_one_epoch."""

    cfg: TrainConfig
    resume: dict[str, Any] | None
    d: D.Dist
    device: Any
    amp: Any
    run_dir: Path
    data: Any
    input: list[int]  # [c, h, w]
    built: Built
    net: Any  # the model, wrapped by DDP and torch.compile where asked
    opt: Any
    scaler: Any
    trainable: list[Any]
    params: int
    # this rank's data on the device: x*a + b normalises a uint8 batch (already done on xtr when dense)
    a: Any
    b: Any
    xtr: Any
    ytr: Any
    xva: Any
    yva: Any
    streamed: bool
    dense: bool
    gb: int  # the global batch
    steps: int  # per epoch
    lo: int  # this rank's share of every global batch: images lo:hi
    hi: int
    scale: float
    g: Any  # augmentation's generator
    shuffle: Any
    partial: Any  # this epoch's sums so far, at an interruption (epoch_sums)
    partial_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_acc: float = -1.0
    best_epoch: int = 0
    start_epoch: int = 1
    start_step: int = 0
    patience_left: int | None = None
    stopped_early: bool = False
    images_seen: int = 0
    train_time: float = 0.0
    completed: int = 0  # steps of the current epoch done (0: last.pt holds the last epoch whole)
    t0: float = field(default_factory=time.perf_counter)
    sums: _Sums | None = None

    @property
    def model(self) -> Any:
        return self.built.model

    def autocast(self) -> Any:
        import torch

        return torch.autocast(self.device.type, dtype=self.amp) if self.amp is not None else \
            contextlib.nullcontext()

    def restore(self, resume: dict[str, Any]) -> None:
        """A resumed run's weights, optimizer (and scaler) state, history, and its place in the epoch it was in."""
        import torch

        self.model.load_state_dict(resume["model"])
        self.opt.load_state_dict(resume["optimizer"])
        if self.scaler is not None and resume.get("scaler"):
            self.scaler.load_state_dict(resume["scaler"])
        self.history = [dict(r) for r in resume["history"]]
        self.best_acc, self.best_epoch = float(resume["best_val_accuracy"]), int(resume["best_epoch"])
        self.start_epoch, self.start_step = int(resume["epoch"]) + 1, int(resume.get("step", 0))
        if self.start_step:  # an epoch cut short by Ctrl-C: `epoch` counts the completed ones, `step` this one's
            partial = resume["partial"].to(dtype=torch.float64)
            self.partial = torch.cat([partial, torch.zeros(PARTIAL - len(partial), dtype=torch.float64)])  # older runs
            self.partial_seconds = float(resume.get("partial_seconds", 0.0))

    def rng_state(self) -> dict[str, Any]:
        import torch

        return {"torch": torch.get_rng_state(), "augment": self.g.get_state().cpu(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda"
                else torch.empty(0, dtype=torch.uint8)}

    def state(self, epoch_done: int, step: int = 0, part: Any = None, secs: float = 0.0,
              kind: str = "last") -> dict:
        """The checkpoint after `epoch_done` whole epochs and `step` steps of the next (part: their sums)."""
        cfg, data = self.cfg, self.data
        s = {"format": ckpt.FORMAT, "version": ckpt.VERSION, "kind": kind, "arch": cfg.arch,
             "arch_options": self.built.options,
             "input": self.input, "classes": list(data.classes), "dataset": data.name, "val_from": data.val_from,
             "test_from": data.test_from, "mean": list(data.mean), "std": list(data.std), "config": cfg.to_dict(),
             "epoch": epoch_done,
             "step": step, "history": self.history, "best_val_accuracy": self.best_acc,
             "best_epoch": self.best_epoch,
             "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
             "rng": self.rng_state()}
        if kind == "last":
            s["optimizer"] = self.opt.state_dict()
            s["scaler"] = self.scaler.state_dict() if self.scaler is not None else {}
            if part is not None:
                s["partial"], s["partial_seconds"] = part.cpu(), secs
        return s

    def epoch_sums(self) -> Any:
        """This epoch's (loss sum, correct, images, gradient norm sum, steps counted in it, gradient norm max) so
        far, all ranks together (every step's share has hi - lo images), the interrupted run's part included.
        The gradient norms are taken after DDP's all-reduce, so every rank has the same ones: not summed."""
        import torch

        acc = self.sums
        assert acc is not None
        local = torch.stack([acc.loss * ((self.hi - self.lo) / self.scale), acc.correct.double(),
                             torch.tensor(float(acc.seen), dtype=torch.float64, device=self.device)])
        old = self.partial.to(self.device)
        return torch.cat([D.all_sum(self.d, local) + old[:3], acc.grads[:2] + old[3:5],
                          torch.maximum(acc.grads[2:], old[5:])])


def _load_data(cfg: TrainConfig, resume: dict[str, Any] | None, d: D.Dist, info: Any) -> Any:
    """The data (under torchrun rank 0 downloads, the others wait for it), checked against a chain and against
    the run being resumed."""
    from nnkit.train.data import load_data

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
    return data


def _setup(cfg: TrainConfig, resume: dict[str, Any] | None, hooks: Hooks, d: D.Dist, device: Any, info: Any,
           amp: Any, rundir: RunDir, stop: StopRequest) -> _Run:
    """The data and the model checked, the run directory claimed, the model, optimizer and data on the device,
    and the state of a resumed run restored."""
    import torch

    run_dir = rundir.path
    data = _load_data(cfg, resume, d, info)
    nclass, (c, h, w) = len(data.classes), data.shape
    built = build_model(cfg, nclass, c, resume)
    model = built.model
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

    opt = make_optimizer(cfg, trainable)
    scaler = torch.amp.GradScaler(device.type) if amp is torch.float16 else None

    # Data on the device. Normalised float32 where that takes at most DENSE_BYTES (MNIST at 32x32: 221 MB, CIFAR:
    # 614 MB), so a batch is one gather; uint8 (a quarter of that) and a multiply-add per batch above it.
    a, b = normaliser(data.mean, data.std, device)
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

    lo = d.rank * gb // d.world  # this rank's share of every global batch
    hi = (d.rank + 1) * gb // d.world
    run = _Run(
        cfg=cfg, resume=resume, d=d, device=device, amp=amp, run_dir=run_dir, data=data, input=[c, h, w],
        built=built, net=net, opt=opt, scaler=scaler, trainable=trainable, params=params, a=a, b=b, xtr=xtr,
        ytr=ytr, xva=xva, yva=yva, streamed=streamed, dense=dense, gb=gb, steps=steps, lo=lo, hi=hi,
        # DDP averages gradients over ranks, so this rank's mean loss times world*share/gb gives the mean over the
        # global batch; 1 when the batch splits evenly (always in one process), and then no multiply at all.
        scale=d.world * (hi - lo) / gb,
        g=torch.Generator(device=device), shuffle=torch.Generator(), partial=torch.zeros(PARTIAL, dtype=torch.float64))
    if resume is not None:
        run.restore(resume)
    if d.main:
        ckpt.write_json(run_dir / "config.json", {**cfg.to_dict(), "val_from": data.val_from,
                                                  "test_from": data.test_from,
                                                  "classes": list(data.classes), "input": [c, h, w],
                                                  "world_size": d.world, "device": str(device),
                                                  "params": params})  # nnkit runs reads it without torch
    if cfg.patience is not None:
        run.patience_left = cfg.patience - (len(run.history) - run.best_epoch if run.history else 0)
    return run


def train_one_epoch(run: _Run, epoch: int, hooks: Hooks, stop: StopRequest) -> tuple[Any, float]:
    """The steps of epoch `epoch` (from where a resumed run stopped), and the epoch's sums (epoch_sums) and
    seconds; raises _Stop at a step boundary when a stop was requested."""
    import torch
    import torch.nn.functional as F

    from nnkit.train.augment import augment

    cfg, d, device, steps, gb, lo, hi = run.cfg, run.d, run.device, run.steps, run.gb, run.lo, run.hi
    run.shuffle.manual_seed(mix_seed(cfg.seed, epoch))
    perm = torch.randperm(len(run.ytr), generator=run.shuffle).to(device)
    first = run.start_step if epoch == run.start_epoch else 0
    run.completed = first
    if first == 0:
        run.partial = torch.zeros(PARTIAL, dtype=torch.float64)
        run.partial_seconds = 0.0
        # Random streams per epoch (augmentation; dropout and the like): an epoch replays identically.
        run.g.manual_seed(mix_seed(cfg.seed, epoch, 1))
        torch.manual_seed(mix_seed(cfg.seed, epoch, 2))
    else:  # resuming inside an epoch: the streams as they were at the interruption
        assert run.resume is not None
        rng = run.resume["rng"]
        run.g.set_state(rng["augment"].to(run.g.get_state().device))
        torch.set_rng_state(rng["torch"])
        if device.type == "cuda" and rng["cuda"].numel():
            torch.cuda.set_rng_state(rng["cuda"], device)
    if run.streamed:
        stream = iter(loader(run.xtr, [perm[s * gb + lo: s * gb + hi].tolist() for s in range(first, steps)],
                             cfg.workers, device))
    acc = run.sums = _Sums(torch.zeros((), dtype=torch.float64, device=device),
                           torch.zeros((), dtype=torch.long, device=device),
                           torch.zeros(3, dtype=torch.float64, device=device))
    total = cfg.epochs * steps
    opt, scaler = run.opt, run.scaler
    hooks.epoch_start(epoch, cfg.epochs, steps, first)
    run.t0 = time.perf_counter()
    for step in range(first, steps):
        if stop.requested if not d.on else ((step - first) % STOP_SYNC_STEPS == 0
                                            and D.any_rank(d, stop.requested, device)):
            raise _Stop
        for group in opt.param_groups:
            group["lr"] = lr_at((epoch - 1) * steps + step, total, steps, cfg)
        idx = perm[step * gb + lo: step * gb + hi]
        if run.dense:
            xb = run.xtr[idx]
        else:
            xb = (next(stream).to(device, non_blocking=True) if run.streamed else run.xtr[idx]).float()
            xb = xb.mul_(run.a).add_(run.b)
        yb = run.ytr[idx]
        xb = augment(xb, cfg.augment, run.g, (lo, hi, gb) if d.on else None)
        if cfg.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with run.autocast():
            out = run.net(xb)
            loss = F.cross_entropy(out.float(), yb, label_smoothing=cfg.label_smoothing)
        if run.scale != 1.0:
            loss = loss * run.scale
        opt.zero_grad(set_to_none=not d.on)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)  # the norm (and the clip) of the true gradients
            grad_norm(run.trainable, cfg.clip_grad, acc.grads)
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            grad_norm(run.trainable, cfg.clip_grad, acc.grads)
            opt.step()
        # accumulated on the device (no synchronisation inside the epoch); neither needs autograd
        acc.loss += loss.detach()
        acc.correct += (out.argmax(1) == yb).sum()
        acc.seen += len(yb)
        run.completed = step + 1
        try:
            hooks.step(epoch, step)
        except KeyboardInterrupt:  # a hook's Ctrl-C comes at a step boundary too: stop there, cleanly
            stop.requested = True
    sums = run.epoch_sums()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return sums, time.perf_counter() - run.t0 + run.partial_seconds


def _end_epoch(run: _Run, epoch: int, sums: Any, seconds: float, ev: dict[str, Any], hooks: Hooks) -> bool:
    """Record the epoch (its row, the best weights, the checkpoints, the metrics files); True: stop here."""
    from nnkit.train.metrics import write_metrics

    cfg = run.cfg
    imgs = float(sums[2])
    row = {"epoch": epoch, "train_loss": float(sums[0]) / imgs, "train_accuracy": float(sums[1]) / imgs,
           "val_loss": ev["loss"], "val_accuracy": ev["accuracy"],
           "lr": run.opt.param_groups[0]["lr"], "images_per_s": imgs / max(seconds, 1e-9),
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
    run.images_seen += int(imgs)
    run.train_time += seconds
    run.history.append(row)
    improved = ev["accuracy"] > run.best_acc
    if improved:
        run.best_acc, run.best_epoch = ev["accuracy"], epoch
    if run.patience_left is not None:
        run.patience_left = cfg.patience if improved else run.patience_left - 1
    if run.d.main:
        if improved:
            ckpt.save(run.state(epoch, kind="best"), run.run_dir / "best.pt")
        ckpt.save(run.state(epoch), run.run_dir / "last.pt")
        write_metrics(run.run_dir, run.history)
    run.completed = 0  # last.pt now holds this epoch whole
    hooks.epoch_end(row)
    return hooks.should_stop(row)


def _fit(run: _Run, hooks: Hooks, stop: StopRequest) -> None:
    """The epochs, each trained, validated and recorded; an interruption saves what resumes exactly."""
    import torch

    from nnkit.train.transfer import train_mode

    cfg = run.cfg
    train_mode(run.net, run.built.frozen)
    epoch = run.start_epoch
    stop.check()
    stop.deferring = True  # from here a signal waits for the next step boundary
    try:
        for epoch in range(run.start_epoch, cfg.epochs + 1):
            if run.patience_left is not None and run.patience_left <= 0:
                run.stopped_early = True
                break
            sums, seconds = train_one_epoch(run, epoch, hooks, stop)
            ev = evaluate(run.model, run.xva, run.yva, run.a, run.b, len(run.data.classes), max(run.gb, 256),
                          run.device, cfg.channels_last, run.amp, cfg.workers)
            if _end_epoch(run, epoch, sums, seconds, ev, hooks):
                run.stopped_early = True
                break
    except (KeyboardInterrupt, _Stop) as exc:
        from nnkit.train.metrics import write_metrics

        # At a step boundary (_Stop), save the steps of this epoch done so far, so that --resume replays the rest
        # exactly. Anywhere else (a second Ctrl-C) the state is torn: last.pt keeps the last whole epoch.
        run_dir, part = run.run_dir, None
        if isinstance(exc, _Stop) and 0 < run.completed < run.steps:
            secs = time.perf_counter() - run.t0 + run.partial_seconds
            part = run.epoch_sums().cpu()  # every rank stopped at this same step
            if not torch.isfinite(part).all():  # diverged inside this epoch: keep the last whole, finite epoch
                part = None
        if run.d.main:
            if part is not None:
                ckpt.save(run.state(epoch - 1, run.completed, part, secs), run_dir / "last.pt")
            write_metrics(run_dir, run.history)
        if not (run_dir / "last.pt").exists():
            raise Interrupted(f"interrupted in epoch {epoch} before the first checkpoint; nothing was kept (run "
                              f"the same command again to start over)") from None
        raise Interrupted(f"interrupted in epoch {epoch}; continue with: nnkit train --resume {run_dir}") \
            from None


def _finish(run: _Run, stop: StopRequest, started: float) -> TrainResult:
    """The best weights restored and measured on the test split, the curves and summary.json written."""
    from nnkit.render.plot import plot_curves  # the run directory's picture, drawn where every picture is
    from nnkit.train.metrics import write_metrics

    cfg, d, device, run_dir, data, history = run.cfg, run.d, run.device, run.run_dir, run.data, run.history
    stop.deferring = False  # no step to finish any more: a signal during the test and plots stops at once
    try:
        # a signal during the last epoch's evaluation or checkpoint: the run stops here
        if D.any_rank(d, stop.requested, device) if d.on else stop.requested:
            raise KeyboardInterrupt
        if run.patience_left is not None and run.patience_left <= 0 and len(history) < cfg.epochs:
            run.stopped_early = True

        # Restore the best weights (early stopping or not) and measure them on the test split.
        D.barrier(d)
        if (run_dir / "best.pt").exists():
            run.model.load_state_dict(ckpt.load(run_dir / "best.pt", map_location=device)["model"])
        test_acc = test_loss = None
        if data.test is not None:
            ev = evaluate(run.model, data.test.x, data.test.y, run.a, run.b, len(data.classes), max(run.gb, 256),
                          device, cfg.channels_last, run.amp, cfg.workers)
            test_acc, test_loss = ev["accuracy"], ev["loss"]
        if d.main:
            write_metrics(run_dir, history)
            if history:
                plot_curves(run_dir / "curves.png", history, f"{cfg.arch} on {data.name}")
            ckpt.write_json(run_dir / "summary.json", {"val_accuracy": run.best_acc, "best_epoch": run.best_epoch,
                                                       "epochs_run": len(history), "test_accuracy": test_acc,
                                                       "test_loss": test_loss, "stopped_early": run.stopped_early})
        D.barrier(d)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted after the last epoch, during the final test; the checkpoints are "
                          f"complete, finish with: nnkit train --resume {run_dir}") from None
    return TrainResult(
        run_dir=str(run_dir), best_checkpoint=str(run_dir / "best.pt"), last_checkpoint=str(run_dir / "last.pt"),
        val_accuracy=run.best_acc, best_epoch=run.best_epoch, epochs_run=len(history),
        stopped_early=run.stopped_early, test_accuracy=test_acc, test_loss=test_loss, history=tuple(history),
        arch=cfg.arch, dataset=data.name, device=str(device), world_size=d.world, params=run.params,
        seconds=time.perf_counter() - started,
        images_per_s=run.images_seen / run.train_time if run.train_time else 0.0)


def _show_float(x: float) -> str:
    return "NaN (not a number)" if math.isnan(x) else "infinite"
