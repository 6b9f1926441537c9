"""Payloads parked on disk until a stage knows where they go, so that its memory stays flat in the number of rows.

ingest holds every fetched image and sound until the canonical raw shards are written (they are sorted by row
key), validate every converted medium until dedup has seen all records. Both keep them in one scratch file (a
nameless temporary file: a kill -9 leaves nothing behind) and in memory only an offset and a size per member.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import IO


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
