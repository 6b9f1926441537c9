"""benchmarks/near_duplicates.py: the planted copies are found, and the tiles count is that of the norm-sorted tiles."""
import numpy as np

from benchmarks.near_duplicates import measure, tiles_would_compare


def test_equal_norms_made_the_tiles_compare_every_pair_and_spread_ones_a_block_per_row():
    n = 10000
    assert tiles_would_compare(np.full(n, 7.0), reach=1.0, block=1024) >= n * (n - 1) / 2  # quadratic
    assert tiles_would_compare(np.arange(float(n)), reach=1.0, block=1024) <= n * 1025  # linear


def test_the_similar_corpus_plants_near_duplicates_the_search_finds():
    result = measure("similar", 300)
    assert result["planted"] == 3 and result["planted_found"] == 3
    assert result["near_pairs"] >= 3 and result["compared"] > 0
