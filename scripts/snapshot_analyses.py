"""Dump what the analysis commands print, so that a change to nnkit/introspect can be compared byte for byte.

    python scripts/snapshot_analyses.py OUT_DIR [--models 'resnet*,lenet5']
    diff -r BEFORE_DIR AFTER_DIR

For every architecture in the registry (`nnkit models`): shape, params, flops, rf and summary as `-f tsv` and
`-f json`, and summary as a table (piped, so at a fixed width: the table is as wide as it needs); for a few
architectures the variants whose code paths differ (--explain, --depth 1, --at, --train, --batch, dwsep,
crosscheck); and the same for a few user-model files written into OUT_DIR/models (targets are given relative
to OUT_DIR, so the paths printed do not depend on where OUT_DIR is). Each run is one file: the exit code, then
stdout, then stderr. All in one process through typer's CliRunner (a new process per run would be mostly
`import torch`).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VIEWS = ("shape", "params", "flops", "rf", "summary")

# Small user models that exercise what torchvision's do not: a factory, an instance, a forward with Python
# control flow and functional ops, tensors computed while building, attention, recurrence, a module called twice.
USER_MODELS = {
    "branchy.py": '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.a = nn.Conv2d(8, 8, 1)
        self.b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=2, dilation=2))
        self.c = nn.Conv2d(8, 8, 5, padding=2)
        self.down = nn.Conv2d(24, 16, 3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = x + self.b(x)
        x = torch.cat([self.a(x), self.c(x), nn.functional.max_pool2d(x, 3, 1, 1)], dim=1)
        if x.shape[-1] > 4:  # Python control flow on shapes (torch.fx cannot trace it)
            x = self.down(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def factory():
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU6(inplace=True),
                         nn.Conv2d(16, 16, 3, groups=16, padding=1), nn.BatchNorm2d(16), nn.ReLU6(inplace=True),
                         nn.Conv2d(16, 32, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


instance = factory()
instance.train()
''',
    "computed.py": '''
import torch
from torch import nn


class Net(nn.Module):
    """Widths computed with torch while building (as torchvision's RegNets do), a shared block called twice."""

    def __init__(self):
        super().__init__()
        widths = (torch.arange(1, 4) * 8.0).round().int().tolist()
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths, widths[1:]))
        self.shared = nn.Conv2d(widths[-1], widths[-1], 1)
        self.register_buffer("scale", torch.linspace(0.5, 1.0, widths[-1]).view(1, -1, 1, 1))
        self.head = nn.Linear(widths[-1], 5)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = torch.relu(b(x))
        x = self.shared(self.shared(x)) * self.scale
        return self.head(x.mean((2, 3)))
''',
    "attention.py": '''
import torch
from torch import nn


