#!/usr/bin/env bash
# Regenerates infra/requirements.lock, the environment infra/setup.sh installs: pyproject.toml's dependencies, its
# [dev] extra and build-system.requires, every transitive dependency pinned and hashed. Pins in pyproject.toml
# alone let the rest float (a fresh machine once resolved a Prefect-breaking fastapi). To bump a version: edit
# pyproject.toml, run `bash infra/lock.sh`, then `bash infra/setup.sh`, and commit both files. Versions already in
# the lock are kept where they still fit; `bash infra/lock.sh --upgrade` moves every unpinned one to its newest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
. infra/pip-sources.sh
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
# uv at its [dev] pin, in a throwaway venv (the project's .venv may predate the change being locked).
"$PY" -m venv "$tools/venv"
"$tools/venv/bin/python" -m pip install -q "$(grep -o '"uv==[^"]*"' pyproject.toml | tr -d '"')"
pip_sources "$tools/venv/bin/python"
# Sources: PyPI plus pip's find-links (the CPU torch wheel; infra/pip-sources.sh). dataclasses==0.6 (from
# img2dataset) shadows the standard library and breaks Prefect's server: left out. build-system.requires come in
# on stdin (setup.sh installs trimodal without build isolation).
"$tools/venv/bin/python" -c 'import tomllib
print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' |
  "$tools/venv/bin/uv" pip compile pyproject.toml - --extra dev --python-version 3.11 --generate-hashes \
    "${UV_SOURCES[@]}" --no-emit-package dataclasses --custom-compile-command "bash infra/lock.sh" \
    -q -o infra/requirements.lock "$@"
grep -q '^torch==.*+cpu ' infra/requirements.lock || {
  echo "infra/lock.sh: torch is not the CPU build: the torch wheel in pip's find-links is missing" >&2; exit 1; }
