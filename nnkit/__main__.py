import os
import signal
import sys


from nnkit.signals import install

# From the first line: a signal while the command line itself loads is one line and exit 130 too, not a
# traceback (KeyboardInterrupt) or a silent death (SIGTERM's default).
install()


def _unraisable(hook: object) -> None:
    """An interrupt that lands in code whose exceptions Python ignores (an import lock's weakref callback, a
    finalizer) would print 'Exception ignored ...' with a traceback and be lost: deliver it again instead, so
    that it ends the run as any other interrupt does."""
    if isinstance(getattr(hook, "exc_value", None), KeyboardInterrupt):
        if sys.is_finalizing():  # SIGINT's handler is the default again: delivered now, it would kill (-2)
            _leave()
        signal.raise_signal(signal.SIGINT)
        return
    sys.__unraisablehook__(hook)  # type: ignore[arg-type]


def _leave() -> None:
    """Exit 130 at once, what was written kept."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed or broken stream has nothing left to keep
            pass
    os._exit(130)


sys.unraisablehook = _unraisable
try:
    from nnkit.cli import main
except KeyboardInterrupt:
    sys.stderr.write("nnkit: interrupted\n")
    # Nothing ran yet, so nothing needs cleaning up; and the interpreter, interrupted inside an import, has been
    # seen to end by SIGINT (-2) after a plain sys.exit(130) here: leave at once, with 130.
    _leave()

try:
    main()
except KeyboardInterrupt:
    # The command answered an interrupt (its one line written) and was leaving when a second one arrived, or the
    # first delivered again (_unraisable) from a finalizer: seen to end the process by SIGINT (-2) instead of 130.
    _leave()
