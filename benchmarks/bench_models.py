"""The analysis step of nnkit against fvcore's FlopCountAnalysis and torchinfo's summary, in one run.

    python benchmarks/bench_models.py [--repeat 5] [--models resnet50,mobilenet_v2,vit_b_16]

All in one process, after `import torch` (paid once by every tool alike), interleaved so that machine load hits
all tools alike; medians of --repeat runs after one warm-up. What each column times:
  nnkit (name): what `nnkit flops|params|summary NAME` computes after startup: analyze(NAME) builds the model on
      the meta device, traces it (hooks + FlopCounterMode) and runs the torch.fx receptive-field pass;
  nnkit (analysis): the analysis step alone, analyze_model() on a meta model built beforehand (not timed);
  fvcore: FlopCountAnalysis(model, x).total() + parameter_count(model) on a CPU model built beforehand (not timed);
  torchinfo: torchinfo.summary(model, input_size, verbose=0) on the same CPU model.
Ratios are nnkit / other: the goal is < 0.2x.
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
    args = parser.parse_args()

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
    torch.set_num_threads(max(1, torch.get_num_threads()))

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
            "nnkit (name)": lambda: analyze(name),
            "nnkit (analysis)": lambda: analyze_model(meta, shape, source=name),
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
    print("| model | nnkit (name) | nnkit (analysis) | fvcore | torchinfo | analysis / fvcore | analysis / torchinfo "
          "| name / fvcore | name / torchinfo |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, m in rows:
        full, step, fv, ti = (m["nnkit (name)"], m["nnkit (analysis)"], m["fvcore"], m["torchinfo"])
        print(f"| {name} | {full * 1e3:.0f} ms | {step * 1e3:.0f} ms | {fv * 1e3:.0f} ms | {ti * 1e3:.0f} ms | "
              f"{step / fv:.2f}x | {step / ti:.2f}x | {full / fv:.2f}x | {full / ti:.2f}x |")

if __name__ == "__main__":
    main()
