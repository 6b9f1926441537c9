"""Payloads parked on disk until a stage knows where they go, so that its memory stays flat in the number of rows.

ingest holds every fetched local image and sound until the canonical raw shards are written (they are sorted by row
key) in one scratch file (a nameless temporary file: a kill -9 leaves nothing behind), and in memory only an offset
and a size per member. validate's fingerprints wait in a `RowFile` (fixed-width rows: nothing at all in memory per
row), kept between runs in its ledger (stages/validate.py).
"""
from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO

import numpy as np


class Spool(Mapping[str, bytes]):
    """Member name -> bytes, the bytes in `file` (opened "w+b")."""

    def __init__(self, file: IO[bytes]):
        self._file = file
        self._spans: dict[str, tuple[int, int]] = {}

    def add(self, name: str, data: bytes) -> None:
        self._file.seek(0, os.SEEK_END)
        self._spans[name] = (self._file.tell(), len(data))
        self._file.write(data)

    def only(self, names: Iterable[str]) -> Spool:
        """The members `names` (what one tar takes), read from the same file."""
        view = copy.copy(self)
        view._spans = {name: self._spans[name] for name in names}
        return view

    def close(self) -> None:
        self._file.close()

    def __contains__(self, name: object) -> bool:  # without reading the bytes, as Mapping's own would
        return name in self._spans

    def __getitem__(self, name: str) -> bytes:
        offset, size = self._spans[name]
        self._file.seek(offset)
        return self._file.read(size)

    def __iter__(self) -> Iterator[str]:
        return iter(self._spans)

    def __len__(self) -> int:
        return len(self._spans)


class RowFile:
    """float32 rows of `width` numbers appended to `file` (opened "w+b"); read back by position. Reads go through
    the file, not a memory map, whose pages would count in the process's resident memory."""

    def __init__(self, file: IO[bytes], width: int):
        self._file, self.width = file, width
        self._rows = os.fstat(file.fileno()).st_size // (4 * width)  # a file kept from an earlier run has rows

    def truncate(self, rows: int) -> None:
        """Keep the first `rows` rows only."""
        self._file.flush()
        self._file.truncate(4 * self.width * rows)
        self._rows = min(self._rows, rows)

    def append(self, row: np.ndarray) -> int:
        self._file.seek(0, os.SEEK_END)
        self._file.write(np.ascontiguousarray(row, dtype=np.float32).tobytes())
        self._rows += 1
        return self._rows - 1

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1 as one [stop - start, width] array."""
        self._file.flush()
        return self._pread(start, stop - start)

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The rows at `positions` (any order), one [len, width] array."""
        self._file.flush()
        out = np.empty((len(positions), self.width), dtype=np.float32)
        for k, position in enumerate(positions.tolist()):
            out[k] = self._pread(position, 1)[0]
        return out

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def _pread(self, start: int, count: int) -> np.ndarray:
        size = 4 * self.width
        data = os.pread(self._file.fileno(), count * size, start * size)
        return np.frombuffer(data, dtype=np.float32).reshape(-1, self.width)

    def __len__(self) -> int:
        return self._rows


def spool_beside(out_dir: Path) -> tempfile.TemporaryDirectory:
    """Scratch space on the output's disk (a scrape may not fit in /tmp), named so that a killed run's is removed
    with its other temps (trimodal/atomic.py remove_stale_temps)."""
    return tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.spool-", suffix=".tmp")
