"""`dvc repro shard` in a temporary clone on a small demo: outputs, no-op rerun, source change reruns ingest."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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


def dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd), "GX_ANALYTICS_ENABLED": "false",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return proc


def set_params(root: Path, **sections) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in sections.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = clone_worktree(tmp_path_factory.mktemp("clone"))
    set_params(root, demo={"n_records": 56, "n_fusion": 12, "n_corpus": 14}, tokenizer={"vocab_size": 300},
               shard={"samples_per_shard": 16})
    first = dvc(root, "repro", "shard")
    return root, first


def test_repro_builds_every_data_stage(project):
    root, first = project
    for stage in ("demo", "ingest", "validate", "tokenizer", "shard"):
        assert f"Running stage '{stage}'" in first.stdout
    index = json.loads((root / "data/shards/index.json").read_text())
    accepted = sum(1 for _ in open(root / "data/validated/manifest.jsonl"))
    assert sum(index["splits"][s]["count"] for s in ("train", "val", "test")) == accepted
    assert accepted == 56 + 12 + 14  # the demo scrape is clean: nothing quarantined
    assert (root / "artifacts/tokenizer/tokenizer.json").exists()
    assert "validate" in yaml.safe_load((root / "dvc.lock").read_text())["stages"]


def test_second_repro_is_a_noop(project):
    root, _ = project
    again = dvc(root, "repro", "shard")
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout.lower()


def test_changing_sources_reruns_from_ingest(project):
    root, _ = project
    table = root / "data/sources/mine/records.csv"
    table.parent.mkdir(parents=True)
    table.write_text("id,text,caption\nu1,a blue square,a blue square\nu2,a red circle,a red circle\n")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["sources"] = ["data/sources/mine/records.csv"]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rerun = dvc(root, "repro", "shard")
    assert "Running stage 'ingest'" in rerun.stdout and "Running stage 'demo'" not in rerun.stdout
    ids = [json.loads(line)["id"] for line in open(root / "data/validated/manifest.jsonl")]
    assert ids == ["u1", "u2"]
