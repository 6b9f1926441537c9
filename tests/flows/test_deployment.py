"""train/full on a Prefect deployment (tests/flows/prefect_cluster.py: a server, pools cpu and gpu with a worker
each, a bare git remote, moto S3 as the DVC remote): every stage runs as a sub-run on its pool in a fresh clone that
pulls only its deps, and the distributed run gives the same bytes as a single-machine `dvc repro`. The failure
paths (the data gate, a killed worker) and the ingest flow are tests/flows/test_deployment_recovery.py, on a
deployment of their own, so the two modules run side by side."""
from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

import pytest
import yaml

from tests.flows.prefect_cluster import (
    DEMO,
    GPU_STAGES,
    STAGES,
    TINY,
    artifact,
    cli,
    git,
    run_logs,
    run_train,
    sub_runs,
    table,
)
from tests.test_pipeline_e2e import dvc

pytestmark = pytest.mark.e2e  # a Prefect server and workers running the DAG
MODELS = ["models/teacher", "models/student", "models/student-int8"]
MODEL_STAGES = ["align", "distill", "quantize", "evaluate"]  # a model folder's files are outs of two stages
# Outputs whose bytes hold wall-clock readings, so no two runs agree on them: samples/s and MFU (dvclive), latency
# (evaluate, report), Data Docs run times (GX), and the PEAK chunk soundfile writes into float WAVs (validate's
# media tars: trimodal/data/media.py). Everything else must match to the byte.
WALL_CLOCK = {"data/validated", "reports/validate", "reports/report.md", "metrics/details/quantize.json",
              "metrics/details/eval",
              *(f"metrics/{stage}/{out}" for stage in GPU_STAGES for out in ("metrics.json", "plots/metrics")),
              *(f"metrics/eval/{variant}.json" for variant in ("teacher", "student", "student-int8"))}
# The model cards name the git commit evaluate ran at: the run branch's, or the single-machine checkout's.
REVISION_STAMPED = {f"{model}/README.md" for model in MODELS}
# safetensors 0.8 writes a header's __metadata__ in a per-process random order (a Rust HashMap), and
# model/quantization.py saves two metadata keys: model.int8.safetensors can differ in that order alone.
HEADER_ORDER = {"models/student-int8/model.int8.safetensors"}



def lock_md5s(text: str) -> dict[str, str]:
    lock = yaml.safe_load(text)
    return {out["path"]: out["md5"] for entry in lock["stages"].values() for out in entry.get("outs", [])}


def content(path: Path) -> bytes:
    """The file's bytes; for safetensors, the header with its keys sorted (see HEADER_ORDER), then the tensors."""
    data = path.read_bytes()
    if path.suffix != ".safetensors":
        return data
    size = struct.unpack("<Q", data[:8])[0]
    return json.dumps(json.loads(data[8:8 + size]), sort_keys=True).encode() + data[8 + size:]


