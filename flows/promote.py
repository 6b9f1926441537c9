"""Flow `promote`: make a committed revision's model production when it beats the production one
(trimodal/registry.py), in a fresh clone, and push the GTO tags it creates to the git remote.

    prefect deployment run promote/promote -p revision=trimodal/run-<flow run id> -p variant=student-int8

train/full leaves each run on a branch of its own; promoting that branch's head is the step that decides whether the
retrained model serves. The flow run fails, with every score compared in its message, when the model does not beat
production, so a nightly retrain that got worse shows as a failed promotion and changes nothing.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows import workspace
from flows.dvc_stages import REMOTE_ENV, dvc, use_cache, use_remote
from trimodal.registry import artifacts, model_files, promote


class NotPromoted(RuntimeError):
    """The model did not beat production; the message has the scores."""


@task
def checkout(repo_url: str, revision: str, variant: str, dvc_remote: str | None) -> tuple[str, Path]:
    """A clone at `revision` (tags included: the registry), with HEAD's model files and the shards pulled."""
    root = workspace.new_workdir("promote", flow_run.get_id())
    commit = workspace.clone(repo_url, root, revision)
    use_cache(root, workspace.work_root() / "dvc-cache")
    use_remote(root, dvc_remote)
    known = artifacts(root)
    if variant not in known:
        raise ValueError(f"no model artifact {variant!r} in dvc.yaml (artifacts: {', '.join(known)})")
    stage, _ = model_files(root, known[variant])
    print(dvc(root, "pull", stage, "shard").strip()[-2000:])
    return commit, root


@flow(name="promote", log_prints=True)
def promote_flow(variant: str = "student-int8", revision: str = "HEAD", repo_url: str | None = None,
                 dvc_remote: str | None = None, keep_workdir: bool = False) -> dict:
    """`revision`: a commit or branch of `repo_url` (default $TRIMODAL_GIT_REMOTE, else the deployment's repository);
    `dvc_remote` as in train/full. Fails when the model does not beat production."""
    repo_url = repo_url or workspace.default_repo_url()
    commit, root = checkout(repo_url, revision, variant, dvc_remote or os.environ.get(REMOTE_ENV) or None)
    result = promote(variant, root, push=True)
    print(result.message)
    create_markdown_artifact(key="trimodal-promote", markdown=f"```\n{result.message}\n```",
                             description=f"promote {variant} at {commit} of {repo_url}")
    if not keep_workdir:
        workspace.remove_workdir(root)
    if not result.promoted:
        raise NotPromoted(result.message)
    return dataclasses.asdict(result)


if __name__ == "__main__":
    promote_flow()
