"""Shared test helpers: the CLI runs in-process (one pytest process imports torch once)."""

from __future__ import annotations

import json
from typing import Any

import pytest


class Run:
    def __init__(self, result: Any) -> None:
        self.result = result
        self.code: int = result.exit_code
        self.out: str = result.stdout
        self.err: str = result.stderr

    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"Run(code={self.code}, out={self.out[-400:]!r}, err={self.err[-400:]!r})"


@pytest.fixture()
def nnkit():
    """nnkit("shape", "3x32x32", "conv(6,5)", input="...") -> Run, through typer's CliRunner."""
    from typer.testing import CliRunner

    from nnkit.cli import app
    from nnkit.cli.common import DEBUG

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Run:
        DEBUG["on"] = False
        return Run(runner.invoke(app, list(args), input=input))

    return invoke
