"""Flow `stage`: one dvc.yaml stage on whichever machine the work pool hands it to, sharing no disk with the others.

Deployed once per pool (`stage/cpu`, `stage/gpu`); `train/full` dispatches each stage to the pool its `meta.pool`
in dvc.yaml names. One run: a fresh clone of the run's branch -> `dvc pull` of exactly the deps other stages
produce -> `dvc repro --single-item` -> `dvc push` of its outputs -> a commit of dvc.lock, its `cache: false` outputs
and the .gitignore files DVC touched, pushed to the run's branch. Code and dvc.lock travel through git, data
through the DVC remote. A stage DVC would skip is skipped before anything is pulled.

    prefect deployment run stage/cpu -p stage=tokenizer -p repo_url=... -p branch=trimodal/run-...
"""
from __future__ import annotations

import re
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.context import FlowRunContext
from prefect.runtime import flow_run

from flows import workspace
from flows.dvc_stages import dvc, needs_run, pull_targets, run_stage, uncached_outs, use_cache, use_remote

RETRIES = {"ingest": 2}  # sources are remote: a flaky fetch is worth another try


@task
def checkout(repo_url: str, branch: str, root: Path, dvc_remote: str | None) -> str:
    """Clone the run's branch; the worker's DVC cache is shared by its clones, so a second pull on it is local."""
    commit = workspace.clone(repo_url, root, branch)
    use_cache(root, workspace.work_root() / "dvc-cache")
    print(f"{branch} at {commit} in {root}; DVC remote {use_remote(root, dvc_remote)}")
    return commit


@task(task_run_name="dvc repro {stage}")
def reproduce(root: Path, stage: str, force: bool) -> bool:
    """Run the stage when DVC says it changed; True when it ran. Its inputs are pulled only then."""
    if not force and not needs_run(root, stage):
        print(f"{stage}: code, params and deps unchanged since dvc.lock; skipped, nothing pulled")
        return False
    targets = pull_targets(root, stage)
    if targets:
        dvc(root, "pull", *targets)
        print(f"pulled {', '.join(targets)}")
    if not force and not needs_run(root, stage):  # the pulled data settles what the lock alone could not
        print(f"{stage}: unchanged once its deps were pulled; skipped")
        return False
    output = run_stage(root, stage, force=force)
    print(output.strip()[-3000:])
    return True


@task
def publish(root: Path, stage: str, branch: str) -> str:
    """dvc push the outputs, then commit and push what git carries to the next machine; returns the new head."""
    print(dvc(root, "push", stage).strip())
    uncached = uncached_outs(root, stage)
    paths = [path for path in workspace.changed_paths(root)
             if path == "dvc.lock" or Path(path).name == ".gitignore"
             or any(Path(path).is_relative_to(out) for out in uncached)]
    if workspace.commit(root, paths, f"dvc repro {stage} (run {flow_run.get_id()})"):
        workspace.push(root, branch)
    return workspace.head(root)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower())


@flow(name="stage", flow_run_name="{stage}", log_prints=True)
def one_stage(stage: str, repo_url: str, branch: str, dvc_remote: str | None = None, force: bool = False,
              keep_workdir: bool = False) -> dict:
    """Run `stage` from the head of `branch` of `repo_url`, push its outputs and its commit. `dvc_remote` (a URL or
    an absolute folder) overrides the committed default remote; `force` reruns the stage even if unchanged."""
    run = FlowRunContext.get()
    pool = run.flow_run.work_pool_name if run else None
    root = workspace.new_workdir(slug(stage), flow_run.get_id())
    checkout(repo_url, branch, root, dvc_remote)
    ran = reproduce.with_options(retries=RETRIES.get(stage, 0), retry_delay_seconds=10)(root, stage, force)
    commit = publish(root, stage, branch) if ran else workspace.head(root)
    record = {"stage": stage, "pool": pool, "workdir": str(root), "ran": ran, "commit": commit}
    create_table_artifact(key=f"stage-{slug(stage)}", table=[record], description=f"{stage} on pool {pool}")
    if not keep_workdir:  # a failed stage never gets here: its clone stays for a look
        workspace.remove_workdir(root)
    return record
