"""Flow `ingest`: fetch the given sources with the ingest stage, record the version, push the data.

The version is recorded as a git commit of dvc.lock and params.yaml (when the folder is a git repository
and they changed), then `dvc push` sends the data to the default remote.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from prefect import flow, task

from flows.dvc_stages import apply_overrides, dvc, run_stage


@task(retries=2, retry_delay_seconds=10)
def ingest_stage(root: str, force: bool) -> str:
    return run_stage(root, "ingest", force=force)


@task
def record_version(root: str, message: str) -> str | None:
    """Commit dvc.lock + params.yaml; returns the commit id, or None when nothing changed / no git."""
    if not (Path(root) / ".git").exists():
        return None
    subprocess.run(["git", "add", "dvc.lock", "params.yaml"], cwd=root, check=True)
    if subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=root).returncode == 0:
        return None
    subprocess.run(["git", "commit", "-q", "-m", message], cwd=root, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                          check=True).stdout.strip()


@flow(name="ingest", log_prints=True)
def ingest(sources: list[str] | None = None, force: bool = False, push: bool = True, root: str = ".") -> str | None:
    if sources:
        apply_overrides(root, [f"data.sources=[{','.join(sources)}]"])
    ingest_stage(root, force)
    commit = record_version(root, f"ingest: {', '.join(sources or ['configured sources'])}")
    if push:
        print(dvc(root, "push"))
    return commit


if __name__ == "__main__":
    ingest()
