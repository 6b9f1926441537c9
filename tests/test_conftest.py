"""tests/conftest.py's scheduling order: the modules it starts first exist (a renamed one would silently go
back to the end of the queue), and collection puts them first, longest first."""
from pathlib import Path

from tests.conftest import LONGEST_FIRST, pytest_collection_modifyitems

REPO = Path(__file__).resolve().parents[1]


def test_every_module_named_to_start_first_exists():
    missing = [path for path in LONGEST_FIRST if not (REPO / path).is_file()]
    assert missing == []


class Item:
    def __init__(self, nodeid: str):
        self.nodeid = nodeid


def test_the_longest_modules_come_first_and_the_rest_keep_their_order():
    items = [Item(n) for n in ("tests/a.py::x", f"{LONGEST_FIRST[1]}::y", "tests/b.py::z",
                               f"{LONGEST_FIRST[0]}::v", "tests/a.py::w", f"{LONGEST_FIRST[0]}::u")]
    pytest_collection_modifyitems(items)
    assert [i.nodeid for i in items] == [f"{LONGEST_FIRST[0]}::v", f"{LONGEST_FIRST[0]}::u",
                                         f"{LONGEST_FIRST[1]}::y", "tests/a.py::x", "tests/b.py::z", "tests/a.py::w"]
