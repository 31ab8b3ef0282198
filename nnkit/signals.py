"""Ctrl-C and SIGTERM as one interrupt, never inside an import (standard library only: nnkit/__main__.py installs
it before anything else loads).

An interrupt raised while a C extension initialises (torch's pybind11 modules import Python code from their
init) does not arrive as KeyboardInterrupt: pybind11 turns it into ImportError("initialization failed"), which
ends a run as an internal error, without its checkpoint (seen in tests/test_hostile.py). So a signal that lands
inside an import is held and delivered as KeyboardInterrupt a moment later, once the import has finished.
"""

from __future__ import annotations

import atexit
import signal
from typing import Any

_RETRY_S = 0.02  # how soon a held interrupt is tried again
# Until the command line can answer an interrupt (nnkit.cli.main arms it inside the block that writes its one
# line), one is held too: delivered between nnkit/__main__.py's imports and that block, it would end the run
# with 130 and nothing said (seen in tests/test_hostile.py).
_ARMED = [False]
_HELD = [False]  # an interrupt came while unarmed


def _importing(frame: Any) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def interrupt(signum: int, frame: Any) -> None:
    """The handler for SIGINT and SIGTERM: KeyboardInterrupt, or a retry shortly when inside an import or not yet
    armed."""
    if (not _ARMED[0] or _importing(frame)) and hasattr(signal, "setitimer"):
        _HELD[0] = not _ARMED[0]
        signal.signal(signal.SIGALRM, interrupt)
        signal.setitimer(signal.ITIMER_REAL, _RETRY_S)
        return
    raise KeyboardInterrupt


def install() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)
    atexit.unregister(quiet)  # installed twice (nnkit/__main__.py, then nnkit.cli.main): one call at exit
    atexit.register(quiet)


def quiet() -> None:
    """Once the command has answered (nnkit.cli.main, and at exit): a held interrupt's timer is cancelled and
    later signals are ignored, so that nothing ends the run silently with 130 after its answer. Python's
    finalization puts back the default action of every signal with a Python handler (not of an
    ignored one), so the timer's SIGALRM, or a Ctrl-C in the last milliseconds, would kill the process (-14, -2)
    after its output was complete (seen, sending SIGINT at random moments of `nnkit shape`)."""
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def arm() -> None:
    """From here on an interrupt is raised (outside imports): the caller answers it, and one held until now is
    raised at once."""
    _ARMED[0] = True
    if _HELD[0]:
        _HELD[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        raise KeyboardInterrupt
