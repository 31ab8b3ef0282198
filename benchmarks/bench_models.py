"""The analysis step of nnkit against fvcore's FlopCountAnalysis and torchinfo's summary, in one run.

    python benchmarks/bench_models.py [--repeat 5] [--models resnet50,mobilenet_v2,vit_b_16]

All in one process, after `import torch` (paid once by every tool alike), interleaved so that machine load
hits all tools alike; medians of --repeat runs after one warm-up. What each column times:
  nnkit summary (name): what `nnkit summary|rf NAME` computes after startup: analyze(NAME) builds the model on
      the meta device and traces it once (every module call recorded, a dispatch mode counting MACs and
      following fields);
  nnkit summary: the analysis step alone, analyze_model() on a meta model built beforehand (not timed), as
      the command runs it without --explain (no per-row formulas);
  nnkit flops: the same without receptive fields (fields=False), what params/flops/shape need;
  fvcore: FlopCountAnalysis(model, x).total() + parameter_count(model) on a CPU model built beforehand (not
  timed); torchinfo: torchinfo.summary(model, input_size, verbose=0) on the same CPU model.
Ratios are nnkit / other: the goal is < 0.2x.

    python benchmarks/bench_models.py --memory [--batch 32]

Compares `nnkit summary NAME --train --batch B --optimizer adam` with what one real training step holds at its
peak: torch.cuda.max_memory_allocated on a CUDA machine, the same quantity from the profiler's allocation
events on the CPU (see memory()).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--models", default="resnet50,mobilenet_v2,vit_b_16")
    parser.add_argument("--memory", action="store_true", help="estimated vs measured training memory (CUDA)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (default: torch's choice); 1 gives "
                        "steadier numbers on a shared machine, where spinning OpenMP threads collapse")
    args = parser.parse_args()
    if args.memory:
        os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the CPU profiler's start/stop chatter on stderr
        memory(args.models.split(","), args.batch)
        return

    t0 = time.perf_counter()
    import torch
    import torchinfo
    from fvcore.nn import FlopCountAnalysis, parameter_count

    from nnkit.archs import build, get_arch
    from nnkit.introspect import analyze, analyze_model
    from nnkit.introspect.build import build_meta
    import_s = time.perf_counter() - t0
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    for name in args.models.split(","):
        shape = get_arch(name).input
        model = build(name).eval()
        meta = build_meta(name)
        x = torch.zeros((1, *shape))

        def fvcore_run() -> None:
            f = FlopCountAnalysis(model, x)
            f.unsupported_ops_warnings(False)
            f.uncalled_modules_warnings(False)
            f.total()
            parameter_count(model)

        tools = {
            "nnkit summary (name)": lambda: analyze(name, explain=False),
            "nnkit summary": lambda: analyze_model(meta, shape, source=name, explain=False),
            "nnkit flops": lambda: analyze_model(meta, shape, source=name, fields=False, explain=False),
            "fvcore": fvcore_run,
            "torchinfo": lambda: torchinfo.summary(model, input_size=(1, *shape), verbose=0, device="cpu"),
        }
        times: dict[str, list[float]] = {k: [] for k in tools}
        for fn in tools.values():  # warm-up
            fn()
        for _ in range(args.repeat):
            for tool, fn in tools.items():
                start = time.perf_counter()
                with torch.no_grad():
                    fn()
                times[tool].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append((name, med))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Model analysis, median of {args.repeat} after a warm-up; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} "
          f"torch threads, load average {load:.1f} at the "
          "end (fvcore and torchinfo compute for real and suffer most from a busy machine); torch "
          f"{torch.__version__}; imports took {import_s:.1f} s (not counted)\n")
    print("| model | nnkit summary (from the name) | nnkit summary | nnkit flops | fvcore | torchinfo "
          "| summary / fvcore | summary / torchinfo | flops / fvcore | flops / torchinfo |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, m in rows:
        full, step, flops = m["nnkit summary (name)"], m["nnkit summary"], m["nnkit flops"]
        fv, ti = m["fvcore"], m["torchinfo"]
        print(f"| {name} | {full * 1e3:.0f} ms | {step * 1e3:.0f} ms | {flops * 1e3:.0f} ms | {fv * 1e3:.0f} "
              f"ms | {ti * 1e3:.0f} ms | {step / fv:.2f}x | {step / ti:.2f}x | {flops / fv:.2f}x | "
              f"{flops / ti:.2f}x |")

def memory(names: list[str], batch: int) -> None:
    """Estimate against what one real training step (forward, backward, Adam step) holds at its peak.

    On CUDA: torch.cuda.max_memory_allocated. Elsewhere: the same quantity on the CPU, from the PyTorch
    profiler's allocation events (profile_memory): the bytes live before the step (parameters, gradients,
    optimizer state, buffers, the batch) plus the highest running sum of the step's allocations and frees.
    Both count bytes held by tensors, not what an allocator caches; CUDA rounds blocks to 512 bytes and adds
    cuDNN workspaces, the CPU does neither. The second step is measured: the first creates Adam's state.
    """
    import torch

    from nnkit.archs import build, get_arch
    from nnkit.introspect.build import build_meta
    from nnkit.introspect.memory import Optimizer, estimate

    cuda = torch.cuda.is_available()
    where = torch.cuda.get_device_name() if cuda \
        else f"CPU ({platform.machine()}, profiler allocation events)"
    print(f"Training memory at batch {batch} with Adam, {where}, torch {torch.__version__}\n")
    print("| model | nnkit estimate | measured peak | error |")
    print("|---|---:|---:|---:|")
    device = "cuda" if cuda else "cpu"
    for name in names:
        shape = get_arch(name).input
        est = estimate(build_meta(name), shape, batch=batch, optimizer=Optimizer.adam).total
        torch.manual_seed(0)
        model = build(name).to(device).train()
        opt = torch.optim.Adam(model.parameters())
        x = torch.rand((batch, *shape), device=device)
        y = torch.randint(0, 1000, (batch,), device=device)

        def step() -> None:
            out = model(x)
            out = out[0] if isinstance(out, tuple) else out
            torch.nn.functional.cross_entropy(out, y).backward()
            opt.step()
            opt.zero_grad(set_to_none=False)

        step()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            step()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()  # the input is in both: conv1 saves it
        else:
            peak = _live_bytes(model, opt, (x, y)) + _cpu_step_peak(step)
        print(f"| {name} | {est / 2**20:.1f} MiB | {peak / 2**20:.1f} MiB | {(est - peak) / peak:+.1%} |")
        model = opt = x = y = None  # freed before the next model is built
        if cuda:
            torch.cuda.empty_cache()


def _live_bytes(model: object, opt: object, batch: tuple[object, ...]) -> int:
    """Bytes of the storages that exist before a step, each storage once."""
    import torch

    tensors = [*model.parameters(), *model.buffers(), *batch]  # type: ignore[attr-defined]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]  # type: ignore[attr-defined]
    tensors += [v for state in opt.state.values() for v in state.values() if torch.is_tensor(v)]  # type: ignore
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())


def _cpu_step_peak(step: object) -> int:
    """Highest running sum of CPU allocations minus frees while step() runs (PyTorch profiler, kineto
    events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()  # type: ignore[operator]
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return peak


if __name__ == "__main__":
    main()
