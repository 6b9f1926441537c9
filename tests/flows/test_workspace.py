"""flows/workspace.py against real git: a bare repository as the remote, clones as the machines that push to it."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from flows import workspace

BRANCH = "trimodal/run-1"


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare remote whose BRANCH holds one commit."""
    bare, seed = tmp_path / "remote.git", tmp_path / "seed"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    subprocess.run(["git", "init", "-q", str(seed)], check=True)
    workspace.set_identity(seed)
    (seed / "dvc.lock").write_text("base\n")
    workspace.commit(seed, ["dvc.lock"], "params of run 1")
    workspace.git(seed, "remote", "add", "origin", str(bare))
    workspace.push(seed, BRANCH)
    return bare


def stage_commit(remote: Path, dest: Path, message: str, lock: str) -> Path:
    """A clone of BRANCH with one stage's commit on top, not pushed yet."""
    workspace.clone(str(remote), dest, BRANCH)
    (dest / "dvc.lock").write_text(lock)
    assert workspace.commit(dest, ["dvc.lock"], message)
    return dest


def test_a_push_behind_another_writer_fails_naming_the_commits_it_missed(remote, tmp_path):
    first = stage_commit(remote, tmp_path / "a", "dvc repro validate (run 7)", "validate\n")
    second = stage_commit(remote, tmp_path / "b", "dvc repro tokenizer (run 8)", "tokenizer\n")
    workspace.push(first, BRANCH)
    with pytest.raises(workspace.GitFailed) as failed:
        workspace.push(second, BRANCH)
    assert "moved on while this clone worked" in str(failed.value)
    assert f"{workspace.head(first)[:12]} dvc repro validate (run 7)" in str(failed.value)
    assert workspace.fetch(second, BRANCH) == workspace.head(first)  # nothing of the second landed


def test_the_same_stage_of_the_same_run_pushed_twice_keeps_the_first(remote, tmp_path):
    twin_a = stage_commit(remote, tmp_path / "a", "dvc repro tokenizer (run 8)", "tokenizer, attempt a\n")
    twin_b = stage_commit(remote, tmp_path / "b", "dvc repro tokenizer (run 8)", "tokenizer, attempt b\n")
    workspace.push(twin_a, BRANCH)
    workspace.push(twin_b, BRANCH)  # the twin published this stage already: no error, and its commit is kept
    assert workspace.head(twin_b) == workspace.head(twin_a)
    assert (twin_b / "dvc.lock").read_text() == "tokenizer, attempt a\n"


def test_a_forced_push_replaces_the_branch(remote, tmp_path):
    ahead = stage_commit(remote, tmp_path / "a", "dvc repro validate (run 7)", "validate\n")
    workspace.push(ahead, BRANCH)
    retry = stage_commit(remote, tmp_path / "b", "params of run 1, again", "base again\n")
    workspace.git(retry, "reset", "--quiet", "--hard", "HEAD~1")
    workspace.push(retry, BRANCH, force=True)
    assert workspace.fetch(ahead, BRANCH) == workspace.head(retry)
