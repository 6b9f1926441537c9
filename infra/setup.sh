#!/usr/bin/env bash
# One-time (idempotent) setup: a virtualenv in .venv with trimodal and its pinned dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
# img2dataset drags in the `dataclasses==0.6` backport, which shadows the standard library and
# breaks Prefect's server (`dataclass() got an unexpected keyword argument 'slots'`).
.venv/bin/python -m pip uninstall -y -q dataclasses 2>/dev/null || true
.venv/bin/python -c "import dataclasses, sys; assert 'site-packages' not in dataclasses.__file__, dataclasses.__file__"
echo "trimodal: environment ready in .venv (activate with: . .venv/bin/activate)"
