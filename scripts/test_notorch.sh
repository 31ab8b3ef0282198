#!/usr/bin/env bash
# The tests marked "not torch", on what a user gets from `pip install .`: pyproject.toml's dependencies from the
# package registry and no torch, plus the pinned pytest, hypothesis and ruff (issue 12: CI proves the torch-free
# install works; ruff for tests/test_lint.py). Its own small environment, built in seconds, keyed like ./dev.sh's.
#   scripts/test_notorch.sh [pytest options]     (./dev.sh test-notorch runs it; .ci/run too)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
tools=$(grep -E "^(pytest|hypothesis|ruff)==" requirements/dev.txt)
key=$( { cat pyproject.toml; echo "$tools"; "$PY" -V; } \
  | "$PY" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])')
VENV=${NNKIT_VENV_CACHE:-$HOME/.cache/nnkit}/notorch-$key
pip() {  # quiet pip; this machine's local package folders warn once per package that they lack an entry
  "$VENV/bin/python" -m pip --quiet "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
if [ ! -f "$VENV/.nnkit-complete" ]; then
  echo "test_notorch: building $VENV (no torch)" >&2
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV"
  # shellcheck disable=SC2086 - one requirement per word
  pip install $tools
  touch "$VENV/.nnkit-complete"
fi
# The project as a user installs it (not editable) and its dependencies by pyproject.toml's bounds, every time,
# so that it follows this clone.
log=$(pip install --force-reinstall --no-deps . 2>&1 && pip install . 2>&1) || { echo "$log" >&2; exit 1; }
if "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  echo "test_notorch: $VENV has torch, so it proves nothing about the torch-free install" >&2
  exit 1
fi
exec "$VENV/bin/python" -m pytest -m "not torch" -p no:cacheprovider "$@"
