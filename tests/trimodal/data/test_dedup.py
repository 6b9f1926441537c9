"""Near-duplicate search and content groups (trimodal/data/dedup.py) against brute force and by hand."""
import numpy as np

from trimodal.data.dedup import Groups, near_pairs, normalise_text


def brute_force(x: np.ndarray, max_rms: float) -> set[tuple[int, int]]:
    n = len(x)
    return {(i, j) for i in range(n) for j in range(i + 1, n) if np.sqrt(np.mean((x[i] - x[j]) ** 2)) <= max_rms}


def test_near_pairs_match_brute_force_across_blocks():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (50, 6)).astype(np.float32)
    x[7] = x[3] + 0.01  # a planted near pair
    brute = brute_force(x, 0.9)
    assert (3, 7) in brute and 0 < len(brute) < 1225
    pairs = list(near_pairs(x, 0.9, block=8))  # blocks of 8 rows: pairs that cross blocks are found too
    assert len(pairs) == len(set(pairs)) and set(pairs) == brute
    assert list(near_pairs(np.zeros((0, 6)), 1.0)) == []


def test_near_pairs_skip_rows_far_apart_in_norm_yet_find_every_pair():
    """Rows strung along a line: a block's norms reach only its neighbours (a third of the pairs are compared)."""
    rng = np.random.default_rng(0)
    x = (rng.uniform(0, 20, (50, 1)) + rng.normal(0, 0.3, (50, 6))).astype(np.float32)
    brute = brute_force(x, 0.9)
    assert len(brute) > 50
    pairs = list(near_pairs(x, 0.9, block=8))
    assert len(pairs) == len(set(pairs)) and set(pairs) == brute


def test_groups_are_named_by_their_first_record():
    groups = Groups(6)
    groups.join(4, 2)
    groups.join(5, 4)
    groups.join(1, 5)  # 5's group (named 2) meets 1: the earlier name wins
    assert groups.roots() == [0, 1, 1, 3, 1, 1]


def test_text_is_compared_after_normalising():
    assert normalise_text("  A  Red\tCIRCLE ") == normalise_text("a red circle") == "a red circle"
    assert normalise_text("e\u0301") == normalise_text("\u00e9") and normalise_text(None) is None
