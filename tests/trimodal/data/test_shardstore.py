"""The store of canonical shards ingest and validate link instead of writing again (trimodal/data/shardstore.py)."""
import hashlib
import os

from trimodal.data.shardstore import ShardStore, tar_size
from trimodal.data.tars import read_tar, write_tar


def listed(members: dict[str, bytes]) -> list[tuple[str, str, int]]:
    return [(name, hashlib.sha256(data).hexdigest(), len(data)) for name, data in members.items()]


def test_tar_size_is_what_write_tar_writes(tmp_path):
    for n, members in enumerate(({}, {"a": b""}, {"a": b"x" * 511, "b": b"y" * 512, "c": b"z" * 513},
                                 {f"{i:03d}": os.urandom(i * 97) for i in range(40)})):
        write_tar(tmp_path / f"{n}.tar", members)
        assert (tmp_path / f"{n}.tar").stat().st_size == tar_size([len(d) for d in members.values()])


def test_a_stored_shard_comes_back_byte_identical_and_a_damaged_one_never(tmp_path):
    store = ShardStore(tmp_path / "store")
    members = {"000-00000001": b"one", "000-00000002": os.urandom(3000)}
    assert not store.restore(listed(members), tmp_path / "first.tar")  # nothing stored yet
    write_tar(tmp_path / "first.tar", members)
    store.keep(listed(members), tmp_path / "first.tar")
    assert store.restore(list(reversed(listed(members))), tmp_path / "again.tar")  # order does not matter
    assert (tmp_path / "again.tar").read_bytes() == (tmp_path / "first.tar").read_bytes()
    assert read_tar(tmp_path / "again.tar") == members
    other = {**members, "000-00000001": b"eno"}  # same names and sizes, other bytes: another key
    assert not store.restore(listed(other), tmp_path / "other.tar")
    assert not ShardStore(tmp_path / "store", writer="another tars.py").restore(listed(members), tmp_path / "o.tar")
    (stored,) = (tmp_path / "store").glob("*.tar")
    stored.unlink()  # what a killed copy would leave: a short file
    stored.write_bytes((tmp_path / "first.tar").read_bytes()[:-512])
    assert not store.restore(listed(members), tmp_path / "short.tar") and not (tmp_path / "short.tar").exists()
    assert (store.linked, store.built) == (1, 1)
