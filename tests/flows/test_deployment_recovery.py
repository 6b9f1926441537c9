"""What goes wrong on a Prefect deployment (tests/flows/prefect_cluster.py), and the ingest flow: the data gate
fails a run before any training starts; a worker killed during pretrain leaves a Crashed run (heartbeats and
infra/automations.yaml) and the next run, on a new worker with an empty disk, restores the finished stages from
DVC's run cache and resumes pretrain from its last checkpoint; the ingest flow commits the lock and pushes."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from flows.dvc_stages import apply_overrides
from tests.flows.prefect_cluster import (
    DEMO,
    HEARTBEAT_S,
    STAGES,
    TINY,
    ZOMBIE_AFTER_S,
    artifact,
    git,
    kill_tree,
    run_logs,
    run_train,
    start_run,
    start_worker,
    store_keys,
    sub_runs,
    table,
    wait_final,
)
from tests.test_pipeline_e2e import dvc

pytestmark = pytest.mark.e2e  # a Prefect server and workers running the DAG


def test_gate_failure_fails_the_run_at_validate_and_starts_no_training(cluster, tmp_path):
    rows = [{"id": f"bad-{i}", "image_url": f"missing-{i}.png", "caption": "nothing"} for i in range(5)]
    work = tmp_path / "bad"
    git(tmp_path, "clone", "-q", str(cluster.remote), str(work))  # a run executes what is committed
    (work / "data/sources/bad").mkdir(parents=True)
    (work / "data/sources/bad/records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    git(work, "add", "-A")
    git(work, "commit", "-qm", "a source whose images are all missing")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/bad-source")
    run = run_train(cluster, revision="bad-source",
                             overrides=[*TINY, "data.sources=[data/sources/bad/records.jsonl]"])
    parent = str(run.id)
    assert run.state.is_failed(), run.state
    runs = sub_runs(cluster, parent)
    assert sorted(runs) == ["demo", "ingest", "validate"], sorted(runs)  # nothing after the gate starts
    assert runs["validate"].state.is_failed() and runs["ingest"].state.is_completed()
    logs = run_logs(cluster, parent)
    # the gate's own summary reaches the user through the failed stage
    assert "dvc repro --single-item --pull validate failed" in logs and "FAIL batch" in logs, logs[-3000:]
    assert not (cluster.roots["gpu"] / "runs").exists()


def test_ingest_flow_commits_the_lock_and_pushes(cluster):
    project = cluster.project
    apply_overrides(project, [*TINY, DEMO])
    dvc(project, "repro", "demo")  # the ingest flow works in the deployment's folder: give it the demo scrape
    sources = ["data/sources/demo/records.jsonl", "data/sources/demo/corpus.jsonl"]
    run = run_train(cluster, "ingest/ingest", timeout=900, sources=sources, force=True)
    assert run.state.is_completed(), run_logs(cluster, str(run.id))[-6000:]
    log = git(project, "log", "-1", "--name-only", "--format=%s")
    assert log.startswith("ingest: data/sources/demo/records.jsonl") and "dvc.lock" in log, log
    assert any((project / "dvc-storage").rglob("*")), "dvc push sent nothing to the default remote"


def test_a_worker_killed_during_pretrain_crashes_the_run_and_the_next_run_resumes_it(cluster, tmp_path):
    """Runs last: it replaces the gpu worker."""
    # the default model size: pretrain must still be running when the worker is killed after its first checkpoint
    overrides = [o for o in TINY if not o.startswith(("pretrain.steps=", "model."))]
    overrides += [DEMO, "pretrain.steps=150", "pretrain.checkpoint_every=10"]
    first = start_run(cluster, "train/full", overrides=overrides, targets=["pretrain"])  # pretrain and upstream
    deadline = time.time() + 900
    while not any(key.endswith(".done") for key in store_keys(cluster, "pretrain/")):  # a checkpoint left the machine
        assert time.time() < deadline, run_logs(cluster, first)[-6000:]
        time.sleep(1)
    killed = kill_tree(cluster.workers["gpu"])
    assert len(killed) >= 3, killed  # the worker, the flow run's process, dvc and the stage under it
    runs = sub_runs(cluster, first)
    assert runs["pretrain"].state.is_running(), runs["pretrain"].state  # killed mid-stage

    # no heartbeat from the dead run: the automation marks it Crashed, which fails the run that waits on it
    parent = wait_final(cluster, first, timeout=HEARTBEAT_S + ZOMBIE_AFTER_S + 120)
    pretrain = sub_runs(cluster, first)["pretrain"]
    assert pretrain.state.is_crashed() and "No heartbeat" in pretrain.state.message, pretrain.state
    assert parent.state.is_failed(), parent.state
    assert "ended Crashed" in run_logs(cluster, first)
    kept = sorted({key.rsplit("/", 1)[-1] for key in store_keys(cluster, "pretrain/") if key.endswith(".done")})

    # another machine takes the pool over: a new worker with an empty work root and DVC cache
    root = tmp_path / "gpu-2" / "work"
    root.parent.mkdir()
    cluster.workers["gpu"] = start_worker(cluster.env, "gpu", root)
    run = run_train(cluster, overrides=overrides, targets=["pretrain"])
    second = str(run.id)
    assert run.state.is_completed(), run_logs(cluster, second)[-6000:]
    records = {stage: table(artifact(cluster, run.id, f"stage-{stage}"))[0]
               for stage, run in sub_runs(cluster, second).items()}
    assert sorted(records) == sorted(STAGES[:6]), sorted(records)  # the targets and what they depend on
    for stage in ("demo", "ingest", "validate", "tokenizer", "shard"):  # done before the kill: not run again
        assert records[stage]["restored"] and not records[stage]["ran"], records[stage]
    assert records["pretrain"]["ran"] and Path(records["pretrain"]["workdir"]).is_relative_to(root)
    logs = run_logs(cluster, str(sub_runs(cluster, second)["pretrain"].id))
    step = int(kept[-1].removeprefix("step-").removesuffix(".done"))
    assert "resuming from the checkpoints a killed attempt left" in logs and kept[-1][:-5] in logs, logs[-4000:]
    assert 10 <= step < 150
    assert not store_keys(cluster, "pretrain/"), "a finished stage leaves no checkpoints in the store"
