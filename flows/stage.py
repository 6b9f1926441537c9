"""Flow `stage`: one dvc.yaml stage on whichever machine the work pool hands it to, sharing no disk with the others.

Deployed once per pool (`stage/cpu`, `stage/gpu`); `train/full` dispatches each stage to the pool its `meta.pool`
in dvc.yaml names. One run: a fresh clone of the run's branch -> `dvc pull` of exactly the deps other stages
produce -> `dvc repro --single-item` -> `dvc push` of its outputs -> a commit of dvc.lock, its `cache: false` outputs
and the .gitignore files DVC touched, pushed to the run's branch. Code and dvc.lock travel through git, data
through the DVC remote. A stage DVC would skip is skipped before anything is pulled. A stage that ran before with
the same code, params and deps (a run that crashed after it, another branch) is restored from DVC's run cache,
shared through the remote (`dvc push --run-cache`, `dvc repro --pull`), instead of run again. A training stage's
checkpoints are copied to a checkpoint store while it runs and come back into the next attempt's clone, on any
machine, which resumes from them (flows/checkpoints.py).

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
from flows.checkpoints import Mirror, store_url
from flows.dvc_stages import (
    dvc,
    needs_run,
    persistent_outs,
    pull_targets,
    restored,
    run_stage,
    stage_key,
    uncached_outs,
    use_cache,
    use_remote,
)

RETRIES = {"ingest": 2}  # sources are remote: a flaky fetch is worth another try


@task
def checkout(repo_url: str, branch: str, root: Path, dvc_remote: str | None) -> str:
    """Clone the run's branch; the worker's DVC cache is shared by its clones, so a second pull on it is local."""
    commit = workspace.clone(repo_url, root, branch)
    use_cache(root, workspace.work_root() / "dvc-cache")
    print(f"{branch} at {commit} in {root}; DVC remote {use_remote(root, dvc_remote)}")
    return commit


@task(task_run_name="dvc repro {stage}")
def reproduce(root: Path, stage: str, force: bool, checkpoint_store: str) -> str:
    """Run the stage when DVC says it changed. Returns "skipped" (unchanged: nothing pulled), "restored" (DVC's run
    cache held its outputs) or "ran". Its inputs are pulled only when it is not skipped."""
    if not force and not needs_run(root, stage):
        print(f"{stage}: code, params and deps unchanged since dvc.lock; skipped, nothing pulled")
        return "skipped"
    targets = pull_targets(root, stage)
    if targets:
        dvc(root, "pull", *targets)
        print(f"pulled {', '.join(targets)}")
    if not force and not needs_run(root, stage):  # the pulled data settles what the lock alone could not
        print(f"{stage}: unchanged once its deps were pulled; skipped")
        return "skipped"
    persistent = persistent_outs(root, stage)
    if not persistent:  # DVC's run cache covers the stage: a run elsewhere with the same inputs is reused
        output = run_stage(root, stage, force=force, run_cache=not force)
        print(output.strip()[-3000:])
        if restored(output):
            print(f"{stage}: restored from DVC's run cache (it ran before with the same code, params and deps)")
            return "restored"
        return "ran"
    mirror = Mirror(root, persistent, f"{checkpoint_store}/{slug(stage)}/{stage_key(root, stage)}")
    if not force and (back := mirror.restore()):  # forced: start over
        print(f"{stage}: resuming from the checkpoints a killed attempt left in {mirror.base}: {', '.join(back)}")
    with mirror.syncing():
        output = run_stage(root, stage, force=force)
    print(output.strip()[-3000:])
    mirror.clear()  # finished: the next attempt of this job has nothing to resume
    return "ran"


@task
def publish(root: Path, stage: str, branch: str) -> str:
    """dvc push the outputs, then commit and push what git carries to the next machine; returns the new head."""
    print(dvc(root, "push", "--run-cache", stage).strip())  # the run cache: a later run anywhere may reuse it
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
              keep_workdir: bool = False, checkpoint_store: str | None = None) -> dict:
    """Run `stage` from the head of `branch` of `repo_url`, push its outputs and its commit. `dvc_remote` (a URL or
    an absolute folder) overrides the committed default remote; `force` reruns the stage even if unchanged;
    `checkpoint_store` (a URL or an absolute folder) overrides $TRIMODAL_CHECKPOINT_STORE."""
    run = FlowRunContext.get()
    pool = run.flow_run.work_pool_name if run else None
    store = store_url(checkpoint_store)
    root = workspace.new_workdir(slug(stage), flow_run.get_id())
    checkout(repo_url, branch, root, dvc_remote)
    outcome = reproduce.with_options(retries=RETRIES.get(stage, 0), retry_delay_seconds=10)(root, stage, force, store)
    commit = publish(root, stage, branch) if outcome != "skipped" else workspace.head(root)
    record = {"stage": stage, "pool": pool, "workdir": str(root), "ran": outcome == "ran",
              "restored": outcome == "restored", "commit": commit}
    create_table_artifact(key=f"stage-{slug(stage)}", table=[record], description=f"{stage} on pool {pool}")
    if not keep_workdir:  # a failed stage never gets here: its clone stays for a look
        workspace.remove_workdir(root)
    return record
