"""tests/conftest.py: the modules it starts first exist (a renamed one would silently go back to the end of the
queue) and collection puts them first, longest first; the quick tier (`-m "not slow"`) leaves out every e2e test;
under xdist a `-m` naming no registered marker is a usage error, not a crash."""
import subprocess
import sys
from pathlib import Path

from tests.conftest import LONGEST_FIRST, pytest_collection_modifyitems

REPO = Path(__file__).resolve().parents[1]


def test_every_module_named_to_start_first_exists():
    missing = [path for path in LONGEST_FIRST if not (REPO / path).is_file()]
    assert missing == []


class Item:
    def __init__(self, nodeid: str):
        self.nodeid = nodeid

    def get_closest_marker(self, name: str):
        return None


def test_the_longest_modules_come_first_and_the_rest_keep_their_order():
    items = [Item(n) for n in ("tests/a.py::x", f"{LONGEST_FIRST[1]}::y", "tests/b.py::z",
                               f"{LONGEST_FIRST[0]}::v", "tests/a.py::w", f"{LONGEST_FIRST[0]}::u")]
    pytest_collection_modifyitems(items)
    assert [i.nodeid for i in items] == [f"{LONGEST_FIRST[0]}::v", f"{LONGEST_FIRST[0]}::u",
                                         f"{LONGEST_FIRST[1]}::y", "tests/a.py::x", "tests/b.py::z", "tests/a.py::w"]


def run_pytest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_the_quick_tier_leaves_out_every_e2e_test():
    assert run_pytest("--co", "-q", "-m", "e2e and slow", "tests/test_pipeline_e2e.py").returncode == 0
    # exit 5: pytest collected nothing, every e2e test deselected
    assert run_pytest("--co", "-q", "-m", "not slow", "tests/test_pipeline_e2e.py").returncode == 5


def test_an_unknown_marker_in_m_is_a_usage_error_under_xdist():
    proc = run_pytest("-n", "2", "-m", "not slwo", "tests/test_conftest.py")
    assert proc.returncode == 4
    assert "Unknown marker(s) in '-m' expression: slwo" in proc.stderr and "INTERNALERROR" not in proc.stdout
