"""Shared test helpers: the CLI runs in-process (one pytest process imports torch once)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# CI runs the property tests on a fixed seed, so that a submission's result does not depend on the draw; a local
# run explores new examples each time (NNKIT_HYPOTHESIS=explore in CI does too).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI") and os.environ.get("NNKIT_HYPOTHESIS") != "explore":
    settings.load_profile("ci")


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


GOLDEN = Path(__file__).parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--overwrite-golden", action="store_true",
                     help="Rewrite tests/golden/ from the current output instead of comparing with it "
                          "(NNKIT_OVERWRITE_GOLDEN=1 does the same).")


@pytest.fixture()
def golden(request: pytest.FixtureRequest):
    """golden("name", text): text must equal tests/golden/name.txt, rewritten only when asked (torchinfo's
    conftest.py verify_output, with its --overwrite)."""
    import os

    overwrite = request.config.getoption("--overwrite-golden") \
        or os.environ.get("NNKIT_OVERWRITE_GOLDEN") == "1"

    def check(name: str, text: str) -> None:
        path = GOLDEN / f"{name}.txt"
        if overwrite:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        assert path.exists(), f"{path} is missing: run pytest --overwrite-golden once and review the file"
        assert text == path.read_text(encoding="utf-8"), \
            f"{path} differs (pytest --overwrite-golden rewrites it)"

    return check
