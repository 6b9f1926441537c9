import json

import pandas as pd
import pytest

from trimodal.data.fileserver import LoopbackServer
from trimodal.data.sources import SourceError, read_table, resolve_url
from trimodal.params import defaults


def write_tables(d):
    (d / "t.jsonl").write_text('{"id": "a", "text": "x", "label": 3}\n\n{"id": "b", "extra": 1}\nnope\n')
    (d / "t.csv").write_text("id,text,caption\na,hello,\nb,,cap\nc,1,2,3\n")
    pd.DataFrame({"id": ["a", "b"], "text": ["x", None], "label": [1.0, float("nan")]}).to_parquet(d / "t.parquet")


def test_jsonl_rows_keep_line_numbers_and_mark_malformed(tmp_path):
    write_tables(tmp_path)
    rows = read_table(str(tmp_path / "t.jsonl"), 2)
    assert [r.line for r in rows] == [1, 3, 4]  # the file's lines: the blank line 2 still counts
    assert [r.row_key for r in rows] == ["002-00000001", "002-00000002", "002-00000003"]
    assert rows[0].fields["label"] == "3" and rows[0].fields["image_url"] is None
    assert rows[1].fields["id"] == "b" and "extra" not in rows[1].fields
    assert rows[2].fields is None and rows[2].table_error.startswith("malformed table line: invalid JSON")


def test_csv_empty_cells_are_absent_and_ragged_rows_malformed(tmp_path):
    write_tables(tmp_path)
    rows = read_table(str(tmp_path / "t.csv"), 0)
    assert rows[0].fields["caption"] is None and rows[1].fields["text"] is None
    assert rows[2].table_error == "malformed table line: expected 3 columns, got 4"


def test_csv_lines_are_where_each_row_starts_in_the_file(tmp_path):
    (tmp_path / "t.csv").write_text('id,text\na,one\n\nb,"two\nlines"\nc,three,extra\nd,four\n')
    rows = read_table(str(tmp_path / "t.csv"), 0)
    assert [r.line for r in rows] == [2, 4, 6, 7]  # header on line 1, a blank line 3, b's cell spans lines 4-5
    assert rows[1].fields["text"] == "two\nlines" and rows[2].table_error.startswith("malformed table line")


def test_parquet_nan_is_absent_and_whole_floats_are_ints(tmp_path):
    write_tables(tmp_path)
    rows = read_table(str(tmp_path / "t.parquet"), 0)
    assert rows[0].fields["label"] == "1" and rows[1].fields["text"] is None and rows[1].fields["label"] is None


def test_tables_over_http_read_the_same(tmp_path):
    write_tables(tmp_path)
    path = str(tmp_path / "t.csv")
    with LoopbackServer([path], defaults().ingest) as server:
        over_http = read_table(server.url_for(path), 0)
    assert [r.fields for r in over_http] == [r.fields for r in read_table(path, 0)]


def test_unreadable_tables_raise_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="unknown table format"):
        read_table(str(tmp_path / "t.xlsx"), 0)
    with pytest.raises(SourceError, match="cannot read table"):
        read_table(str(tmp_path / "missing.jsonl"), 0)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(SourceError, match="cannot parse"):
        read_table(str(tmp_path / "bad.parquet"), 0)


def test_resolve_url_relative_to_table():
    assert resolve_url("img/a.png", "/data/src/t.csv") == "/data/src/img/a.png"
    assert resolve_url("img/a.png", "s3://b/src/t.csv") == "s3://b/src/img/a.png"
    assert resolve_url("../a.png", "https://h/x/y/t.csv") == "https://h/x/a.png"
    assert resolve_url("https://h/a.png", "/d/t.csv") == "https://h/a.png"
    assert resolve_url("ftp://h/a.png", "/d/t.csv") == "ftp://h/a.png"
    assert json.dumps(resolve_url("/abs/a.png", "s3://b/t.csv")) == '"/abs/a.png"'
