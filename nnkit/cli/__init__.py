"""The nnkit command line: thin typer commands over the library (STYLE.md, practices 5 and 8).

Each command group lives in its own module with a `register(app)` function; errors meet one boundary here.
"""

import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from nnkit import __version__
from nnkit.cli.common import DEBUG
from nnkit.errors import ExitCode, NnkitError, UnknownOptionError, one_line


def _is_usage_error(exc: BaseException) -> bool:
    """click's ClickException family (vendored in typer >= 0.26, a dependency before): duck-typed, no private
    import."""
    return type(exc).__module__.split(".")[0] in ("typer", "click") and hasattr(exc, "format_message") \
        and hasattr(exc, "exit_code")


# The modules of the [torch] extra (pyproject.toml), by import name: the package pip installs for each.
TORCH_EXTRA = {"torch": "torch", "torchvision": "torchvision", "torchinfo": "torchinfo", "fvcore": "fvcore",
               "matplotlib": "matplotlib", "sklearn": "scikit-learn", "numpy": "numpy"}


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
            message = one_line(exc.format_message())
            if message:  # no arguments at all: the help was the answer
                typer.echo(f"nnkit: {where}{message}{hint}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("nnkit: aborted", err=True)
            sys.exit(int(ExitCode.INTERRUPTED))
        sys.exit(rv if isinstance(rv, int) else 0)

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        # click answers Ctrl-C while parsing with a blank line and Abort; ours is one line (see main)
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt:
            raise _Interrupt from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except NnkitError as exc:
            if DEBUG["on"]:
                raise
            if isinstance(exc, UnknownOptionError) and ctx.invoked_subcommand:  # as click says it
                command = f"{ctx.command_path} {ctx.invoked_subcommand}"
                typer.echo(f"nnkit: {ctx.invoked_subcommand}: {exc} (see {command} --help)", err=True)
            else:
                typer.echo(f"nnkit: {one_line(str(exc))}", err=True)
            ctx.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            typer.echo("nnkit: interrupted", err=True)
            ctx.exit(int(ExitCode.INTERRUPTED))
        except BrokenPipeError:  # `nnkit ... | head`: the reader left; that is not an error
            sys.stderr.close()
            ctx.exit(0)
        except ModuleNotFoundError as exc:
            # On the torch-free install (`pip install .`) every command that needs torch ends here, whichever
            # of its modules imports it first: one line that says how to install it.
            missing = (exc.name or "").partition(".")[0]
            if DEBUG["on"] or missing not in TORCH_EXTRA:
                raise
            from nnkit.errors import MissingDependencyError

            message = MissingDependencyError(TORCH_EXTRA[missing], ctx.invoked_subcommand or "this command")
            typer.echo(f"nnkit: {message}", err=True)
            ctx.exit(int(message.exit_code))
        except Exception as exc:  # noqa: BLE001 - the boundary: no traceback without --debug
            # typer's own signals (Exit, Abort, usage errors; click's in older typer) pass through.
            if DEBUG["on"] or type(exc).__module__.split(".")[0] in ("typer", "click"):
                raise
            typer.echo(f"nnkit: internal error: {type(exc).__name__}: {one_line(str(exc))} (run with --debug for "
                       f"details)", err=True)
            ctx.exit(int(ExitCode.ERROR))


class _Interrupt(Exception):
    """Ctrl-C or SIGTERM where click would catch KeyboardInterrupt itself."""


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nnkit {__version__}")
        raise typer.Exit()


def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Exact CNN arithmetic (shapes, parameters, receptive fields, MACs) and training."""
    if debug:
        DEBUG["on"] = True


# Which module registers which top-level command (tests/test_cli_chain.py checks this against the modules).
# typer turns every registered command's signature into click parameters at each start (about 0.5 ms a
# command): building only the command that is asked for keeps `nnkit shape` fast (measured in BENCHMARKS.md).
GROUPS: dict[str, tuple[str, ...]] = {
    "analyze": ("shape", "params", "flops", "rf", "dwsep", "solve"),
    "models": ("models", "summary", "crosscheck"),
    "train": ("train", "eval"),
    "code": ("code",),
    "tune": ("tune", "runs"),
}


def build_app(only: str | None = None) -> typer.Typer:
    """The nnkit app with every command group, or only the group that owns the command `only`."""
    from importlib import import_module

    new = typer.Typer(
        cls=_Boundary,
        name="nnkit",
        help="Exact CNN arithmetic (shapes, parameters, receptive fields, MACs) and training, from the "
             "command line.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        add_completion=True,
    )
    new.callback()(_root)
    groups = [g for g, commands in GROUPS.items() if only in commands] or list(GROUPS)
    for group in groups:
        import_module(f"nnkit.cli.{group}").register(new)
    if len(groups) == 1:  # and of the group only that command: typer builds each one's click parameters at start
        new.registered_commands = [c for c in new.registered_commands if c.name == only]
        new.registered_groups = [g for g in new.registered_groups if g.name == only]
    return new


_APP: list[typer.Typer] = []


def __getattr__(name: str) -> Any:
    """`from nnkit.cli import app`: the whole app, built on first use."""
    if name == "app":
        if not _APP:
            _APP.append(build_app())
        return _APP[0]
    raise AttributeError(name)


def main() -> None:
    from nnkit.signals import arm, install, quiet

    install()  # SIGINT and SIGTERM alike, never inside an import (nnkit.signals), held until armed
    try:
        arm()  # inside the block that answers: an interrupt held since the start is delivered here
        # Only a plain `nnkit COMMAND ...` builds one command; --help, options first and completion build them all.
        first = sys.argv[1] if len(sys.argv) > 1 else None
        completing = any(k.endswith("_COMPLETE") for k in os.environ if k.startswith("_NNKIT"))
        build_app(None if completing else first)(prog_name="nnkit")
    except (KeyboardInterrupt, _Interrupt):  # before or after a command's own boundary: importing, exiting
        sys.stderr.write("nnkit: interrupted\n")
        sys.exit(int(ExitCode.INTERRUPTED))
    finally:
        quiet()  # answered: a signal from here to the process's end would only replace the exit code
