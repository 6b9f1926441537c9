"""A training stage's checkpoints kept off the machine that trains, so that a run killed with its machine resumes on
another one.

While `dvc repro` runs a stage with persistent outs (dvc.yaml `persist: true`: checkpoints/<stage>/), a thread
copies every finished checkpoint to a store every few seconds, and before the stage runs its latest copies come back
into the fresh clone, where the trainer resumes from them (trimodal/training/trainer.py checks their fingerprint).

    <store>/<stage>/<key>/<out>/step-00000050/...    a checkpoint directory, copied file by file
    <store>/<stage>/<key>/<out>/step-00000050.done   written after its last file: the copy is whole
    <store>/<stage>/<key>/<out>/fingerprint          loose files, copied again on every pass

<key> is flows.dvc_stages.stage_key: the same command, deps and params share checkpoints, any other job gets its own.
The store is a folder every worker of a pool reaches or a URL fsspec opens (s3://bucket/prefix, with AWS_*
credentials as DVC's remote takes them): $TRIMODAL_CHECKPOINT_STORE, else the worker's work root, which outlives a
killed worker on the same machine but not the machine. A stage that finishes clears its store.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fsspec

from flows import workspace

STORE_ENV = "TRIMODAL_CHECKPOINT_STORE"
SYNC_S = 5.0  # seconds between passes: a pass lists two folders and copies only new checkpoints
DONE = ".done"


def store_url(explicit: str | None = None) -> str:
    url = explicit or os.environ.get(STORE_ENV) or str(workspace.work_root() / "checkpoints")
    if "://" not in url and not Path(url).is_absolute():
        raise ValueError(f"checkpoint store {url!r} is relative: give a URL (s3://bucket/prefix) or an absolute folder")
    return url.rstrip("/")


class Mirror:
    """Copies of the folders `outs` (relative to `root`) under `url`."""

    def __init__(self, root: Path, outs: list[str], url: str):
        self.root, self.outs = root, outs
        self.fs, self.base = fsspec.core.url_to_fs(url)

    def _remote(self, out: str, *names: str) -> str:
        return "/".join([self.base, out, *names])

    def _listing(self, out: str) -> tuple[set[str], set[str], set[str]]:
        """(whole checkpoint directories, partial ones, loose files) in the store."""
        folder = self._remote(out)
        self.fs.invalidate_cache()  # another machine may have written since this process last looked
        if not self.fs.isdir(folder):
            return set(), set(), set()
        entries = {Path(e["name"]).name: e["type"] for e in self.fs.ls(folder, detail=True)}
        done = {name[:-len(DONE)] for name in entries if name.endswith(DONE)}
        dirs = {name for name, kind in entries.items() if kind == "directory"}
        files = {name for name, kind in entries.items() if kind != "directory" and not name.endswith(DONE)}
        return dirs & done, dirs - done, files

    def restore(self) -> list[str]:
        """Bring the store's whole checkpoints and loose files into the clone; returns what came back."""
        restored = []
        for out in self.outs:
            whole, _, files = self._listing(out)
            local = self.root / out
            for name in sorted(files):
                local.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(self._remote(out, name), str(local / name))
            for name in sorted(whole):
                remote = self._remote(out, name)
                for path in self.fs.find(remote):
                    target = local / name / Path(path).relative_to(remote)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self.fs.get_file(path, str(target))
                restored.append(f"{out}/{name}")
        return restored

    def sync(self) -> list[str]:
        """Copy the clone's new checkpoint directories (each appears whole: the trainer renames it into place) and
        its loose files; drop from the store what the trainer dropped. Returns the directories copied."""
        copied = []
        for out in self.outs:
            local = self.root / out
            if not local.is_dir():
                continue
            whole, partial, _ = self._listing(out)
            self.fs.makedirs(self._remote(out), exist_ok=True)
            present = {p.name for p in local.iterdir() if p.is_dir() and not p.name.startswith(".")}
            for path in sorted(local.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    self.fs.put_file(str(path), self._remote(out, path.name))
            for name in sorted(present - whole):
                try:
                    for path in sorted(p for p in (local / name).rglob("*") if p.is_file()):
                        remote = self._remote(out, name, *path.relative_to(local / name).parts)
                        self.fs.makedirs(remote.rsplit("/", 1)[0], exist_ok=True)
                        self.fs.put_file(str(path), remote)
                except FileNotFoundError:  # the trainer dropped it meanwhile (it keeps the newest two)
                    continue
                self.fs.pipe_file(self._remote(out, name + DONE), b"")
                copied.append(f"{out}/{name}")
            for name in (whole | partial) - present:
                if name in whole:
                    self.fs.rm_file(self._remote(out, name + DONE))  # first: a half-removed copy is never whole
                self.fs.rm(self._remote(out, name), recursive=True)
        return copied

    def clear(self) -> None:
        if self.fs.exists(self.base):
            self.fs.rm(self.base, recursive=True)

    @contextmanager
    def syncing(self, every_s: float = SYNC_S) -> Iterator[None]:
        """Sync in a thread while the body runs, and once more at the end whatever happened."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(every_s):
                self._sync_logged()

        thread = threading.Thread(target=loop, name="checkpoint-mirror", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self._sync_logged()

    def _sync_logged(self) -> None:
        try:
            for name in self.sync():
                print(f"checkpoint {name} copied to {self.base}")
        except OSError as exc:  # a store that is briefly unreachable costs a pass, not the stage
            print(f"checkpoint copy to {self.base} failed this pass: {exc}")
