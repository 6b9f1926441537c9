"""Canonical tar shards: members sorted by name, fixed mtime/owner/mode, so identical content hashes identically.

DVC decides what is stale from content hashes; tars with wall-clock mtimes or thread-ordered members
would make every rerun look like a change.
"""
from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path

from trimodal.atomic import atomic_open

FIXED_MTIME = 946684800  # 2000-01-01: any constant works; zero trips some tar readers


def write_tar(path: str | Path, members: Mapping[str, bytes]) -> None:
    """Write `members` (name -> bytes) as a canonical, uncompressed tar, atomically."""
    with atomic_open(path, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(members):
            data = members[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = FIXED_MTIME
            info.mode = 0o444
            info.uid = info.gid = 0
            info.uname = info.gname = "trimodal"
            tar.addfile(info, io.BytesIO(data))


def iter_tar(path: str | Path) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(path, mode="r:") as tar:
        for info in tar:
            if info.isfile():
                f = tar.extractfile(info)
                yield info.name, f.read() if f else b""


def read_tar(path: str | Path) -> dict[str, bytes]:
    return dict(iter_tar(path))


class TarMembers:
    """Payloads addressed as 'shard.tar:member' under `root`, with the last `cache` tars held in memory.

    Readers walk manifests in shard order, so a small cache reads every tar once.
    """

    def __init__(self, root: str | Path, cache: int = 2):
        root = Path(root)
        self._load = lru_cache(maxsize=cache)(lambda name: read_tar(root / name))

    def get(self, location: str) -> bytes:
        shard, member = location.split(":", 1)
        return self._load(shard)[member]
