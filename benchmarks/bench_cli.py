"""Wall time of the torch-free arithmetic commands against `python -c "import typer"`, in one run.

    python benchmarks/bench_cli.py [--repeat 15]

Each command runs as a fresh process (as a user or a shell script runs it), interleaved with the baseline so
that machine load hits both alike; the table reports medians and the ratio to the baseline (goal: < 1.5x).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LENET = "conv(6,5) maxpool(2) conv(16,5) maxpool(2) flatten fc(120) fc(84) fc(10)"
COMMANDS = {
    "import typer (baseline)": [sys.executable, "-c", "import typer"],
    "nnkit shape (LeNet-5 chain)": [sys.executable, "-m", "nnkit", "shape", "3x32x32", LENET, "-f", "tsv"],
    "nnkit params --explain": [sys.executable, "-m", "nnkit", "params", "3x32x32", LENET, "-e", "-f", "tsv"],
    "nnkit flops -f json": [sys.executable, "-m", "nnkit", "flops", "3x32x32", LENET, "-f", "json"],
    "nnkit rf": [sys.executable, "-m", "nnkit", "rf", "3x224x224", "conv(64,7,s=2,p=3) maxpool(3,2,p=1)", "-f", "tsv"],
    "nnkit dwsep": [sys.executable, "-m", "nnkit", "dwsep", "32x112x112", "--out", "64", "-k", "3", "-f", "tsv"],
    "nnkit solve map": [sys.executable, "-m", "nnkit", "solve", "map", "224", "112", "-k", "7", "-f", "tsv"],
    "nnkit shape -f table (rich)": [sys.executable, "-m", "nnkit", "shape", "3x32x32", LENET, "-f", "table"],
}


# Byte-code caching as on any normal install (some sandboxes set PYTHONDONTWRITEBYTECODE, which would make
# nnkit recompile its own modules at every start while site-packages stays compiled).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def once(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=ENV)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for cmd in COMMANDS.values():  # warm the file cache (and byte-code caches) once
        once(cmd)
    for _ in range(args.repeat):
        for name, cmd in COMMANDS.items():
            times[name].append(once(cmd))
    base = statistics.median(times["import typer (baseline)"])
    print(f"nnkit arithmetic commands, {date.today()}, {platform.machine()} {platform.processor() or ''}".strip()
          + f", Python {platform.python_version()}, {args.repeat} runs each, interleaved")
    print()
    print("| command | median (ms) | min (ms) | ratio to import typer |")
    print("|---|---:|---:|---:|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med * 1000:.0f} | {min(ts) * 1000:.0f} | {med / base:.2f}x |")


if __name__ == "__main__":
    main()
