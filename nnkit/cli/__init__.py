"""The nnkit command line: thin typer commands over the library (STYLE.md, practices 5 and 8).

Each command group lives in its own module with a `register(app)` function; errors meet one boundary here.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from nnkit import __version__
from nnkit.cli.common import DEBUG
from nnkit.errors import ExitCode, NnkitError


def _is_usage_error(exc: BaseException) -> bool:
    """click's ClickException family (vendored in typer >= 0.26, a dependency before): duck-typed, no private import."""
    return type(exc).__module__.split(".")[0] in ("typer", "click") and hasattr(exc, "format_message") \
        and hasattr(exc, "exit_code")


class _Boundary(TyperGroup):
    """The one place where errors become a one-line message and an exit code."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """Usage errors as one line too, instead of typer's multi-line box (scripts read stderr)."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except Exception as exc:
            if not _is_usage_error(exc):
                raise
            ctx = getattr(exc, "ctx", None)
            sub = ctx.command_path.partition(" ")[2] if ctx is not None else ""
            where = f"{sub}: " if sub else ""
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            message = " ".join(exc.format_message().split())
            typer.echo(f"nnkit: {where}{message}{hint}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("nnkit: aborted", err=True)
            sys.exit(int(ExitCode.INTERRUPTED))
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except NnkitError as exc:
            if DEBUG["on"]:
                raise
            typer.echo(f"nnkit: {exc}", err=True)
            ctx.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            typer.echo("nnkit: interrupted", err=True)
            ctx.exit(int(ExitCode.INTERRUPTED))
        except BrokenPipeError:  # `nnkit ... | head`: the reader left; that is not an error
            sys.stderr.close()
            ctx.exit(0)
        except Exception as exc:  # noqa: BLE001 - the boundary: no traceback without --debug
            # typer's own signals (Exit, Abort, usage errors; click's in older typer) pass through.
            if DEBUG["on"] or type(exc).__module__.split(".")[0] in ("typer", "click"):
                raise
            typer.echo(f"nnkit: internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
                       err=True)
            ctx.exit(int(ExitCode.ERROR))


app = typer.Typer(
    cls=_Boundary,
    name="nnkit",
    help="Exact CNN arithmetic (shapes, parameters, receptive fields, MACs) and training, from the command line.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nnkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Exact CNN arithmetic (shapes, parameters, receptive fields, MACs) and training."""
    if debug:
        DEBUG["on"] = True


def _register() -> None:
    from nnkit.cli import analyze, models, train

    for module in (analyze, models, train):
        module.register(app)


_register()


def main() -> None:
    app(prog_name="nnkit")
