"""Training throughput (images/s) of `nnkit train` against a plain minimal PyTorch loop and against the
textbook torchvision pipeline (datasets.MNIST + Resize + ToTensor + Normalize + DataLoader), in one run, on
the same model, data, batch size and optimizer.

    python benchmarks/bench_train.py                      # LeNet-5 on MNIST-sized data (60,000 images, 28x28)
    python benchmarks/bench_train.py --images 20000 --epochs 2 --workers 0,2
    python benchmarks/bench_train.py --suite gpu          # resnet18 at 32x32 and resnet50 at 224, +-amp/NHWC

The data are random images with a class-dependent bar, written as real MNIST IDX files (or CIFAR batches for
the GPU suite) into a temporary folder, so each pipeline reads them the way it would read the real data set.
Goals (issue 5): nnkit >= 0.97x the plain loop, >= 2x the textbook pipeline. Each pipeline runs --epochs
epochs, --rounds times, interleaved with the others, and reports its best epoch (the first pays for warm-up,
and the machine may be shared); the measured region is the training steps of an epoch, device synchronised at
both ends. Output: a markdown table on stdout, ready for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Peak dense tensor throughput, FLOP/s, for "fraction of peak" (vendor data sheets, without sparsity).
PEAKS = {"H100 80GB HBM3": (989e12, 67e12), "H100 PCIe": (756e12, 51e12), "H200": (989e12, 67e12),
         "A100": (312e12, 19.5e12)}  # (bf16, fp32)


def write_mnist(root: Path, n: int, n_test: int = 1000) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, k in (("train", n), ("t10k", n_test)):
        y = rng.integers(0, 10, size=k).astype(np.uint8)
        x = rng.integers(0, 60, size=(k, 28, 28), dtype=np.uint8)
        rows = 2 + 2 * y.astype(np.int64)
        for dy in (0, 1):
            x[np.arange(k), rows + dy, 4:24] = 250
        for name, a in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
            header = bytes([0, 0, 8, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
            (raw / name).write_bytes(header + a.tobytes())


def write_cifar(root: Path, n: int) -> None:
    import pickle

    import numpy as np

    rng = np.random.default_rng(0)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    per = max(1, n // 5)
    for name, k in [(f"data_batch_{i}", per) for i in range(1, 6)] + [("test_batch", 1000)]:
        with open(base / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, size=(k, 3072), dtype=np.uint8),
                         "labels": rng.integers(0, 10, size=k).tolist()}, f, protocol=4)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_nnkit(arch: str, dataset: str, data_dir: Path, args, amp=False, channels_last=False) -> float:
    from nnkit.train.config import Dataset, TrainConfig
    from nnkit.train.loop import train

    with tempfile.TemporaryDirectory() as out:
        r = train(TrainConfig(arch=arch, dataset=Dataset(dataset), data_dir=str(data_dir), epochs=args.epochs,
                              batch_size=args.batch_size, augment=(), device=args.device, amp=amp,
                              channels_last=channels_last, out=str(Path(out) / "run")))
    return max(row["images_per_s"] for row in r.history)


def run_plain(arch: str, x, y, args, amp=False, channels_last=False) -> float:
    """The minimal loop: normalised float tensors on the device, randperm batches, AdamW, nothing else."""
    import contextlib

    import torch
    import torch.nn.functional as F

    from nnkit.archs import build

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    model = build(arch, num_classes=10, in_channels=x.shape[1]).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = x.to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = y.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    b = args.batch_size
    steps = len(y) // b
    best = 0.0
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    for _ in range(args.epochs):
        perm = torch.randperm(len(y), device=device)
        sync(device)
        t0 = time.perf_counter()
        for i in range(steps):
            idx = perm[i * b:(i + 1) * b]
            with ctx():
                loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        best = max(best, steps * b / (time.perf_counter() - t0))
    return best


def run_textbook(data_dir: Path, n: int, args, workers: int) -> float:
    """torchvision datasets + per-sample PIL transforms + DataLoader, as in the PyTorch tutorials."""
    import torch
    import torch.nn.functional as F
    from torchvision import datasets, transforms

    from nnkit.archs import build

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tf = transforms.Compose([transforms.Resize(32), transforms.ToTensor(),
                             transforms.Normalize((0.1307,), (0.3081,))])
    ds = datasets.MNIST(str(data_dir), train=True, transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                                         pin_memory=device.type == "cuda", drop_last=True,
                                         persistent_workers=workers > 0)
    torch.manual_seed(0)
    model = build("lenet5", num_classes=10, in_channels=1).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    steps = n // args.batch_size  # the same number of images as the others train on
    best = 0.0
    for _ in range(args.epochs):
        sync(device)
        t0 = time.perf_counter()
        for i, (xb, yb) in enumerate(loader):
            if i == steps:
                break
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        best = max(best, steps * args.batch_size / (time.perf_counter() - t0))
    return best


def machine(device) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    where = (f"{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads")
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)}; " + where
    return where


def cpu_suite(args) -> list[str]:
    import torch

    from nnkit.train.config import Dataset, TrainConfig
    from nnkit.train.data import load_data

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_mnist(root, args.images)
        # The plain loop trains on exactly nnkit's training split, already normalised, at 32x32.
        data = load_data(TrainConfig(dataset=Dataset.mnist, data_dir=str(root)), (32, 32), (1, 32, 32))
        mean, std = data.mean[0], data.std[0]
        x = (data.train.x.float() / 255 - mean) / std
        runs = {"nnkit train (tensors on the device)": lambda: run_nnkit("lenet5", "mnist", root, args),
                "plain PyTorch loop": lambda: run_plain("lenet5", x, data.train.y, args)}
        for w in args.workers:
            runs[f"torchvision MNIST + ToTensor + DataLoader (workers={w})"] = \
                lambda w=w: run_textbook(root, len(data.train), args, w)
        best = {name: 0.0 for name in runs}
        # interleaved, so that load from other processes hits every pipeline alike
        for _ in range(args.rounds):
            for name, fn in runs.items():
                best[name] = max(best[name], fn())
                print(f"{name}: {best[name]:,.0f} images/s", file=sys.stderr, flush=True)
        rows = list(best.items())
        ours = rows[0][1]
    lines.append(f"LeNet-5 on MNIST-sized data ({len(data.train):,} training images, 28x28 read, 32x32 "
                 f"trained), batch {args.batch_size}, AdamW, no augmentation, best epoch of {args.rounds} "
                 f"interleaved rounds of {args.epochs} epochs; "
                 f"{machine(device)}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    lines.append("")
    lines.append("| pipeline | images/s | nnkit / this |")
    lines.append("|---|---:|---:|")
    for name, v in rows:
        lines.append(f"| {name} | {v:,.0f} | {ours / v:.2f}x |")
    return lines


def gpu_suite(args) -> list[str]:
    import torch

    from nnkit.archs import get_arch
    from nnkit.train.config import Dataset, TrainConfig
    from nnkit.train.data import load_data

    device = torch.device(args.device or "cuda")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAKS.items() if k in name), None)
    lines = [f"{machine(device)}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; batch {args.batch_size}, "
             f"AdamW, best of {args.epochs} epochs; training FLOPs = 3 x 2 x MACs per image (forward + "
             "backward)",
             "",
             "| model | input | flags | nnkit images/s | plain loop images/s | nnkit / plain | fraction of "
             "peak |",
             "|---|---|---|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_cifar(root, args.images)
        for arch, dataset in (("resnet18", "cifar10"), ("resnet50", "synthetic")):
            cfg = TrainConfig(arch=arch, dataset=Dataset(dataset), data_dir=str(root),
                              synthetic_size=min(args.images, 4096))
            info = get_arch(arch)
            size = (32, 32) if dataset == "cifar10" else info.input[1:]
            data = load_data(cfg, info.min_input, info.input)
            x = (data.train.x.float() / 255 - torch.tensor(data.mean).view(1, -1, 1, 1)) / \
                torch.tensor(data.std).view(1, -1, 1, 1)
            # conv MACs scale with area
            macs = info.macs * (size[0] * size[1]) / (info.input[1] * info.input[2])
            for amp, cl in ((False, False), (True, True)):
                sub = argparse.Namespace(**{**vars(args)})
                if dataset == "synthetic":
                    with tempfile.TemporaryDirectory() as out:
                        from nnkit.train.loop import train

                        r = train(TrainConfig(arch=arch, dataset=Dataset.synthetic, epochs=args.epochs,
                                              synthetic_size=cfg.synthetic_size, batch_size=args.batch_size,
                                              augment=(), device=args.device, amp=amp, channels_last=cl,
                                              out=str(Path(out) / "run")))
                        ours = max(row["images_per_s"] for row in r.history)
                else:
                    ours = run_nnkit(arch, dataset, root, sub, amp=amp, channels_last=cl)
                plain = run_plain(arch, x, data.train.y, sub, amp=amp, channels_last=cl)
                flops = ours * 6 * macs
                frac = f"{flops / peak[0 if amp else 1]:.1%}" if peak else "-"
                lines.append(f"| {arch} | {size[0]}x{size[1]} | "
                             f"{'--amp --channels-last' if amp else '(fp32)'} | {ours:,.0f} | {plain:,.0f} | "
                             f"{ours / plain:.2f}x | {frac} |")
                print(lines[-1], file=sys.stderr, flush=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=60000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="Run every pipeline this many times, interleaved.")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default=None)
    ap.add_argument("--workers", default="0,2", help="DataLoader workers for the textbook pipeline, e.g. 0,2")
    ap.add_argument("--suite", choices=("cpu", "gpu"), default="cpu")
    args = ap.parse_args()
    args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    lines = cpu_suite(args) if args.suite == "cpu" else gpu_suite(args)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
