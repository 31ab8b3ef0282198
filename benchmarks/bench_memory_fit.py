"""`nnkit summary NAME --train --memory M [--amp]` against real training steps: does the batch it finds fit?

    python benchmarks/bench_memory_fit.py [--models resnet18,resnet50,mobilenet_v2,vit_b_16] [--memory 8GiB]
    python benchmarks/bench_memory_fit.py --batch 8 [--amp]     # estimate vs measured peak at one batch

With --memory (CUDA only): for each model, the largest batch B the estimate fits into M (Adam, with and without
--amp), then one real training step at B and at the batch the measured per-item cost would allow, reporting the
measured peak (torch.cuda.max_memory_allocated, the second step, once Adam's state exists) against M.
With --batch: bench_models.py --memory's comparison, with --amp (torch.autocast, bf16) as nnkit train --amp runs
it; on a CPU the peak comes from the profiler's allocation events.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _step(model, opt, x, y, amp):
    import contextlib

    import torch

    dev = x.device.type
    ctx = torch.autocast(dev, dtype=torch.bfloat16) if amp else contextlib.nullcontext()

    def step() -> None:
        with ctx:
            out = model(x)
            out = out[0] if isinstance(out, tuple) else out
            loss = torch.nn.functional.cross_entropy(out.float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)

    return step


def measured_peak(name: str, batch: int, amp: bool, device: str) -> int:
    import torch

    from benchmarks.bench_models import _cpu_step_peak, _live_bytes
    from nnkit.archs import build, get_arch

    shape = get_arch(name).input
    torch.manual_seed(0)
    model = build(name).to(device).train()
    opt = torch.optim.Adam(model.parameters())
    x = torch.rand((batch, *shape), device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    step = _step(model, opt, x, y, amp)
    step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _live_bytes(model, opt, (x, y)) + _cpu_step_peak(step)
    del model, opt, x, y, step
    if device == "cuda":
        torch.cuda.empty_cache()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,resnet50,mobilenet_v2,vit_b_16")
    parser.add_argument("--memory", default=None, help="a budget such as 8GiB (CUDA)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--amp", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")
    import torch

    from nnkit.archs import get_arch
    from nnkit.cli.models import parse_bytes
    from nnkit.introspect.build import build_meta
    from nnkit.introspect.memory import Optimizer, estimate, largest_batch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU (profiler allocation events)"
    print(f"{where}, torch {torch.__version__}, Adam\n")
    names = args.models.split(",")
    if args.memory is None:
        print("| model | batch | amp | nnkit estimate | measured peak | error |\n|---|---:|---|---:|---:|---:|")
        for name in names:
            for amp in ((False, True) if args.amp else (False,)):
                est = estimate(build_meta(name), get_arch(name).input, batch=args.batch, optimizer=Optimizer.adam,
                               amp=amp).total
                peak = measured_peak(name, args.batch, amp, device)
                print(f"| {name} | {args.batch} | {'bf16' if amp else 'no'} | {est / 2**20:.1f} MiB | "
                      f"{peak / 2**20:.1f} MiB | {(est - peak) / peak:+.1%} |", flush=True)
        return
    budget = parse_bytes(args.memory)
    print(f"budget {args.memory} = {budget / 2**20:.0f} MiB\n")
    print("| model | amp | batch found | its estimate | measured peak | peak / budget |\n|---|---|---:|---:|---:|---:|")
    for name in names:
        for amp in (False, True):
            fit = largest_batch(build_meta(name), get_arch(name).input, memory=budget, optimizer=Optimizer.adam,
                                amp=amp)
            peak = measured_peak(name, fit.batch, amp, device)
            print(f"| {name} | {'bf16' if amp else 'no'} | {fit.batch} | {fit.estimate.total / 2**20:.0f} MiB | "
                  f"{peak / 2**20:.0f} MiB | {peak / budget:.3f} |", flush=True)


if __name__ == "__main__":
    main()
