"""Where a flow run works and how its results travel: a fresh directory under the worker's work root, a clone of
the run's git revision in it, and a commit pushed back to the run's branch. Nothing is shared through a local disk.

Git credentials come from the worker's environment (an SSH key, a credential helper, GIT_ASKPASS); none are stored.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterable
from pathlib import Path

WORKDIR_ENV = "TRIMODAL_WORKDIR"  # a worker's work root: one fresh directory per flow run, plus its DVC cache
GIT_REMOTE_ENV = "TRIMODAL_GIT_REMOTE"  # the git remote runs clone from and push to


class GitFailed(RuntimeError):
    """A git command exited non-zero; the message carries its output."""


def git(root: str | Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise GitFailed(f"git {' '.join(args)} failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout.strip()


def work_root() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get(WORKDIR_ENV) or cache / "trimodal" / "work").resolve()


def new_workdir(label: str, run_id: str | None) -> Path:
    """A directory of its own for one flow run (named after the run, so the UI leads to it)."""
    path = work_root() / "runs" / f"{label}-{run_id or uuid.uuid4()}"
    path.mkdir(parents=True)
    return path


def remove_workdir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def default_repo_url(cwd: str | Path = ".") -> str:
    """$TRIMODAL_GIT_REMOTE, else the `origin` of the repository the flow runs in, else that repository's path."""
    if os.environ.get(GIT_REMOTE_ENV):
        return os.environ[GIT_REMOTE_ENV]
    try:
        return git(cwd, "remote", "get-url", "origin")
    except GitFailed:
        return git(cwd, "rev-parse", "--show-toplevel")


def clone(url: str, dest: Path, revision: str) -> str:
    """Clone url into dest at revision (a commit, tag, or branch of the remote; HEAD is its default branch)."""
    git(dest.parent, "clone", "--quiet", "--no-checkout", url, str(dest))
    commit = resolve(dest, revision)
    git(dest, "checkout", "--quiet", "--detach", commit)
    set_identity(dest)
    return commit


def resolve(root: Path, revision: str) -> str:
    for name in (revision, f"origin/{revision}"):
        proc = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}"], cwd=root,
                              capture_output=True, text=True)
        if proc.returncode == 0:
            return proc.stdout.strip()
    origin = git(root, "remote", "get-url", "origin")
    raise GitFailed(f"revision {revision!r} is neither a commit nor a branch of {origin}")


def set_identity(root: Path) -> None:
    """Commits need an author; keep the worker's own git identity when it has one."""
    if subprocess.run(["git", "config", "user.email"], cwd=root, capture_output=True).returncode != 0:
        git(root, "config", "user.name", "trimodal")
        git(root, "config", "user.email", f"trimodal@{socket.gethostname()}")


def head(root: Path) -> str:
    return git(root, "rev-parse", "HEAD")


def changed_paths(root: Path) -> list[str]:
    """Every path git sees as changed or new (ignored files excluded)."""
    entries = git(root, "status", "--porcelain", "-z", "--untracked-files=all").split("\0")
    return [entry[3:] for entry in entries if entry]


def commit(root: Path, paths: Iterable[str], message: str) -> bool:
    """Commit exactly `paths`; False when they hold no change."""
    paths = list(paths)
    if paths:
        git(root, "add", "-A", "--", *paths)
    if subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=root).returncode == 0:
        return False
    git(root, "commit", "--quiet", "-m", message)
    return True


def push(root: Path, branch: str, force: bool = False) -> None:
    """Push HEAD to the run's branch; without force a concurrent writer makes this fail instead of being lost.

    One exception: when the branch moved on by exactly this commit's twin (same parent, same message: the same
    stage of the same flow run, executed twice because a scheduler submitted it twice), that twin already
    published the stage, so HEAD becomes the twin. Any other writer fails the push, naming the commits it added."""
    try:
        git(root, "push", "--quiet", *(["--force"] if force else []), "origin", f"HEAD:refs/heads/{branch}")
    except GitFailed as err:
        if force:
            raise
        theirs = fetch_ref(root, branch)
        added = git(root, "log", "--format=%H %P %s", f"HEAD..{theirs}").splitlines()
        ours = git(root, "log", "-1", "--format=%P %s", "HEAD")
        if len(added) == 1 and added[0].split(" ", 1)[1] == ours:
            git(root, "checkout", "--quiet", "--detach", theirs)
            print(f"{branch}: the same stage of the same run was already published as {theirs}; using it")
            return
        listed = "\n".join(f"  {line.split(' ', 1)[0][:12]} {line.split(' ', 2)[-1]}" for line in added)
        raise GitFailed(f"{err}\n{branch} moved on while this clone worked; the commits it gained:\n{listed}") from err


def fetch_ref(root: Path, branch: str) -> str:
    """The branch's head on the remote, fetched into origin/<branch>; returns its commit."""
    git(root, "fetch", "--quiet", "origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}")
    return git(root, "rev-parse", f"refs/remotes/origin/{branch}")


def fetch(root: Path, branch: str) -> str:
    """Check out the newest commit of the run's branch (what the stages pushed); returns it."""
    git(root, "checkout", "--quiet", "--detach", fetch_ref(root, branch))
    return head(root)
