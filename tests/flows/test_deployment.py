"""Prefect against real services on 127.0.0.1: a server (SQLite), `prefect deploy` from prefect.yaml, pools `cpu` and
`gpu` with one process worker each (each in its own folder with its own work root), a bare git repository as the git
remote and moto S3 as the DVC remote and the checkpoint store. train/full runs every stage as a sub-run on its pool in a
fresh clone; the data gate fails a run; the distributed run gives the same bytes as a single-machine `dvc repro`; a
worker killed during pretrain leaves a Crashed run (heartbeats and infra/automations.yaml) and the next run restores
the finished stages from DVC's run cache and resumes pretrain from its last checkpoint."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import yaml

from flows.dvc_stages import apply_overrides
from tests.s3_server import free_port
from tests.test_pipeline_e2e import clone_worktree, dvc

pytestmark = pytest.mark.slow  # a Prefect server and workers running the DAG

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
TINY = ["demo.n_records=42", "demo.n_fusion=9", "demo.n_corpus=14", "demo.n_ood_questions=3",
        "demo.n_ood_renders=3", "tokenizer.vocab_size=300",
        "shard.samples_per_shard=16",
        "pretrain.steps=3", "finetune.steps=3", "instruct.steps=3", "align.steps=3", "distill.steps=3",
        "pretrain.batch_size=4", "finetune.batch_size=4", "instruct.batch_size=4", "align.batch_size=4",
        "distill.batch_size=4", "quantize.calibration_batches=1", "evaluate.latency_repeats=1",
        "evaluate.split=val"]
DEMO = "data.sources=[data/sources/demo/records.jsonl,data/sources/demo/corpus.jsonl]"
STAGES = ["demo", "ingest", "validate", "tokenizer", "shard", "pretrain", "finetune", "instruct", "preferences",
          "align", "distill", "quantize", "evaluate"]
GPU_STAGES = {"pretrain", "finetune", "instruct", "align", "distill"}
MODELS = ["models/teacher", "models/student", "models/student-int8"]
MODEL_STAGES = ["align", "distill", "quantize", "evaluate"]  # a model folder's files are outs of two stages
DVC_REMOTE = "s3://trimodal-dvc/runs"
CHECKPOINTS = "s3://trimodal-dvc/checkpoints"
HEARTBEAT_S, ZOMBIE_AFTER_S = 30, 90  # Prefect's minimum heartbeat period; the automation's window in the test
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@127.0.0.1"]
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


@dataclass
class Cluster:
    env: dict          # what the CLI needs to reach the server
    project: Path      # the checkout the deployments were made from
    remote: Path       # the bare git repository every run clones from and pushes to
    base: str          # the commit of the working tree on the remote's main branch
    roots: dict        # pool -> that worker's work root
    workers: dict      # pool -> its worker process (a test may replace one)


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "prefect server exited during start-up"
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"no answer from {url} in {timeout} s")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def git_remote(tmp: Path) -> tuple[Path, Path, str]:
    """A bare repository holding a commit of the working tree on main, and the clone it was pushed from."""
    remote = tmp / "trimodal.git"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(remote)], check=True)
    project = clone_worktree(tmp / "deployed-from")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "clone")  # as a user's clone has
    git(project, "branch", "-M", "main")
    git(project, "remote", "add", "origin", str(remote))
    git(project, "push", "-q", "origin", "main")
    return remote, project, git(project, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_server):
    """Server, pools cpu and gpu with a worker each, deployed from a clone whose origin is the bare git remote."""
    remote, project, base = git_remote(tmp_path_factory.mktemp("git"))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request: keep failures readable
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="trimodal-dvc")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect-home")),
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_RUNNER_POLL_FREQUENCY": "1", "GX_ANALYTICS_ENABLED": "false",
           "PWD": str(project), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "TRIMODAL_DVC_REMOTE": DVC_REMOTE, "TRIMODAL_CHECKPOINT_STORE": CHECKPOINTS,
           "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)}  # moto's endpoint and keys: AWS_* from s3_server
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = {}
    try:
        wait_for(f"http://127.0.0.1:{port}/api/health", server)
        for pool in ("cpu", "gpu"):
            cli(env, project, "work-pool", "create", pool, "--type", "process")
        cli(env, project, "--no-prompt", "deploy", "--all")
        cli(env, project, "automation", "create", "--from-json", json.dumps(zombie_automation(ZOMBIE_AFTER_S)))
        roots = {pool: tmp_path_factory.mktemp(f"worker-{pool}") / "work" for pool in ("cpu", "gpu")}
        workers.update({pool: start_worker(env, pool, root) for pool, root in roots.items()})
        yield Cluster(env, project, remote, base, roots, workers)
    finally:
        for proc in (*workers.values(), server):  # the workers first: they report their shutdown to the server
            stop(proc)


def zombie_automation(within_s: int) -> dict:
    """infra/automations.yaml, as infra/prefect-local.sh creates it, with a shorter window for the test."""
    automations = yaml.safe_load((Path(__file__).parents[2] / "infra/automations.yaml").read_text())["automations"]
    (automation,) = [a for a in automations if a["name"] == "trimodal-crash-zombie-runs"]
    automation["trigger"]["within"] = within_s
    return automation


def start_worker(env: dict, pool: str, root: Path) -> subprocess.Popen:
    """A worker started in a folder of its own (root's parent), with its own work root, as on another machine."""
    with open(root.parent / "worker.log", "w") as log:
        return subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", pool], cwd=root.parent,
                                env={**env, "TRIMODAL_WORKDIR": str(root)}, stdout=log, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM twice (Prefect's CLI takes the first as a graceful request, the second as final), then SIGKILL."""
    for _ in range(2):
        proc.terminate()
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait()


def cli(env: dict, cwd: Path, *args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "prefect"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert proc.returncode == 0, f"prefect {' '.join(args)}:\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"
    return proc


def start_run(cluster: Cluster, deployment: str, **parameters) -> str:
    """`prefect deployment run <deployment>`; returns the flow run's id."""
    proc = cli(cluster.env, cluster.project, "deployment", "run", deployment, "--params", json.dumps(parameters))
    return re.search(r"UUID: ([0-9a-f-]{36})", proc.stdout)[1]


def run_train(cluster: Cluster, deployment: str = "train/full", timeout: float = 1500, **parameters):
    """Run a deployment and wait for its end, polling the API: `--watch` follows an event stream, which once missed
    a run's final event here and kept waiting. Returns the finished flow run."""
    return wait_final(cluster, start_run(cluster, deployment, **parameters), timeout)


def run_logs(cluster: Cluster, run_id: str) -> str:
    return cli(cluster.env, cluster.project, "flow-run", "logs", run_id, check=False).stdout


@contextmanager
def prefect_api(cluster: Cluster):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: cluster.env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        yield client


def sub_runs(cluster: Cluster, parent: str) -> dict:
    """The stage runs train/full started, by stage name (the runs are named after their stage)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with prefect_api(cluster) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])))
    return {run.name: run for run in runs}


def artifact(cluster: Cluster, run_id, key: str):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with prefect_api(cluster) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[str(run_id)])))
    assert len(found) == 1, f"{len(found)} artifacts {key!r} for flow run {run_id}"
    return found[0]


def table(found) -> list[dict]:
    return json.loads(found.data) if isinstance(found.data, str) else found.data


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
        # demo ran with these params in the gate-failure run: DVC's run cache restores it instead
        assert record["pool"] == pool and (record["ran"] or stage == "demo" and record["restored"]), record
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
    dvc(pulled, "remote", "add", "--local", "--default", "s3", DVC_REMOTE)
    dvc(pulled, "pull", *MODEL_STAGES)
    digests = {k: v for k, v in digest_tree(pulled, MODELS).items() if k not in REVISION_STAMPED}
    assert len(digests) >= 3 and digests == {k: v for k, v in digest_tree(single, MODELS).items()
                                             if k not in REVISION_STAMPED}
    distributed, alone = lock_md5s((pulled / "dvc.lock").read_text()), lock_md5s((single / "dvc.lock").read_text())
    assert distributed.keys() == alone.keys()
    differ = {path for path in alone if distributed[path] != alone[path]}
    assert differ <= WALL_CLOCK | HEADER_ORDER | REVISION_STAMPED, differ - WALL_CLOCK - HEADER_ORDER - REVISION_STAMPED


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


def store_keys(prefix: str) -> list[str]:
    bucket, _, key = CHECKPOINTS.removeprefix("s3://").partition("/")
    found = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"{key}/{prefix}")
    return [obj["Key"] for obj in found.get("Contents", [])]


def kill_tree(proc: subprocess.Popen) -> list[int]:
    """SIGKILL a process and everything it started, as when its machine dies: nothing reports anything."""
    import psutil

    procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for each in procs:
        each.kill()
    proc.wait()
    return [each.pid for each in procs]


def wait_final(cluster: Cluster, run_id: str, timeout: float):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with prefect_api(cluster) as client:
            run = client.read_flow_run(run_id)
        if run.state and run.state.is_final():
            return run
        time.sleep(2)
    raise AssertionError(f"flow run {run_id} still {run.state.name if run.state else None} after {timeout} s")


def test_a_worker_killed_during_pretrain_crashes_the_run_and_the_next_run_resumes_it(cluster, tmp_path):
    """Runs last: it replaces the gpu worker."""
    overrides = [o for o in TINY if not o.startswith("pretrain.steps=")]
    overrides += [DEMO, "pretrain.steps=150", "pretrain.checkpoint_every=10"]
    first = start_run(cluster, "train/full", overrides=overrides, targets=["pretrain"])  # pretrain and upstream
    deadline = time.time() + 900
    while not any(key.endswith(".done") for key in store_keys("pretrain/")):  # a checkpoint left the machine
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
    kept = sorted({key.rsplit("/", 1)[-1] for key in store_keys("pretrain/") if key.endswith(".done")})

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
    assert not store_keys("pretrain/"), "a finished stage leaves no checkpoints in the store"
