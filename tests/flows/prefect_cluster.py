"""A Prefect deployment on 127.0.0.1 for the tests of tests/flows/test_deployment*.py: a server (SQLite),
`prefect deploy` from prefect.yaml, pools `cpu` and `gpu` with one process worker each (each in its own folder with
its own work root), a bare git repository as the git remote and moto S3 as the DVC remote and the checkpoint store;
and the calls the tests make of it (runs, their sub-runs, artifacts, logs)."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
import yaml

from tests.s3_server import free_port
from tests.test_pipeline_e2e import clone_worktree

BIN = Path(sys.executable).parent
TINY = ["demo.n_records=42", "demo.n_fusion=9", "demo.n_corpus=14", "demo.n_ood_questions=3",
        "demo.n_ood_renders=3", "tokenizer.vocab_size=300",
        "shard.samples_per_shard=16",
        "pretrain.steps=3", "finetune.steps=3", "instruct.steps=3", "align.steps=3", "distill.steps=3",
        "pretrain.batch_size=4", "finetune.batch_size=4", "instruct.batch_size=4", "align.batch_size=4",
        "distill.batch_size=4", "quantize.calibration_batches=1", "evaluate.latency_repeats=1",
        "evaluate.split=val",
        # what the flows test is the plumbing, not the model: its smallest inputs and no speed sweeps
        "model.image_size=16", "model.patch_size=8", "model.n_mels=20",
        "quantize.speed_batch_sizes=[]", "evaluate.latency_batch_sizes=[1]"]
DEMO = "data.sources=[data/sources/demo/records.jsonl,data/sources/demo/corpus.jsonl]"
STAGES = ["demo", "ingest", "validate", "tokenizer", "shard", "pretrain", "finetune", "instruct", "preferences",
          "align", "distill", "quantize", "evaluate"]
GPU_STAGES = {"pretrain", "finetune", "instruct", "align", "distill"}
HEARTBEAT_S, ZOMBIE_AFTER_S = 30, 90  # Prefect's minimum heartbeat period; the automation's window in the test
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@127.0.0.1"]


@dataclass
class Cluster:
    env: dict          # what the CLI needs to reach the server
    project: Path      # the checkout the deployments were made from
    remote: Path       # the bare git repository every run clones from and pushes to
    base: str          # the commit of the working tree on the remote's main branch
    roots: dict        # pool -> that worker's work root
    dvc_remote: str    # the DVC remote, on moto S3
    checkpoints: str   # the checkpoint store, beside it in the same bucket
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


@contextmanager
def running_cluster(tmp_path_factory, s3_server: str, bucket: str) -> Iterator[Cluster]:
    """A server, pools cpu and gpu with a worker each, deployed from a clone whose origin is the bare git remote;
    stopped on exit. `bucket`: its own, so that two deployments of one session (and one moto server) share no
    run cache or checkpoint."""
    remote, project, base = git_remote(tmp_path_factory.mktemp("git"))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request: keep failures readable
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    dvc_remote, checkpoints = f"s3://{bucket}/runs", f"s3://{bucket}/checkpoints"
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect-home")),
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_RUNNER_POLL_FREQUENCY": "1", "GX_ANALYTICS_ENABLED": "false",
           "PWD": str(project), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "TRIMODAL_DVC_REMOTE": dvc_remote, "TRIMODAL_CHECKPOINT_STORE": checkpoints,
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
        yield Cluster(env, project, remote, base, roots, dvc_remote, checkpoints, workers)
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


def store_keys(cluster: Cluster, prefix: str) -> list[str]:
    bucket, _, key = cluster.checkpoints.removeprefix("s3://").partition("/")
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