class Net(nn.Module):
    """Patches to tokens, a MultiheadAttention (its out_proj is never called as a module), an LSTM."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 32, 4, stride=4)
        self.norm = nn.LayerNorm(32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.rnn = nn.LSTM(32, 16, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        t = self.norm(self.patch(x).flatten(2).transpose(1, 2))
        t = t + self.attn(t, t, t, need_weights=False)[0]
        out, _ = self.rnn(t)
        return self.head(out[:, -1])
''',
}


def runs(archs: list[str]) -> list[tuple[str, list[str]]]:
    """(file name, arguments) for every run."""
    out: list[tuple[str, list[str]]] = []
    for name in archs:
        for view in VIEWS:
            for fmt in ("tsv", "json"):
                out.append((f"{name}.{view}.{fmt}", [view, name, "-f", fmt]))
        out.append((f"{name}.summary.table", ["summary", name, "-f", "table"]))
    extra = [
        ("resnet18.summary.explain.json", ["summary", "resnet18", "--explain", "-f", "json"]),
        ("mobilenet_v2.summary.explain.tsv", ["summary", "mobilenet_v2", "--explain", "-f", "tsv"]),
        ("vit_b_16.summary.explain.json", ["summary", "vit_b_16", "--explain", "-f", "json"]),
        ("resnet50.summary.depth1.tsv", ["summary", "resnet50", "--depth", "1", "-f", "tsv"]),
        ("swin_t.summary.depth2.json", ["summary", "swin_t", "--depth", "2", "-f", "json"]),
        ("resnet18.rf.at.json", ["rf", "resnet18", "--at", "layer2", "-f", "json"]),
        ("resnet18.train.json", ["summary", "resnet18", "--train", "--batch", "8", "-f", "json"]),
        ("vit_b_16.train.json", ["summary", "vit_b_16", "--train", "--batch", "8", "--optimizer", "sgd", "-f", "json"]),
        ("mobilenet_v2.train.tsv", ["summary", "mobilenet_v2", "--train", "--batch", "4", "-f", "tsv"]),
        ("resnet18.flops.input.json", ["flops", "resnet18", "--input", "3x64x96", "-f", "json"]),
        ("vgg16.shape.small.txt", ["shape", "vgg16", "--input", "3x16x16"]),
        ("mobilenet_v1.dwsep.json", ["dwsep", "mobilenet_v1", "-f", "json"]),
        ("mobilenet_v3_small.dwsep.json", ["dwsep", "mobilenet_v3_small", "-f", "json"]),
        ("efficientnet_b0.dwsep.small.json", ["dwsep", "efficientnet_b0", "--input", "3x32x32", "-f", "json"]),
        ("resnet18.crosscheck.json", ["crosscheck", "resnet18", "-f", "json"]),
        ("lenet5.crosscheck.tsv", ["crosscheck", "lenet5", "-f", "tsv"]),
        ("resnet18.flops.fvcore.json", ["flops", "resnet18", "--backend", "fvcore", "-f", "json"]),
        ("resnet18.params.torchinfo.json", ["params", "resnet18", "--backend", "torchinfo", "-f", "json"]),
    ]
    names = set(archs)
    out += [e for e in extra if e[1][1] in names]
    users = [("branchy.Net", "models/branchy.py:Net", "3x32x32"),
             ("branchy.factory", "models/branchy.py:factory", "3x32x32"),
             ("branchy.instance", "models/branchy.py:instance", "3x16x16"),
             ("computed.Net", "models/computed.py:Net", "3x32x32"),
             ("attention.Net", "models/attention.py:Net", "3x32x32")]
    for label, target, shape in users:
        for view in VIEWS:
            for fmt in ("tsv", "json"):
                out.append((f"user.{label}.{view}.{fmt}", [view, target, "--input", shape, "-f", fmt]))
        out.append((f"user.{label}.train.json", ["summary", target, "--input", shape, "--train", "-f", "json"]))
        out.append((f"user.{label}.crosscheck.json", ["crosscheck", target, "--input", shape, "-f", "json"]))
    out.append(("user.branchy.factory.dwsep.json", ["dwsep", "models/branchy.py:factory", "--input", "3x32x32",
                                                   "-f", "json"]))
    out.append(("user.branchy.instance.small.txt", ["shape", "models/branchy.py:instance", "--input", "3x2x2"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--models", default="*", help="comma-separated name patterns (default: all)")
    args = parser.parse_args()

    os.environ["COLUMNS"] = "120"  # rich's width when not on a terminal: the same for every run
    from typer.testing import CliRunner

    from nnkit.archs import arch_names
    from nnkit.cli import app
    from nnkit.cli.common import DEBUG

    patterns = args.models.split(",")
    archs = [a for a in arch_names() if any(fnmatch.fnmatch(a, p) for p in patterns)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "models").mkdir(exist_ok=True)
    for file, text in USER_MODELS.items():
        (args.out / "models" / file).write_text(text.lstrip())
    os.chdir(args.out)
    runner = CliRunner()
    start = time.perf_counter()
    todo = runs(archs)
    for i, (file, argv) in enumerate(todo):
        DEBUG["on"] = False
        r = runner.invoke(app, argv)
        Path(file).write_text(f"exit {r.exit_code}\n--- stdout\n{r.stdout}--- stderr\n{r.stderr}")
        if (i + 1) % 50 == 0:
            print(f"{i + 1}/{len(todo)} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    print(f"{len(todo)} runs in {time.perf_counter() - start:.0f} s into {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
