import signal
import sys


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# From the first line: a signal while the command line itself loads is one line and exit 130 too, not a
# traceback (KeyboardInterrupt) or a silent death (SIGTERM's default).
signal.signal(signal.SIGTERM, _terminate)
try:
    from nnkit.cli import main
except KeyboardInterrupt:
    sys.stderr.write("nnkit: interrupted\n")
    sys.exit(130)

main()
