"""The analysis step of nnkit against fvcore's FlopCountAnalysis and torchinfo's summary, in one run.

    python benchmarks/bench_models.py [--repeat 5] [--models resnet50,mobilenet_v2,vit_b_16]

All in one process, after `import torch` (paid once by every tool alike), interleaved so that machine load hits
all tools alike; medians of --repeat runs after one warm-up. What each column times:
  nnkit flops / params / summary: the library calls behind those commands, from the name: build on the meta device,
      trace (hooks + FlopCounterMode), and for summary/params also the torch.fx receptive-field pass;
  fvcore: FlopCountAnalysis(model, x).total() + parameter_count(model) on a CPU model built beforehand (not timed);
  torchinfo: torchinfo.summary(model, input_size, verbose=0) on the same CPU model.
Ratios are nnkit / other: the goal is < 0.2x.
"""

from __future__ import annotations

import argparse
import logging
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
    from nnkit.archs._generate import measure
    from nnkit.introspect import analyze
    from nnkit.introspect.build import build_meta
    import_s = time.perf_counter() - t0
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    torch.set_num_threads(max(1, torch.get_num_threads()))

    def nnkit_flops(name: str) -> None:  # `nnkit flops NAME`: totals and per-layer MACs, no fields needed
        measure(build_meta(name), get_arch(name).input)

    rows = []
    for name in args.models.split(","):
        shape = get_arch(name).input
        model = build(name).eval()
        x = torch.zeros((1, *shape))

        def fvcore_run() -> None:
            f = FlopCountAnalysis(model, x)
            f.unsupported_ops_warnings(False)
            f.uncalled_modules_warnings(False)
            f.total()
            parameter_count(model)

        tools = {
            "nnkit flops (totals)": lambda: nnkit_flops(name),
            "nnkit params/summary": lambda: analyze(name),
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

    print(f"Model analysis, median of {args.repeat} after a warm-up; {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; imports took {import_s:.1f} s (not "
          "counted)\n")
    print("| model | nnkit flops | nnkit params/summary | fvcore | torchinfo | flops / fvcore | summary / fvcore "
          "| flops / torchinfo | summary / torchinfo |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, m in rows:
        f, s, fv, ti = (m["nnkit flops (totals)"], m["nnkit params/summary"], m["fvcore"], m["torchinfo"])
        print(f"| {name} | {f * 1e3:.0f} ms | {s * 1e3:.0f} ms | {fv * 1e3:.0f} ms | {ti * 1e3:.0f} ms | "
              f"{f / fv:.2f}x | {s / fv:.2f}x | {f / ti:.2f}x | {s / ti:.2f}x |")


if __name__ == "__main__":
    main()
