#!/usr/bin/env bash
# One entry point for people and CI: builds (or reuses) the pinned environment, then runs what you ask.
#   ./dev.sh demo [train options]   train LeNet-5 on scikit-learn's bundled digits (no download)
#   ./dev.sh test [pytest options]  the whole test suite, in one pytest process
#   ./dev.sh nnkit ARGS...          any nnkit command in the environment
#   ./dev.sh env                    print the environment's path
#   ./dev.sh test-notorch [opts]    the tests marked "not torch" on a plain `pip install .` (no torch)
# The virtual environment lives outside the clone, keyed by a hash of requirements/dev.txt and the Python
# version, so a fresh clone reuses it; a missing or half-built one is built from nothing (torch 2.14.1 takes
# about 20 minutes to install on these machines).
set -euo pipefail
cd "$(dirname "$0")"
# The torch-free install has an environment of its own: no need to build torch for it.
[ "${1:-}" = test-notorch ] && { shift; exec scripts/test_notorch.sh "$@"; }
PY=${PYTHON:-python3}
key=$("$PY" - <<'PYEOF'
import hashlib, sys
lines = sorted(line.split('#')[0].strip() for line in open('requirements/dev.txt'))
key = '\n'.join(line for line in lines if line) + f'\npy{sys.version_info[0]}.{sys.version_info[1]}'
print(hashlib.sha256(key.encode()).hexdigest()[:16])
PYEOF
)
VENV=${NNKIT_VENV:-${NNKIT_VENV_CACHE:-$HOME/.cache/nnkit}/venv-$key}
pip() {  # quiet pip; this machine's local package folders warn once per package that they lack an entry
  "$VENV/bin/python" -m pip --quiet "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
if [ ! -f "$VENV/.nnkit-complete" ]; then
  echo "dev.sh: building $VENV (first time only; torch takes a while)" >&2
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV"
  pip install --upgrade pip setuptools wheel
  pip install -r requirements/dev.txt
  touch "$VENV/.nnkit-complete"
fi
# The project itself, editable and without dependencies: a few seconds, and it follows this clone.
log=$(pip install --no-deps --no-build-isolation -e . 2>&1) || { echo "$log" >&2; exit 1; }
what=${1:-help}
[ $# -gt 0 ] && shift
case "$what" in
  demo) exec "$VENV/bin/nnkit" train lenet5 "$@" ;;
  test) exec "$VENV/bin/python" -m pytest "$@" ;;
  nnkit) exec "$VENV/bin/nnkit" "$@" ;;
  env) echo "$VENV" ;;
  *) sed -n '2,7p' "$0" | sed 's/^# //'; exit 2 ;;
esac
