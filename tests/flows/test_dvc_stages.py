"""What a stage run decides from DVC's index alone, on a toy DVC repository and a fresh clone of it: each stage's
pool, what to pull (a file of another stage's folder alone; the outs inside a folder dep), whether it would run,
whether DVC's run cache restores it, the key a training stage's checkpoints are kept under, and which DVC remotes a
clone may use."""
from __future__ import annotations

import copy
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows.dvc_stages import dvc as flow_dvc
from flows.dvc_stages import (
    needs_run,
    persistent_outs,
    pull_targets,
    restored,
    run_stage,
    stage_key,
    stage_order,
    stage_pools,
    use_remote,
)

pytestmark = pytest.mark.slow  # a dvc repository, clones and stage runs per test

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@127.0.0.1"]
PIPELINE = {"stages": {
    "make": {"cmd": "mkdir -p out src/gen && echo a > out/x && echo b > out/y && echo c > src/gen/z",
             "outs": ["out", "src/gen"]},
    "one_file": {"cmd": "cp out/x one.txt", "deps": ["out/x"], "outs": ["one.txt"]},
    "whole_dir": {"cmd": "cat out/x out/y > both.txt", "deps": ["out"], "outs": ["both.txt"],
                  "meta": {"pool": "gpu"}},
    "holder": {"cmd": "ls -R src > listing.txt", "deps": ["src"], "outs": ["listing.txt"]},
}}


def run(cwd: Path, *args: str) -> None:
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)


def dvc(cwd: Path, *args: str) -> None:
    run(cwd, sys.executable, "-m", "dvc", *args)


def commit(cwd: Path, message: str) -> None:
    run(cwd, *GIT, "add", "-A")
    run(cwd, *GIT, "commit", "-qm", message)


@pytest.fixture
def origin(tmp_path):
    """A repository that ran its pipeline and pushed the data to an absolute folder remote."""
    root = tmp_path / "origin"
    root.mkdir()
    run(root, "git", "init", "-q")
    dvc(root, "init", "-q")
    (root / "src").mkdir()
    (root / "src/README").write_text("tables live here\n")
    (root / "dvc.yaml").write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    dvc(root, "remote", "add", "-d", "store", str(tmp_path / "store"))
    dvc(root, "repro")
    dvc(root, "push")
    commit(root, "pipeline")
    return root


def fresh_clone(origin: Path, name: str = "clone") -> Path:
    dest = origin.parent / name
    run(origin.parent, "git", "clone", "-q", str(origin), str(dest))
    return dest


def test_targets_run_with_what_they_depend_on_in_dvc_order(origin):
    assert stage_order(origin)[0] == "make" and sorted(stage_order(origin)) == sorted(PIPELINE["stages"])
    assert stage_order(origin, ["whole_dir"]) == ["make", "whole_dir"]
    assert stage_order(origin, ["make"]) == ["make"]
    with pytest.raises(KeyError, match="no stage 'nope'"):
        stage_order(origin, ["nope"])


def test_pools_come_from_meta_and_default_to_cpu(origin):
    assert stage_pools(origin) == {"make": "cpu", "one_file": "cpu", "whole_dir": "gpu", "holder": "cpu"}


def test_pull_targets_are_exactly_what_other_stages_produce(origin):
    assert pull_targets(origin, "make") == []
    assert pull_targets(origin, "one_file") == ["out/x"]  # one file of make's folder, not the folder
    assert pull_targets(origin, "whole_dir") == ["out"]
    assert pull_targets(origin, "holder") == ["src/gen"]  # the out inside the dep; src/README comes from git


def test_an_unchanged_stage_is_skipped_in_a_fresh_clone_without_pulling(origin):
    clone = fresh_clone(origin)
    assert not needs_run(clone, "make")  # outs missing from the clone do not count
    assert not needs_run(clone, "whole_dir")  # its dep is missing, and dvc.lock agrees with make's out
    assert needs_run(clone, "one_file") and needs_run(clone, "holder")  # part of a folder: judged after a pull
    dvc(clone, "pull", *pull_targets(clone, "one_file"))
    assert not needs_run(clone, "one_file")
    assert [p.name for p in (clone / "out").iterdir()] == ["x"]


