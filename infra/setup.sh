#!/usr/bin/env bash
# One-time (idempotent) setup: a virtualenv in .venv with exactly the versions in infra/requirements.lock
# (transitive dependencies included, hash-checked), then trimodal itself. infra/lock.sh regenerates the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
LOCK=infra/requirements.lock
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. infra/pip-sources.sh
pip_sources .venv/bin/python
# The lock is complete, so nothing is resolved (--no-deps); the editable install builds with the locked setuptools.
# uv (the lock's own pin, bootstrapped with pip) installs in parallel; INSTALLER=pip, or a failed bootstrap, uses pip.
if [ "${INSTALLER:-uv}" = uv ] && .venv/bin/python -m pip install -q --no-deps --require-hashes \
    -r <(awk '/^uv==/ {u = 1} u && !/^ *#/ {print} u && !/\\$/ {exit}' "$LOCK"); then
  uv_pip() { .venv/bin/uv pip "$1" --python .venv/bin/python "${UV_SOURCES[@]}" --no-deps "${@:2}"; }
  # bytecode now: uv does not compile it, and without it every stage process recompiled its imports (finetune: 37 s
  # vs 23 s per 80 steps, alternated A/B)
  uv_pip install -q --require-hashes --compile-bytecode -r "$LOCK"
  uv_pip install -q --no-build-isolation -e .
else
  [ "${INSTALLER:-uv}" = pip ] || echo "trimodal: uv could not be installed; installing the lock with pip" >&2
  .venv/bin/python -m pip install -q --no-deps --require-hashes -r "$LOCK"
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
fi
# img2dataset requires the `dataclasses==0.6` backport, which shadows the standard library and breaks Prefect's
# server (`dataclass() got an unexpected keyword argument 'slots'`): the lock leaves it out; a .venv from before
# the lock may still hold it.
.venv/bin/python -m pip uninstall -y -q dataclasses 2>/dev/null || true
.venv/bin/python -c "import dataclasses, sys; assert 'site-packages' not in dataclasses.__file__, dataclasses.__file__"
# The demo page's test drives Debian's chromium through Playwright (tests/trimodal/serving/test_page.py); Playwright's own
# browser download is not used (no network beyond the package registries).
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "trimodal: installing chromium (apt-get) for the demo page test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
  else
    echo "trimodal: no chromium; the demo page test needs it (Debian: sudo apt-get install chromium)" >&2
  fi
fi
echo "trimodal: environment ready in .venv (activate with: . .venv/bin/activate)"
