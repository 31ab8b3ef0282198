"""nnkit code: a chain in the layer language as PyTorch source, one nn.Module class (torch-free)."""

import sys
from typing import Annotated, Optional

import typer


def code(
    chain: Annotated[list[str], typer.Argument(
        help="An input shape and layers, as one quoted argument or as separate words, e.g. "
             "\"3x32x32 conv(6,5) relu maxpool(2) flatten fc(10)\".", show_default=False)],
    name: Annotated[str, typer.Option("--name", help="The class name.")] = "Net",
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Write the source to this file instead of "
                                                                   "standard output.", show_default=False)] = None,
) -> None:
    """Print the chain as a runnable PyTorch module: one nn.Module class with each layer's shapes as comments,
    the parameters named as in the checkpoints `nnkit train` writes for the same chain."""
    from pathlib import Path

    from nnkit.core.torchplan import plan, source
    from nnkit.errors import RunDirError
    from nnkit.train.checkpoint import atomic_text  # pure Python: torch only inside its save()

    text = source(plan(chain), name)
    if out is None:
        sys.stdout.write(text)
        return
    try:
        atomic_text(Path(out).expanduser(), text)  # an interrupted write leaves the old file or none
    except OSError as exc:
        raise RunDirError(f"--out {out}: cannot write ({exc.strerror or exc})") from exc


def register(app: typer.Typer) -> None:
    app.command("code", help="A chain in the layer language as PyTorch source (one nn.Module class).")(code)
