"""Near-duplicate search and content groups (stages/common/dedup.py) against brute force and by hand."""
import numpy as np

from stages.common.dedup import Groups, near_pairs, normalise_text


def test_near_pairs_match_brute_force_across_blocks():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (50, 6)).astype(np.float32)
    x[7] = x[3] + 0.01  # a planted near pair
    brute = {(i, j) for i in range(50) for j in range(i + 1, 50) if np.sqrt(np.mean((x[i] - x[j]) ** 2)) <= 0.9}
    assert (3, 7) in brute and 0 < len(brute) < 1225
    assert set(near_pairs(x, 0.9, block=8)) == brute  # blocks of 8 rows: pairs that cross blocks are found too
    assert list(near_pairs(np.zeros((0, 6)), 1.0)) == []


def test_groups_are_named_by_their_first_record():
    groups = Groups(6)
    groups.join(4, 2)
    groups.join(5, 4)
    groups.join(1, 5)  # 5's group (named 2) meets 1: the earlier name wins
    assert groups.roots() == [0, 1, 1, 3, 1, 1]


def test_text_is_compared_after_normalising():
    assert normalise_text("  A  Red\tCIRCLE ") == normalise_text("a red circle") == "a red circle"
    assert normalise_text("e\u0301") == normalise_text("\u00e9") and normalise_text(None) is None
