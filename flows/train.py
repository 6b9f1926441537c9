"""Flow `train`: the whole DAG, each dvc.yaml stage a sub-run on the work pool its `meta.pool` names (cpu by default).

    prefect deployment run train/full -p overrides='["pretrain.steps=3"]'
A run executes a committed revision (`revision`, default the head of `repo_url`'s default branch), never a worker's
working tree. It clones it, commits params.yaml composed from conf/ with `overrides` on a new branch
trimodal/run-<flow run id> and pushes it, then runs every stage in DVC's order as a sub-run of `stage/<pool>`
(flows/stage.py), one after another. Each stage commits its dvc.lock to that branch, so the branch is the run's
record. The first failing stage fails the run and nothing after it runs; a stage whose machine died is marked
Crashed by the server's zombie automation (infra/automations.yaml) and fails the run the same way. The next run
does not start over: stages that ran with the same inputs are restored from DVC's run cache and a training stage
resumes from its last checkpoint (flows/stage.py). Artifacts: trimodal-lineage (the final
revision and the md5 of every output), trimodal-eval and trimodal-report (read from the final revision), and the
model cards: trimodal-cards (where each is, how to get that model) and trimodal-card-<model> (the card).
Whether the new student-int8 serves is flow `promote`'s decision (flows/promote.py), not this one's.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.deployments import run_deployment
from prefect.runtime import flow_run

from flows import workspace
from flows.cards import card_outs, cards_index
from flows.dvc_stages import (
    REMOTE_ENV,
    StageFailed,
    apply_overrides,
    dvc,
    lock_outs,
    stage_order,
    stage_pools,
    use_remote,
)
from trimodal.params import load_params

POLL_S = 2  # seconds between looks at a running stage: stages take seconds to hours, the API call is cheap


@task
def start_run(root: Path, repo_url: str, revision: str, overrides: list[str], dvc_remote: str | None) -> dict:
    """Clone the revision, commit the params of this run on its own branch and push it; fail before any stage
    runs when the DVC remote is one other machines cannot reach."""
    base = workspace.clone(repo_url, root, revision)
    use_remote(root, dvc_remote)
    apply_overrides(root, overrides)  # also refuses a params.yaml edited by hand, with or without overrides
    run_id = flow_run.get_id()
    workspace.commit(root, ["params.yaml"], f"params of run {run_id}: {' '.join(overrides)}")
    branch = f"trimodal/run-{run_id}"
    workspace.push(root, branch, force=True)  # the branch is this run's own: a retry of the run starts it again
    print(f"run branch {branch} from {base} of {repo_url}")
    return {"repo_url": repo_url, "branch": branch, "base": base, "params_revision": workspace.head(root)}


def dispatch(stage: str, pool: str, parameters: dict) -> None:
    """One stage as a sub-run of `stage/<pool>`, waited for; anything but Completed fails the parent."""
    child = run_deployment(f"stage/{pool}", parameters=parameters, flow_run_name=stage, poll_interval=POLL_S)
    state = child.state
    if state is None or not state.is_completed():
        raise StageFailed(f"stage {stage!r} on pool {pool!r} ended {state.name if state else 'without a state'} "
                          f"(flow run {child.id}): {state.message if state else ''}")
    print(f"{stage}: {state.name} on pool {pool} (flow run {child.id})")


@task
def publish_record(root: Path, run: dict) -> dict:
    """The run's record from the head of its branch: the revision, every output's md5, the scores and the report."""
    revision = workspace.fetch(root, run["branch"])
    pools = stage_pools(root)
    lineage = [{"stage": out["stage"], "pool": pools.get(out["stage"]), **out} for out in lock_outs(root)]
    create_table_artifact(key="trimodal-lineage", table=lineage,
                          description=f"revision {revision} (branch {run['branch']} of {run['repo_url']}; "
                                      f"params at {run['params_revision']}): dvc.lock's md5 of every output")
    publish_scores(root)
    publish_cards(root, revision, run["repo_url"])
    print(f"run record: {run['branch']} at {revision}")
    return {**run, "revision": revision, "lineage": lineage}


def publish_scores(root: Path) -> None:
    """trimodal-eval: one table row per (variant or baseline, overall / modality subset) of the evaluate stage's
    details (metrics/details/eval/*.json; paths as the run's params.yaml has them)."""
    rows, paths = [], load_params(root / "params.yaml").paths
    for path in sorted((root / paths.details / "eval").glob("*.json")):
        scores = json.loads(path.read_text())
        scored = scores.items() if path.stem == "baselines" else [(path.stem, scores)]
        for variant, result in scored:
            for row, values in result.get("rows", {}).items():
                rows.append({"variant": variant, "row": row,
                             **{k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}})
    if rows:
        create_table_artifact(key="trimodal-eval", table=rows, description=f"{paths.metrics}/eval/*.json")
    report = root / paths.report
    if report.exists():
        create_markdown_artifact(key="trimodal-report", markdown=report.read_text(), description=paths.report)


def publish_cards(root: Path, revision: str, repo_url: str) -> None:
    """trimodal-cards: where each model's card is and how to get that exact model; trimodal-card-<artifact>: the
    card itself (models/<variant>/README.md, a DVC-cached output of evaluate: pulled from the run's DVC remote)."""
    cards = card_outs(root)
    if not cards:
        return
    dvc(root, "pull", *(row["card"] for row in cards))
    create_markdown_artifact(key="trimodal-cards", markdown=cards_index(cards, revision, repo_url),
                             description=f"model cards at {revision}")
    for row in cards:
        create_markdown_artifact(key=f"trimodal-card-{row['artifact']}", markdown=(root / row["card"]).read_text(),
                                 description=f"{row['card']} at {revision} (md5 {row['md5']})")


@flow(name="train", log_prints=True)
def train(overrides: list[str] | None = None, force_ingest: bool = False, repo_url: str | None = None,
          revision: str = "HEAD", dvc_remote: str | None = None, keep_workdirs: bool = False,
          checkpoint_store: str | None = None, targets: list[str] | None = None) -> dict:
    """`repo_url`: the git remote (default $TRIMODAL_GIT_REMOTE, else the deployment's repository: its origin, or
    its path). `dvc_remote`: a URL or absolute folder every worker reaches (default $TRIMODAL_DVC_REMOTE, else the
    committed default remote). `checkpoint_store`: where training stages keep checkpoints for a later attempt to
    resume from (default: each worker's $TRIMODAL_CHECKPOINT_STORE, flows/checkpoints.py). `force_ingest`
    re-fetches the sources; `keep_workdirs` keeps the clones. `targets` (stage names): run only those and the stages
    they depend on, as `dvc repro <targets>` (default: the whole DAG)."""
    repo_url = repo_url or workspace.default_repo_url()
    dvc_remote = dvc_remote or os.environ.get(REMOTE_ENV) or None
    root = workspace.new_workdir("train", flow_run.get_id())
    run = start_run(root, repo_url, revision, overrides or [], dvc_remote)
    pools = stage_pools(root)
    for stage in stage_order(root, targets or []):
        dispatch(stage, pools[stage], {"stage": stage, "repo_url": repo_url, "branch": run["branch"],
                                       "dvc_remote": dvc_remote, "force": force_ingest and stage == "ingest",
                                       "keep_workdir": keep_workdirs, "checkpoint_store": checkpoint_store})
    record = publish_record(root, run)
    if not keep_workdirs:
        workspace.remove_workdir(root)
    return record


if __name__ == "__main__":
    train()
