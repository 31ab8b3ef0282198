"""Every error nnkit raises on purpose, each with the exit code the CLI returns for it.

The CLI catches NnkitError at one place (nnkit.cli.main) and prints its message as one line on stderr.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # the input is well formed but impossible: geometry, data, checkpoints
    USAGE = 2  # malformed command line or layer spec, unknown name
    INTERRUPTED = 130


class NnkitError(Exception):
    exit_code: ExitCode = ExitCode.ERROR


class SpecError(NnkitError):
    """A chain or layer spec that does not parse, or names an unknown layer or option."""

    exit_code = ExitCode.USAGE


class UnknownOptionError(SpecError):
    """An option the command does not have (where a command takes free words, such as a chain's layers, typer
    cannot tell it from a word). The CLI names the command."""

    def __init__(self, option: str) -> None:
        self.option = option
        super().__init__(f"no such option: {option}")


class GeometryError(NnkitError):
    """A well-formed layer that cannot apply to its input (kernel larger than the padded input, ...)."""


class UsageError(NnkitError):
    exit_code = ExitCode.USAGE


class UnknownNameError(NnkitError, KeyError):
    """An unknown architecture, data set, ... with a did-you-mean hint."""

    exit_code = ExitCode.USAGE

    def __init__(self, what: str, name: str, known: Iterable[str]) -> None:
        close = difflib.get_close_matches(name.lower(), [k.lower() for k in known], n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        super().__init__(f"unknown {what} '{name}'{hint}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class MissingDependencyError(NnkitError):
    def __init__(self, package: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs {package}, which is not installed: pip install 'nnkit[torch]'"
        )


class DataError(NnkitError):
    """A missing or malformed data directory or file."""


class CheckpointError(NnkitError):
    """A corrupt, foreign or mismatched checkpoint."""


class ModelError(NnkitError):
    """A model that cannot be built, imported or traced."""


class RunDirError(NnkitError):
    """An output directory that cannot be created or written, or holds files of something else already."""


class TrainingError(NnkitError):
    """A run that cannot go on: its loss became NaN or infinite."""


class DistributedError(NnkitError):
    """A rendezvous that cannot be reached, or a rank that failed."""


class Interrupted(NnkitError):
    """Ctrl-C or SIGTERM during training, after the resumable checkpoint was saved."""

    exit_code = ExitCode.INTERRUPTED


def one_line(text: str, word_limit: int = 200) -> str:
    """A message as one line: the newlines (and runs of white space) that exception texts and arguments may
    hold, folded to single spaces, so that a script reading stderr line by line sees one error per line; a
    word longer than `word_limit` (an argument of thousands of digits, quoted back) is shortened."""
    return " ".join(w if len(w) <= word_limit else f"{w[:60]}...({len(w):,} characters)"
                    for w in str(text).split())


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (its class name when it has none), cut to `limit` characters
    at a word boundary: for quoting a library's error inside one of ours."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0].strip()
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return text


def refuse_given(options: Iterable[tuple[str, Any]], where: str) -> None:
    """A UsageError naming every option given (not None) that means nothing here, as one sentence: '--input,
    --width apply to named and user models, not to a chain'. `where` is what they apply to, and why not here."""
    given = [name for name, value in options if value is not None]
    if given:
        raise UsageError(f"{', '.join(given)} appl{'y' if len(given) > 1 else 'ies'} {where}")
