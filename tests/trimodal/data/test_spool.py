"""The scratch-file spool of trimodal/data/spool.py: members come back as added, a subset tars like plain bytes."""
import tempfile

import numpy as np

from trimodal.data.spool import RowFile, Spool
from trimodal.data.tars import write_tar


def test_spool_gives_back_each_member_and_tars_a_subset_as_the_bytes_would(tmp_path):
    members = {f"{i:03d}.{ext}": bytes([i]) * (i * 37 % 500) for i in range(20) for ext in ("png", "wav")}  # 0: empty
    kept = [name for name in members if name[1] == "1"]
    with tempfile.TemporaryFile(dir=tmp_path) as scratch:
        spool = Spool(scratch)
        for n, (name, data) in enumerate(members.items()):
            spool.add(name, data)
            if n == 7:
                assert spool["002.png"] == members["002.png"]  # a read between adds moves no later add
        assert dict(spool) == members and "002.png" in spool and "nope.png" not in spool
        write_tar(tmp_path / "spooled.tar", spool.only(kept))
    write_tar(tmp_path / "bytes.tar", {name: members[name] for name in kept})
    assert (tmp_path / "spooled.tar").read_bytes() == (tmp_path / "bytes.tar").read_bytes()


def test_row_file_gives_back_rows_by_range_and_by_position(tmp_path):
    rows = np.arange(60, dtype=np.float32).reshape(10, 6) * 1.5
    with tempfile.TemporaryFile(dir=tmp_path) as scratch:
        stored = RowFile(scratch, 6)
        assert [stored.append(row) for row in rows] == list(range(10)) and len(stored) == 10
        assert np.array_equal(stored.read(2, 5), rows[2:5])
        assert np.array_equal(stored.take(np.array([9, 0, 4, 4])), rows[[9, 0, 4, 4]])
        assert stored.take(np.array([], dtype=np.int64)).shape == (0, 6)
