"""Write completions/nnkit.{bash,zsh,fish} from the app itself (tests/test_completions.py checks for drift).

    python scripts/gen_completions.py
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHELLS = ("bash", "zsh", "fish")


def scripts() -> dict[str, str]:
    """Typer's own completion scripts for `nnkit`: what `_NNKIT_COMPLETE=source_bash nnkit` prints."""
    from typer.testing import CliRunner

    from nnkit.cli import app

    out = {}
    for shell in SHELLS:
        result = CliRunner().invoke(app, [], prog_name="nnkit", env={"_NNKIT_COMPLETE": f"source_{shell}"})
        if result.exit_code != 0 or not result.stdout.strip():
            raise RuntimeError(f"no {shell} completion: {result.output}")
        out[shell] = result.stdout.strip() + "\n"
    return out


def main() -> None:
    (ROOT / "completions").mkdir(exist_ok=True)
    for shell, text in scripts().items():
        (ROOT / "completions" / f"nnkit.{shell}").write_text(text)
        print(f"completions/nnkit.{shell}")


if __name__ == "__main__":
    main()
