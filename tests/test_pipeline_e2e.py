"""`dvc repro shard` in a temporary clone on a small demo: outputs, no-op rerun, source change reruns ingest."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def clone_worktree(dest: Path) -> Path:
    """Copy what a fresh clone would hold (tracked + untracked-not-ignored files), then `git init` it."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def dvc_env(cwd: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(cwd), "GX_ANALYTICS_ENABLED": "false",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=dvc_env(cwd), capture_output=True,
                          text=True, timeout=900)
    assert not check or proc.returncode == 0, \
        f"dvc {' '.join(args)} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return proc


def stage_pids(root: Path, module: str) -> list[int]:
    """Processes running `python -m <module>` in `root` (what dvc started for a stage)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and module.encode() in (proc / "cmdline").read_bytes().split(b"\0") \
                    and (proc / "cwd").resolve() == root.resolve():
                pids.append(int(proc.name))
        except OSError:  # the process ended while we looked
            continue
    return pids


def untracked(root: Path) -> list[str]:
    """What `git status` would list as new, besides DVC's lock and the metrics meant for committing."""
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=root, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    return [line[3:] for line in out if line.startswith("??")
            and not line[3:].startswith(("dvc.lock", "metrics/"))]


def set_params(root: Path, **sections) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in sections.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


DEMO_RECORDS = 56 + 12 + 7 + 6 + 14  # records, fusion, held-out phrasings and renderings, corpus: as set below


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = clone_worktree(tmp_path_factory.mktemp("clone"))
    set_params(root, demo={"n_records": 56, "n_fusion": 12, "n_corpus": 14, "n_ood_questions": 7,
                            "n_ood_renders": 6}, tokenizer={"vocab_size": 300},
               shard={"samples_per_shard": 16})
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)  # a clone: everything committed, then `git status`
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "clone"], cwd=root,
                   check=True)
    first = dvc(root, "repro", "shard")
    return root, first


def test_repro_builds_every_data_stage(project):
    root, first = project
    for stage in ("demo", "ingest", "validate", "tokenizer", "shard"):
        assert f"Running stage '{stage}'" in first.stdout
    index = json.loads((root / "data/shards/index.json").read_text())
    accepted = sum(1 for _ in open(root / "data/validated/manifest.jsonl"))
    assert sum(index["splits"][s]["count"] for s in ("train", "val", "test")) == accepted
    assert accepted == DEMO_RECORDS  # the demo scrape is clean: nothing quarantined
    assert index["splits"]["test"]["count"] >= 7 + 6  # the held-out records pin the test split
    assert (root / "artifacts/tokenizer/tokenizer.json").exists()
    assert "validate" in yaml.safe_load((root / "dvc.lock").read_text())["stages"]


def test_second_repro_is_a_noop(project):
    root, _ = project
    again = dvc(root, "repro", "shard")
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout.lower()


def assert_recovers_from_validate(root: Path) -> str:
    """`dvc repro` redoes validate (runs it, or restores its outputs from DVC's run cache) and nothing upstream."""
    rerun = dvc(root, "repro", "shard").stdout
    assert "Running stage 'validate'" in rerun or "Stage 'validate' is cached" in rerun, rerun
    assert "Stage 'ingest' didn't change" in rerun and "Stage 'demo' didn't change" in rerun, rerun
    assert "up to date" in dvc(root, "status", "--with-deps", "shard").stdout.lower()
    assert len((root / "data/validated/manifest.jsonl").read_text().splitlines()) == DEMO_RECORDS
    return rerun


def test_a_gate_failure_then_repro_reruns_from_validate_only(project):
    root, _ = project
    assert untracked(root) == []  # the generated data is git-ignored by the .gitignore files in the repository
    limit = yaml.safe_load((root / "params.yaml").read_text())["validate"]["max_caption_chars"]
    set_params(root, validate={"max_caption_chars": 3})  # every captioned record is quarantined: the gate fails
    failed = dvc(root, "repro", "shard", check=False)
    assert failed.returncode != 0 and "data gate failed" in failed.stdout + failed.stderr
    set_params(root, validate={"max_caption_chars": limit})
    status = dvc(root, "status").stdout
    assert "validate:" in status and "ingest:" not in status and "demo:" not in status, status
    assert untracked(root) == []  # DVC put back the .gitignore entries it had added: ours were already there
    assert_recovers_from_validate(root)


def test_a_kill_during_validate_then_repro_reruns_from_validate_only(project):
    root, _ = project
    # new limits: validate must run (a run DVC has seen before would come from its run cache, nothing to kill)
    set_params(root, validate={"max_caption_chars": 500})
    run = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "shard"], cwd=root, env=dvc_env(root),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (pids := stage_pids(root, "stages.validate")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pids, f"validate never started: {run.communicate()[0][-3000:]}"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert run.wait(timeout=120) != 0
    (root / "data/.validated.k1ll3d.tmp").mkdir(exist_ok=True)  # what a kill in the middle of the write leaves
    status = dvc(root, "status").stdout
    assert "ingest:" not in status and "demo:" not in status, status
    assert "Running stage 'validate'" in assert_recovers_from_validate(root)  # new limits: nothing cached
    assert not list((root / "data").glob(".validated.*")) and untracked(root) == []


def test_editing_shared_code_marks_only_the_stages_that_import_it(project):
    root, _ = project
    gate = root / "trimodal/data/gate.py"
    original = gate.read_text()
    gate.write_text(original + "\n# an edit\n")
    try:
        status = dvc(root, "status", "--with-deps", "shard").stdout
    finally:
        gate.write_text(original)
    changed = sorted(line.rstrip(":") for line in status.splitlines() if line and not line[0].isspace())
    assert changed == ["validate"], status  # ingest, tokenizer and shard do not import the gate


def test_changing_sources_reruns_from_ingest(project):
    root, _ = project
    table = root / "data/sources/mine/records.csv"
    table.parent.mkdir(parents=True)
    table.write_text("id,text,caption\nu1,a blue square,a blue square\nu2,a red circle,a red circle\n")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["sources"] = ["data/sources/mine/records.csv"]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rerun = dvc(root, "repro", "shard")
    assert "Running stage 'ingest'" in rerun.stdout
    # the demo is no source any more: it reran, in no time, and left only a note (ingest no longer hashes the scrape)
    assert "names no table in data/sources/demo; not generated" in rerun.stdout
    assert [p.name for p in (root / "data/sources/demo").iterdir()] == ["UNUSED.txt"]
    ids = [json.loads(line)["id"] for line in open(root / "data/validated/manifest.jsonl")]
    assert ids == ["u1", "u2"]
