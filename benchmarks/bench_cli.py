"""Wall time of the torch-free arithmetic commands against `python -c "import typer"`, in one run.

    python benchmarks/bench_cli.py [--repeat 15] [--env current|plain|both] [--plain-venv DIR]

Each command runs as a fresh process (as a user or a shell script runs it), interleaved with the baseline so
that machine load hits both alike; the table reports medians and the ratio to the baseline (goal: < 1.5x).

Two environments: `current` is the interpreter running this script (./dev.sh's pinned one); `plain` is what a
new user gets: a fresh virtual environment (no --system-site-packages) where `pip install .` resolves the
dependencies from the package registry by pyproject.toml's bounds, and the installed `nnkit` script runs from
outside the clone. It is built in a temporary folder (seconds: typer and rich are small), or reused from DIR.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LENET = "conv(6,5) maxpool(2) conv(16,5) maxpool(2) flatten fc(120) fc(84) fc(10)"
ARGS = {
    "nnkit shape (LeNet-5 chain)": ["shape", "3x32x32", LENET, "-f", "tsv"],
    "nnkit params --explain": ["params", "3x32x32", LENET, "-e", "-f", "tsv"],
    "nnkit flops -f json": ["flops", "3x32x32", LENET, "-f", "json"],
    "nnkit rf": ["rf", "3x224x224", "conv(64,7,s=2,p=3) maxpool(3,2,p=1)", "-f", "tsv"],
    "nnkit dwsep": ["dwsep", "32x112x112", "--out", "64", "-k", "3", "-f", "tsv"],
    "nnkit solve map": ["solve", "map", "224", "112", "-k", "7", "-f", "tsv"],
    "nnkit shape -f table (rich)": ["shape", "3x32x32", LENET, "-f", "table"],
}
BASELINE = "import typer (baseline)"


def commands(python: str, nnkit: list[str]) -> dict[str, list[str]]:
    return {BASELINE: [python, "-c", "import typer"], **{name: [*nnkit, *a] for name, a in ARGS.items()}}


def plain_venv(where: Path) -> Path:
    """A fresh virtual environment with `pip install .` in it, as the README tells a new user; its python."""
    python = where / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(ROOT)], check=True,
                       stderr=subprocess.DEVNULL)
    return python


# Byte-code caching as on any normal install (some sandboxes set PYTHONDONTWRITEBYTECODE, which would make
# nnkit recompile its own modules at every start while site-packages stays compiled).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def once(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd, env=ENV)
    return time.perf_counter() - start


def measure(cmds: dict[str, list[str]], repeat: int, cwd: Path) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for cmd in cmds.values():  # warm the file cache (and byte-code caches) once
        once(cmd, cwd)
    for _ in range(repeat):
        for name, cmd in cmds.items():
            times[name].append(once(cmd, cwd))
    return times


def versions(python: str) -> str:
    code = ("import importlib.metadata as m; "
            "print(', '.join(f'{p} {m.version(p)}' for p in ('typer', 'rich')))")
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def report(title: str, times: dict[str, list[float]]) -> None:
    base = statistics.median(times[BASELINE])
    print(f"{title}")
    print()
    print("| command | median (ms) | min (ms) | ratio to import typer |")
    print("|---|---:|---:|---:|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med * 1000:.0f} | {min(ts) * 1000:.0f} | {med / base:.2f}x |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--env", choices=("current", "plain", "both"), default="both")
    parser.add_argument("--plain-venv", type=Path, help="Reuse (or build) the plain environment here.")
    args = parser.parse_args()
    print(f"nnkit arithmetic commands, {date.today()}, {platform.machine()} "
          f"{platform.processor() or ''}".strip()
          + f", Python {platform.python_version()}, {args.repeat} runs each, interleaved")
    print()
    if args.env in ("current", "both"):
        times = measure(commands(sys.executable, [sys.executable, "-m", "nnkit"]), args.repeat, ROOT)
        report(f"This interpreter ({sys.prefix}; {versions(sys.executable)}), `python -m nnkit` in the "
               "clone:",
               times)
    if args.env in ("plain", "both"):
        with tempfile.TemporaryDirectory(prefix="nnkit-plain-") as tmp:
            python = plain_venv(args.plain_venv or Path(tmp) / "venv")
            nnkit = str(python.parent / "nnkit")
            # run outside the clone, so that the installed package is what starts, not the working tree
            times = measure(commands(str(python), [nnkit]), args.repeat, Path(tmp))
            report(f"A plain `pip install .` in a fresh virtual environment ({versions(str(python))}), the "
                   "installed `nnkit` script:", times)


if __name__ == "__main__":
    main()
