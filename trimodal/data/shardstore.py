"""Canonical tar shards kept between runs by what they hold, so that a grown table writes its new shards only
(issue 33, docs/data.md "Incremental runs").

A canonical tar (trimodal/data/tars.py) is a function of its members' names and bytes and of the code that writes
it, so a shard is named here by the sha256 of its member list (name, sha256 of the bytes, size) and of tars.py: the
same key is the same bytes. ingest and
validate look a shard up before building it and hard-link the stored file into their output (a copy where a link
cannot be made); a shard they build is linked into the store. Both sides of a link are only ever replaced whole
(trimodal/atomic.py), never written in place. A stored file whose size is not the one its members give is ignored
(and rebuilt), so a truncated store never reaches an output. Lives under `paths.cache`: deleting it is always safe.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from trimodal.data import tars

BLOCK, RECORD = 512, 20 * 512  # tarfile's block and record sizes: a tar is a whole number of records


def tar_size(sizes: Sequence[int]) -> int:
    """The size of a canonical USTAR tar of members of these sizes: a header block and the data rounded up to blocks
    each, two zero blocks, padded to a whole record."""
    size = sum(BLOCK + -(-n // BLOCK) * BLOCK for n in sizes) + 2 * BLOCK
    return -(-size // RECORD) * RECORD


class ShardStore:
    """Canonical tars under `root`, by the sha256 of (name, sha256, size) of their members."""

    def __init__(self, root: str | Path, writer: str | None = None):
        """`writer`: what the tars' format depends on (default: tars.py's sha256); another one, other keys."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.linked = self.built = 0
        self.writer = writer or hashlib.sha256(Path(tars.__file__).read_bytes()).hexdigest()

    def key(self, members: Sequence[tuple[str, str, int]]) -> str:
        """`members`: (name, sha256 hex of the bytes, size) of every member, in any order."""
        text = "".join(f"{name}\t{sha}\t{size}\n" for name, sha, size in sorted(members))
        return hashlib.sha256(f"{self.writer}\n{text}".encode()).hexdigest()

    def restore(self, members: Sequence[tuple[str, str, int]], dest: Path) -> bool:
        """Put the stored shard of `members` at `dest` (a link, or a copy); False when there is none (or its size is
        wrong), and `dest` is the caller's to build."""
        stored = self.root / f"{self.key(members)}.tar"
        try:
            if stored.stat().st_size != tar_size([size for _, _, size in members]):
                return False
        except FileNotFoundError:
            return False
        try:
            os.link(stored, dest)
        except OSError:  # another file system, or links refused
            shutil.copyfile(stored, dest)
        self.linked += 1
        return True

    def keep(self, members: Sequence[tuple[str, str, int]], built: Path) -> None:
        """Store `built`, the shard of `members` just written, under its key (linked, or copied beside and renamed:
        never a half-written store entry)."""
        stored = self.root / f"{self.key(members)}.tar"
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
        try:
            os.link(built, tmp)
        except OSError:
            shutil.copyfile(built, tmp)
        os.replace(tmp, stored)
        self.built += 1
