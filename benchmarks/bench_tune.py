"""TPE with median pruning against a full grid over the same space, on the bundled digits (issue 13).

    python benchmarks/bench_tune.py [--epochs 4] [--tpe-trials 8] [--seeds 0,1,2]

The space is the grid's: learning rate x batch size x optimizer (4 x 2 x 2 = 16 combinations), every trial
LeNet-5 for --epochs epochs; TPE picks from the same values, with half the grid's trials. Printed: the best
validation accuracy each search finds, the test accuracy of its best trial, the epochs it trained in all, and
its wall time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LRS = (1e-3, 3e-3, 1e-2, 3e-2)
BATCHES = (64, 128)
OPTIMIZERS = ("adamw", "sgd")


def search(sampler: str, pruner: str, trials: int | None, epochs: int, seed: int, out: Path) -> dict:
    from nnkit.train.config import TrainConfig
    from nnkit.train.tune import Param, TuneSpec, tune

    space = (Param("lr", choices=LRS), Param("batch_size", choices=BATCHES),
             Param("optimizer", choices=OPTIMIZERS))
    spec = TuneSpec(base=TrainConfig(epochs=epochs, seed=seed), space=space, out=str(out), sampler=sampler,
                    pruner=pruner, trials=trials)
    t0 = time.perf_counter()
    r = tune(spec)
    seconds = time.perf_counter() - t0
    best = r.best
    return {"search": f"{sampler} ({pruner} pruner)", "seed": seed, "trials": len(r.trials),
            "pruned": sum(t.state == "PRUNED" for t in r.trials), "best_val": best.value if best else None,
            "test": best.test_accuracy if best else None, "params": best.params if best else None,
            "epochs": r.epochs_spent, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--tpe-trials", type=int, default=8)
    ap.add_argument("--seeds", default="0")
    args = ap.parse_args()
    import torch

    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; grid "
          f"{len(LRS)}x{len(BATCHES)}x{len(OPTIMIZERS)}, {args.epochs} epochs a trial", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            rows.append(search("grid", "none", None, args.epochs, seed, Path(tmp) / f"grid-{seed}"))
            rows.append(search("tpe", "median", args.tpe_trials, args.epochs, seed,
                               Path(tmp) / f"tpe-{seed}"))
            for r in rows[-2:]:
                print(f"# {r}", file=sys.stderr)
    print("| search | seed | trials (pruned) | best val accuracy | its test accuracy | its settings "
          "| epochs trained | wall time |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        p = r["params"] or {}
        settings = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in p.items())
        print(f"| {r['search']} | {r['seed']} | {r['trials']} ({r['pruned']}) | {r['best_val']:.2%} | "
              f"{r['test']:.2%} | {settings} | {r['epochs']} | {r['seconds']:.0f} s |")


if __name__ == "__main__":
    main()