def test_a_changed_upstream_output_reruns_the_stage_before_anything_is_pulled(origin):
    changed = copy.deepcopy(PIPELINE)
    changed["stages"]["make"]["cmd"] = changed["stages"]["make"]["cmd"].replace("echo b", "echo B")
    (origin / "dvc.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    dvc(origin, "repro", "--single-item", "make")  # as a run does: whole_dir's lock entry still has the old hash
    dvc(origin, "push")
    commit(origin, "make changed")
    assert needs_run(fresh_clone(origin), "whole_dir")


def test_a_clone_uses_only_a_remote_other_machines_can_reach(origin, tmp_path):
    clone = fresh_clone(origin)
    assert use_remote(clone, None) == str(tmp_path / "store")  # the committed default, absolute
    (clone / ".dvc/config").write_text((clone / ".dvc/config").read_text().replace(str(tmp_path / "store"),
                                                                                  "../store"))
    with pytest.raises(ValueError, match="TRIMODAL_DVC_REMOTE"):
        use_remote(clone, None)  # relative to the clone: a folder no other machine sees
    with pytest.raises(ValueError, match="relative"):
        use_remote(clone, "store")
    assert use_remote(clone, "s3://bucket/prefix") == "s3://bucket/prefix"
    assert "s3://bucket/prefix" in (clone / ".dvc/config.local").read_text()


def test_a_dvc_call_waits_for_the_repository_lock_instead_of_failing(origin):
    """Two stages of one run, or a run and a person, can call dvc in one workspace at once."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom dvc.repo import Repo\nrepo = Repo(sys.argv[1])\n"
        "with repo.lock:\n    print('held', flush=True)\n    time.sleep(8)\n"), str(origin)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(subprocess.CalledProcessError):  # plain dvc retries for a few seconds, then fails
            dvc(origin, "repro")
        assert "up to date" in flow_dvc(origin, "repro").lower()  # the flows' call waits, then runs
        assert time.monotonic() - start >= 7.5
    finally:
        holder.wait(timeout=30)


def forget(clone: Path, stage: str) -> None:
    """Drop the stage's dvc.lock entry, as on a new run's branch whose lock predates the stage's run."""
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    del lock["stages"][stage]
    (clone / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))


def test_a_stage_that_ran_on_another_machine_is_restored_from_the_run_cache(origin):
    """A new run's branch starts from a dvc.lock that predates the stage: DVC's run cache, pushed to the remote,
    still knows its outputs for these exact deps, so it is restored instead of run."""
    dvc(origin, "push", "--run-cache")
    clone = fresh_clone(origin)
    forget(clone, "whole_dir")
    dvc(clone, "pull", "out")
    assert needs_run(clone, "whole_dir")
    output = run_stage(clone, "whole_dir", run_cache=True)
    assert restored(output) and (clone / "both.txt").read_text() == "a\nb\n", output
    other = fresh_clone(origin, "other")
    forget(other, "whole_dir")
    dvc(other, "pull", "out")
    assert not restored(run_stage(other, "whole_dir"))  # without the remote's run cache: it runs


def test_checkpoints_are_keyed_by_the_job_not_the_clone(origin):
    pipeline = yaml.safe_load((origin / "dvc.yaml").read_text())
    pipeline["stages"]["train"] = {"cmd": "mkdir -p ckpt && cp out/x ckpt/", "deps": ["out/x"],
                                   "outs": [{"ckpt": {"persist": True, "cache": False}}, "model.txt"]}
    (origin / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    commit(origin, "a training stage")
    first, second = fresh_clone(origin, "first"), fresh_clone(origin, "second")
    for clone in (first, second):
        dvc(clone, "pull", "out/x")
    assert persistent_outs(first, "train") == ["ckpt"] and persistent_outs(first, "whole_dir") == []
    assert stage_key(first, "train") == stage_key(second, "train")
    (second / "out/x").write_text("other data\n")
    assert stage_key(first, "train") != stage_key(second, "train")
