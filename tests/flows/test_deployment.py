"""Prefect against real services on 127.0.0.1: a server (SQLite), `prefect deploy` from prefect.yaml, a process
worker, `prefect deployment run train/full`; the data gate failing a run; dvc push/pull through moto S3."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest

from tests.s3_server import S3_ENV, free_port
from tests.test_pipeline_e2e import clone_worktree

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
TINY = ["demo.n_records=42", "demo.n_corpus=14", "tokenizer.vocab_size=300", "shard.samples_per_shard=16",
        "pretrain.steps=3", "finetune.steps=3", "distill.steps=3", "pretrain.batch_size=4", "finetune.batch_size=4",
        "distill.batch_size=4", "quantize.calibration_batches=1", "evaluate.latency_repeats=1",
        "evaluate.split=val"]


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


@pytest.fixture(scope="module")
def prefect(tmp_path_factory):
    """A Prefect server on a free loopback port, the `local` pool, and a clone deployed from prefect.yaml."""
    home = tmp_path_factory.mktemp("prefect-home")
    project = clone_worktree(tmp_path_factory.mktemp("flow-clone"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@127.0.0.1"]
    subprocess.run([*git, "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "clone"], cwd=project, check=True)  # as a user's clone has
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PREFECT_RUNNER_POLL_FREQUENCY": "1", "GX_ANALYTICS_ENABLED": "false", "PWD": str(project),
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        wait_for(f"http://127.0.0.1:{port}/api/health", server)
        cli(env, project, "work-pool", "create", "local", "--type", "process")
        cli(env, project, "--no-prompt", "deploy", "--all")
        worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "local"], cwd=project,
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield env, project
    finally:
        for proc in (worker, server):  # the worker first: it reports its shutdown to the server
            if proc is not None:
                stop(proc)


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


def run_deployment(env: dict, project: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    return cli(env, project, "deployment", "run", "train/full", "--params", json.dumps({"overrides": overrides}),
               "--watch", "--watch-interval", "2", "--watch-timeout", "1500", check=False)


def run_logs(env: dict, project: Path, output: str) -> str:
    """The logs of the flow run that `prefect deployment run` created (its UUID is in the output)."""
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", output)[1]
    return cli(env, project, "flow-run", "logs", run_id, check=False).stdout


def test_deploy_registers_the_nightly_schedule_and_concurrency_limit(prefect):
    env, project = prefect
    inspected = cli(env, project, "deployment", "inspect", "train/full").stdout
    assert "'cron': '0 2 * * *'" in inspected, inspected[-3000:]
    limit = inspected[inspected.index("'global_concurrency_limit'"):]
    assert "'limit': 1," in limit[:600], limit[:600]  # Prefect keeps a deployment's limit as a global one
    assert "'work_pool_name': 'local'" in inspected


def test_gate_failure_fails_the_run_before_any_training(prefect):
    env, project = prefect
    bad = project / "data/sources/bad"
    bad.mkdir(parents=True)
    rows = [{"id": f"bad-{i}", "image_url": f"missing-{i}.png", "caption": "nothing"} for i in range(5)]
    (bad / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run_deployment(env, project, [*TINY, "data.sources=[data/sources/bad/records.jsonl]"])
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "finished in state 'Failed'" in output, output[-3000:]
    assert "task-run.Failed * validate" in output and "Running * pretrain" not in output, output[-3000:]
    logs = run_logs(env, project, output)
    # the gate's own summary reaches the user through the failed task
    assert "dvc repro --single-item validate failed" in logs and "FAIL batch" in logs, logs[-3000:]
    assert not (project / "models").exists() or not any((project / "models").iterdir())
    shutil.rmtree(bad)


def test_deployment_run_completes_and_publishes_artifacts(prefect):
    env, project = prefect
    proc = run_deployment(env, project, [*TINY, "data.sources=[data/sources/demo/records.jsonl,"
                                                "data/sources/demo/corpus.jsonl]"])
    assert proc.returncode == 0 and "Completed" in proc.stdout, run_logs(env, project, proc.stdout)[-6000:]
    assert (project / "reports/report.md").read_text().startswith("# trimodal evaluation report")
    assert (project / "models/student-int8/model.int8.safetensors").exists()
    report = cli(env, project, "artifact", "inspect", "trimodal-report").stdout
    assert "trimodal evaluation report" in report and "student-int8" in report, report[-3000:]
    table = cli(env, project, "artifact", "inspect", "trimodal-eval").stdout
    assert "vqa_accuracy" in table and "teacher" in table, table[-3000:]


def test_ingest_flow_commits_the_lock_and_pushes(prefect):
    env, project = prefect
    sources = ["data/sources/demo/records.jsonl", "data/sources/demo/corpus.jsonl"]
    proc = cli(env, project, "deployment", "run", "ingest/ingest", "--params",
               json.dumps({"sources": sources, "force": True}), "--watch", "--watch-timeout", "900", check=False)
    assert proc.returncode == 0 and "Completed" in proc.stdout, run_logs(env, project, proc.stdout)[-6000:]
    log = subprocess.run(["git", "log", "-1", "--name-only", "--format=%s"], cwd=project, capture_output=True,
                         text=True, check=True).stdout
    assert log.startswith("ingest: data/sources/demo/records.jsonl") and "dvc.lock" in log, log
    assert any((project / "dvc-storage").rglob("*")), "dvc push sent nothing to the default remote"


def digest_tree(root: Path, folders: list[str]) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted((root / folder).rglob("*")) if p.is_file()}


def test_dvc_push_pull_round_trip_through_s3(prefect, s3_server):
    env, project = prefect
    if not (project / "dvc.lock").exists():
        pytest.fail("needs the completed run of the previous test")
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="trimodal-dvc")
    dvc_env = {**env, **S3_ENV, "AWS_ENDPOINT_URL": s3_server}  # credentials from the environment

    def run(*args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, env=dvc_env, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    run("remote", "add", "--local", "-f", "s3", "s3://trimodal-dvc/cache")
    run("remote", "modify", "--local", "s3", "endpointurl", s3_server)
    folders = ["data/raw", "data/shards", "models/teacher", "models/student-int8"]
    before = digest_tree(project, folders)
    run("push", "-r", "s3")
    for folder in folders:
        shutil.rmtree(project / folder)
    shutil.rmtree(project / ".dvc/cache")
    run("pull", "-r", "s3", *folders)
    assert digest_tree(project, folders) == before
