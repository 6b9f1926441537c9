"""Reading source tables (csv / parquet / jsonl; local, file://, http(s)://, s3://) into input rows.

A table that cannot be opened at all is a configuration error and stops the stage. A *line* that cannot
be parsed is not: it becomes a row with `table_error`, so validate can quarantine it with its reason.
"""
from __future__ import annotations

import csv
import io
import json
import math
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlparse

import fsspec

from trimodal.data.records import ALL_FIELDS

SUPPORTED_SCHEMES = ("", "file", "http", "https", "s3")
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet")


class SourceError(RuntimeError):
    """A source table that cannot be read at all."""


@dataclass
class SourceRow:
    row_key: str  # "<source index>-<row number>": unique per input row, safe as a file name
    source: str
    line: int  # 1-based line of the file where the row starts (blank lines counted; parquet: row index + 1)
    fields: dict[str, str | None] | None
    table_error: str | None = None


def scheme_of(url: str) -> str:
    parsed = urlparse(url)
    # "C:\\x" style drive letters and bare paths have no scheme worth the name
    return parsed.scheme.lower() if len(parsed.scheme) > 1 else ""


def local_table(source: str) -> Path | None:
    """The absolute path of a local table (a path or a file:// URL); None for a remote one."""
    if scheme_of(source) not in ("", "file"):
        return None
    return Path(urlparse(source).path if scheme_of(source) == "file" else source).resolve()


def untracked_table(source: str, tracked: Path) -> str | None:
    """Why a local table outside `tracked` (ingest's dvc.yaml dep, data/sources/) cannot be used: DVC would not
    hash it, so appending rows to it would leave `dvc status` clean and the new rows unread. None if fine."""
    if (path := local_table(source)) is None:
        return None  # remote tables: read at run time, not hashed (docs/data.md "Use your own data")
    if path.is_relative_to(tracked.resolve()):
        return None
    return (f"local table {source!r} is outside {tracked}/, so DVC does not track it (edits to it would not rerun "
            f"ingest): move or copy it under {tracked}/ and name that path in data.sources")


def resolve_url(url: str, table: str) -> str:
    """Make a media URL absolute: relative paths are relative to the table that names them."""
    if scheme_of(url) or url.startswith("/"):
        return url
    if scheme_of(table) in ("", "file"):
        base = Path(urlparse(table).path if scheme_of(table) == "file" else table).resolve().parent
        return str(base / url)
    if scheme_of(table) == "s3":
        bucket_path = table[len("s3://"):]
        return "s3://" + posixpath.normpath(posixpath.join(posixpath.dirname(bucket_path), url))
    return urljoin(table, url)


def _clean(value: object) -> str | None:
    """Table cells -> str or None. Empty strings count as absent (csv cannot tell them apart)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if text != "" else None


def _fields(obj: dict) -> dict[str, str | None]:
    return {name: _clean(obj.get(name)) for name in ALL_FIELDS}


Parsed = Iterator[tuple[int, dict | None, str | None]]  # (line in the file, the row or None, why it is malformed)


def _jsonl_rows(data: bytes) -> Parsed:
    for line, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            yield line, None, f"malformed table line: not UTF-8 ({e.reason})"
            continue
        except json.JSONDecodeError as e:
            yield line, None, f"malformed table line: invalid JSON ({e.msg} at column {e.colno})"
            continue
        if not isinstance(obj, dict):
            yield line, None, f"malformed table line: expected a JSON object, got {type(obj).__name__}"
        else:
            yield line, obj, None


def _csv_rows(data: bytes, delimiter: str) -> Parsed:
    text = data.decode("utf-8-sig", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    end = reader.line_num
    for cells in reader:
        line, end = end + 1, reader.line_num  # a quoted cell may span lines: the row starts after the last one
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            yield line, None, f"malformed table line: expected {len(header)} columns, got {len(cells)}"
        elif any("\ufffd" in c for c in cells):
            yield line, None, "malformed table line: not UTF-8"
        else:
            yield line, dict(zip(header, cells, strict=True)), None


def _parquet_rows(data: bytes) -> Parsed:
    import pyarrow.parquet as pq

    batches = pq.ParquetFile(io.BytesIO(data)).iter_batches(batch_size=1024)
    rows = (row for batch in batches for row in batch.to_pylist())
    return ((n, row, None) for n, row in enumerate(rows, start=1))


def read_bytes(url: str, timeout_s: float | None = None) -> bytes:
    """Read a whole (table or media) object through fsspec, in at most `timeout_s` seconds of wall clock.

    One GET (`cat_file`), so the limit covers connecting, redirects and the whole body: fsspec runs the
    request under asyncio.wait_for(timeout) for http(s) and s3 and cancels it when time is up (FSTimeoutError,
    a TimeoutError). Local files are read without a limit. aiohttp stops a redirect loop (TooManyRedirects).
    """
    fs, path = fsspec.core.url_to_fs(url)
    if timeout_s is not None and fs.async_impl:
        return fs.cat_file(path, timeout=timeout_s)
    return fs.cat_file(path)


def read_table(source: str, index: int) -> list[SourceRow]:
    """All rows of one source table, parsed or marked malformed, in file order."""
    return list(iter_table(source, index))


def iter_table(source: str, index: int) -> Iterator[SourceRow]:
    """read_table one row at a time: the rows need not all be in memory (ingest keeps them in sqlite)."""
    suffix = next((s for s in TABLE_SUFFIXES if urlparse(source).path.lower().endswith(s)), None)
    if suffix is None:
        raise SourceError(f"source {source!r}: unknown table format (expected one of {', '.join(TABLE_SUFFIXES)})")
    if scheme_of(source) not in SUPPORTED_SCHEMES:
        raise SourceError(f"source {source!r}: unsupported URL scheme {scheme_of(source)!r}")
    try:
        data = read_bytes(source)
    except Exception as e:  # noqa: BLE001 - any failure to open the table is reported with its cause
        raise SourceError(f"source {source!r}: cannot read table ({type(e).__name__}: {e})") from e
    try:
        if suffix == ".parquet":
            parsed = _parquet_rows(data)
        elif suffix in (".csv", ".tsv"):
            parsed = _csv_rows(data, "\t" if suffix == ".tsv" else ",")
        else:
            parsed = _jsonl_rows(data)
        for n, (line, obj, error) in enumerate(parsed, start=1):
            yield SourceRow(row_key=f"{index:03d}-{n:08d}", source=source, line=line,
                            fields=_fields(obj) if obj is not None else None, table_error=error)
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"source {source!r}: cannot parse {suffix} table ({type(e).__name__}: {e})") from e
