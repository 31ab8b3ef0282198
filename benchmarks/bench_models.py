"""The analysis step of nnkit against fvcore's FlopCountAnalysis and torchinfo's summary, in one run.

    python benchmarks/bench_models.py [--repeat 5] [--models resnet50,mobilenet_v2,vit_b_16]

All in one process, after `import torch` (paid once by every tool alike), interleaved so that machine load hits
all tools alike; medians of --repeat runs after one warm-up. What each column times:
  nnkit summary (name): what `nnkit summary|rf NAME` computes after startup: analyze(NAME) builds the model on
      the meta device and traces it once (module hooks, a dispatch mode counting MACs and following fields);
  nnkit summary: the analysis step alone, analyze_model() on a meta model built beforehand (not timed), as
      the command runs it without --explain (no per-row formulas);
  nnkit flops: the same without receptive fields (fields=False), what params/flops/shape need;
  fvcore: FlopCountAnalysis(model, x).total() + parameter_count(model) on a CPU model built beforehand (not timed);
  torchinfo: torchinfo.summary(model, input_size, verbose=0) on the same CPU model.
Ratios are nnkit / other: the goal is < 0.2x.

    python benchmarks/bench_models.py --memory [--batch 32]

On a CUDA machine, compares `nnkit summary NAME --train --batch B --optimizer adam` with what one real training
step holds at its peak (torch.cuda.max_memory_allocated after forward, backward and optimizer.step()).
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
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice); 1 gives "
                        "steadier numbers on a shared machine, where spinning OpenMP threads collapse")
    args = parser.parse_args()
    if args.memory:
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
    print(f"Model analysis, median of {args.repeat} after a warm-up; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, load average {load:.1f} at the end "
          f"(fvcore and torchinfo compute for real and suffer most from a busy machine); torch {torch.__version__}; "
          f"imports took {import_s:.1f} s (not counted)\n")
    print("| model | nnkit summary (from the name) | nnkit summary | nnkit flops | fvcore | torchinfo "
          "| summary / fvcore | summary / torchinfo | flops / fvcore | flops / torchinfo |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, m in rows:
        full, step, flops = m["nnkit summary (name)"], m["nnkit summary"], m["nnkit flops"]
        fv, ti = m["fvcore"], m["torchinfo"]
        print(f"| {name} | {full * 1e3:.0f} ms | {step * 1e3:.0f} ms | {flops * 1e3:.0f} ms | {fv * 1e3:.0f} ms "
              f"| {ti * 1e3:.0f} ms | {step / fv:.2f}x | {step / ti:.2f}x | {flops / fv:.2f}x | {flops / ti:.2f}x |")

def memory(names: list[str], batch: int) -> None:
    import torch

    from nnkit.archs import build, get_arch
    from nnkit.introspect.build import build_meta
    from nnkit.introspect.memory import Optimizer, estimate

    if not torch.cuda.is_available():
        print("no CUDA device: the memory comparison needs one (torch.cuda.max_memory_allocated)")
        return
    print(f"Training memory at batch {batch} with Adam, {torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    print("| model | nnkit estimate | measured peak | error |")
    print("|---|---:|---:|---:|")
    for name in names:
        shape = get_arch(name).input
        est = estimate(build_meta(name), shape, batch=batch, optimizer=Optimizer.adam).total
        model = build(name).cuda().train()
        opt = torch.optim.Adam(model.parameters())
        x = torch.rand((batch, *shape), device="cuda")
        y = torch.randint(0, 1000, (batch,), device="cuda")
        for step in range(2):  # the first step creates Adam's state; the second is the steady state
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            out = model(x)
            out = out[0] if isinstance(out, tuple) else out
            torch.nn.functional.cross_entropy(out, y).backward()
            opt.step()
            opt.zero_grad(set_to_none=False)
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()  # the input is in both: conv1 saves it
        print(f"| {name} | {est / 2**20:.0f} MiB | {peak / 2**20:.0f} MiB | {(est - peak) / peak:+.1%} |")
        del model, opt, x, y, out
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
