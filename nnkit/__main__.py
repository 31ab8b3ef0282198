import os
import signal
import sys


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# From the first line: a signal while the command line itself loads is one line and exit 130 too, not a
# traceback (KeyboardInterrupt) or a silent death (SIGTERM's default).
signal.signal(signal.SIGTERM, _terminate)


def _unraisable(hook: object) -> None:
    """An interrupt that lands in code whose exceptions Python ignores (an import lock's weakref callback, a
    finalizer) would print 'Exception ignored ...' with a traceback and be lost: deliver it again instead, so
    that it ends the run as any other interrupt does."""
    if isinstance(getattr(hook, "exc_value", None), KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
        return
    sys.__unraisablehook__(hook)  # type: ignore[arg-type]


sys.unraisablehook = _unraisable
try:
    from nnkit.cli import main
except KeyboardInterrupt:
    sys.stderr.write("nnkit: interrupted\n")
    sys.stderr.flush()
    # Nothing ran yet, so nothing needs cleaning up; and the interpreter, interrupted inside an import, has been
    # seen to end by SIGINT (-2) after a plain sys.exit(130) here: leave at once, with 130.
    os._exit(130)

main()
