"""Ctrl-C and SIGTERM as one interrupt, never inside an import (standard library only: nnkit/__main__.py installs
it before anything else loads).

An interrupt raised while a C extension initialises (torch's pybind11 modules import Python code from their
init) does not arrive as KeyboardInterrupt: pybind11 turns it into ImportError("initialization failed"), which
ends a run as an internal error, without its checkpoint (seen in tests/test_hostile.py). So a signal that lands
inside an import is held and delivered as KeyboardInterrupt a moment later, once the import has finished.
"""

from __future__ import annotations

import signal
from typing import Any

_RETRY_S = 0.02  # how soon a held interrupt is tried again


def _importing(frame: Any) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def interrupt(signum: int, frame: Any) -> None:
    """The handler for SIGINT and SIGTERM: KeyboardInterrupt, or a retry shortly when inside an import."""
    if _importing(frame) and hasattr(signal, "setitimer"):
        signal.signal(signal.SIGALRM, interrupt)
        signal.setitimer(signal.ITIMER_REAL, _RETRY_S)
        return
    raise KeyboardInterrupt


def install() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)