def digest_tree(root: Path, folders: list[str]) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(content(p)).hexdigest()
            for folder in folders for p in sorted((root / folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def full_run(cluster):
    """One train/full run on the demo source with tiny settings, its clones kept for inspection."""
    run = run_train(cluster, overrides=[*TINY, DEMO], keep_workdirs=True)
    parent = str(run.id)
    assert run.state.is_completed(), run_logs(cluster, parent)[-6000:]
    lineage = artifact(cluster, parent, "trimodal-lineage")
    found = re.search(r"revision ([0-9a-f]{40}) \(branch (\S+) of .*; params at ([0-9a-f]{40})\)", lineage.description)
    assert found, lineage.description
    revision, branch, params_revision = found.groups()
    return parent, revision, branch, params_revision, table(lineage)


def test_deploy_registers_the_schedule_the_limit_and_a_stage_deployment_per_pool(cluster):
    inspected = cli(cluster.env, cluster.project, "deployment", "inspect", "train/full").stdout
    assert "'cron': '0 2 * * *'" in inspected, inspected[-3000:]
    limit = inspected[inspected.index("'global_concurrency_limit'"):]
    assert "'limit': 1," in limit[:600], limit[:600]  # Prefect keeps a deployment's limit as a global one
    assert "'collision_strategy': 'CANCEL_NEW'" in inspected, inspected[-3000:]  # an overlapping run is cancelled
    assert "'work_pool_name': 'cpu'" in inspected
    for pool in ("cpu", "gpu"):
        stage = cli(cluster.env, cluster.project, "deployment", "inspect", f"stage/{pool}").stdout
        assert f"'work_pool_name': '{pool}'" in stage and "'entrypoint': 'flows/stage.py:one_stage'" in stage, stage
    ingest = cli(cluster.env, cluster.project, "deployment", "inspect", "ingest/ingest").stdout
    assert "'work_pool_name': 'cpu'" in ingest


def test_each_stage_runs_on_its_pool_in_a_clone_of_its_own_that_pulls_only_its_deps(cluster, full_run):
    parent, revision, branch, _, lineage = full_run
    runs = sub_runs(cluster, parent)
    assert sorted(runs) == sorted(STAGES)
    workdirs = {}
    for stage, run in runs.items():
        pool = "gpu" if stage in GPU_STAGES else "cpu"
        assert run.work_pool_name == pool and run.state.is_completed(), (stage, run.work_pool_name, run.state)
        (record,) = table(artifact(cluster, run.id, f"stage-{stage}"))
        workdirs[stage] = Path(record["workdir"])
        assert record["pool"] == pool and record["ran"], record
        assert workdirs[stage].is_relative_to(cluster.roots[pool]) and (workdirs[stage] / "dvc.yaml").exists()
    assert len(set(workdirs.values())) == len(STAGES)
    pretrain = workdirs["pretrain"]  # pulled its deps (shards, tokenizer), nothing upstream of them
    assert (pretrain / "data/shards/index.json").exists() and (pretrain / "artifacts/tokenizer").is_dir()
    assert not (pretrain / "data/raw").exists() and not (pretrain / "data/validated").exists()
    tokenizer = workdirs["tokenizer"]  # depends on one file of validate's folder: only that file was pulled
    assert [p.name for p in (tokenizer / "data/validated").iterdir()] == ["manifest.jsonl"]
    # the lineage names the branch's final commit and the md5s dvc.lock holds there
    assert git(cluster.remote, "rev-parse", f"refs/heads/{branch}") == revision
    locked = lock_md5s(git(cluster.remote, "show", f"{revision}:dvc.lock"))
    recorded = {row["out"]: row["md5"] for row in lineage}
    assert recorded == locked and "models/student-int8/README.md" in recorded  # evaluate's model card
    card = cli(cluster.env, cluster.project, "artifact", "inspect", "trimodal-card-student-int8").stdout
    assert "model-index" in card and "trimodal-student-int8" in card, card[-3000:]
    report = cli(cluster.env, cluster.project, "artifact", "inspect", "trimodal-report").stdout
    assert "trimodal evaluation report" in report and "student-int8" in report, report[-3000:]
    scores = cli(cluster.env, cluster.project, "artifact", "inspect", "trimodal-eval").stdout
    assert "vqa_accuracy" in scores and "teacher" in scores, scores[-3000:]


def test_distributed_run_is_byte_identical_to_a_single_machine_repro(cluster, full_run, tmp_path):
    _, revision, _, params_revision, _ = full_run
    assert git(cluster.remote, "rev-parse", f"{params_revision}^") == cluster.base  # the run's first commit
    single = tmp_path / "single"
    git(tmp_path, "clone", "-q", str(cluster.remote), str(single))
    git(single, "checkout", "-q", params_revision)
    dvc(single, "repro")
    pulled = tmp_path / "pulled"
    git(tmp_path, "clone", "-q", str(cluster.remote), str(pulled))
    git(pulled, "checkout", "-q", revision)
    dvc(pulled, "remote", "add", "--local", "--default", "s3", cluster.dvc_remote)
    dvc(pulled, "pull", *MODEL_STAGES)
    digests = {k: v for k, v in digest_tree(pulled, MODELS).items() if k not in REVISION_STAMPED}
    assert len(digests) >= 3 and digests == {k: v for k, v in digest_tree(single, MODELS).items()
                                             if k not in REVISION_STAMPED}
    distributed, alone = lock_md5s((pulled / "dvc.lock").read_text()), lock_md5s((single / "dvc.lock").read_text())
    assert distributed.keys() == alone.keys()
    differ = {path for path in alone if distributed[path] != alone[path]}
    assert differ <= WALL_CLOCK | HEADER_ORDER | REVISION_STAMPED, differ - WALL_CLOCK - HEADER_ORDER - REVISION_STAMPED
