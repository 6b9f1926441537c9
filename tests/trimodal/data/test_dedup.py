"""Near-duplicate search and content groups (trimodal/data/dedup.py) against brute force and by hand."""
import tempfile

import faiss
import numpy as np
from PIL import Image, ImageDraw

from trimodal.data.dedup import (
    CELL,
    IMAGE_BLOCK,
    IMAGE_GRID,
    Groups,
    NearStats,
    coarse,
    coarse_index,
    image_fingerprint,
    near_pairs,
    normalise_text,
    resumed_index,
)
from trimodal.data.spool import RowFile


def brute_force(x: np.ndarray, max_rms: float) -> set[tuple[int, int]]:
    x = x.astype(np.float64)
    rms = np.sqrt(np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).mean(axis=2), 0))
    return {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(rms <= max_rms, k=1)), strict=True)}


def searched(x: np.ndarray, max_rms: float, grid: tuple, block: tuple, stats: NearStats | None = None,
             cell: int = CELL) -> list:
    with tempfile.TemporaryFile() as scratch:
        rows = RowFile(scratch, x.shape[1])
        for row in x:
            rows.append(row)
        return [(i, j) for i, j, _ in near_pairs(rows, max_rms, grid, block, stats, batch=64, cell=cell)]


def test_near_pairs_match_brute_force_across_batches():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (300, 8)).astype(np.float32)
    x[207] = x[3] + 0.01  # a planted near pair, in another batch
    brute = brute_force(x, 0.9)
    assert (3, 207) in brute and 0 < len(brute) < 300 * 299 // 2
    pairs = searched(x, 0.9, (8,), (2,))
    assert len(pairs) == len(set(pairs)) and set(pairs) == brute
    assert searched(np.zeros((1, 8), np.float32), 1.0, (8,), (2,)) == []


def test_coarse_rows_are_never_further_apart_than_the_full_rows():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (200, 192)).astype(np.float32)
    small = coarse(x, IMAGE_GRID, IMAGE_BLOCK)
    assert small.shape == (200, 48)
    full = np.sqrt(np.mean((x[:100] - x[100:]) ** 2, axis=1))
    reduced = np.sqrt(np.mean((small[:100] - small[100:]) ** 2, axis=1))
    assert np.all(reduced <= full + 1e-4) and reduced.mean() < 0.9 * full.mean()


def similar_picture(rng: np.random.Generator) -> Image.Image:
    """One grey background, two small objects: every such picture has nearly the same norm and thumbnail."""
    image = Image.new("RGB", (64, 64), (200, 200, 200))
    draw = ImageDraw.Draw(image)
    for _ in range(2):
        x, y = (int(v) for v in rng.integers(0, 56, 2))
        draw.ellipse((x, y, x + 8, y + 8), fill=tuple(int(v) for v in rng.integers(0, 120, 3)))
    return image


def test_similar_pictures_planted_duplicates_are_found_comparing_a_bounded_number_per_row():
    rng = np.random.default_rng(2)
    pictures = [similar_picture(rng) for _ in range(1200)]
    planted = {(k, 1200 + n) for n, k in enumerate(range(0, 1200, 40))}  # every 40th again, JPEG-like noisy
    copies = [Image.fromarray(np.clip(np.asarray(pictures[k], np.int16) + rng.integers(-6, 7, (64, 64, 3)), 0, 255)
                              .astype(np.uint8)) for k, _ in sorted(planted)]
    x = np.stack([image_fingerprint(p) for p in pictures + copies])
    norms = np.linalg.norm(x, axis=1)
    assert norms.std() < 0.02 * norms.mean()  # what made norm-sorted tiles compare every pair
    brute = brute_force(x, 4.0)
    assert planted <= brute
    stats = NearStats()
    pairs = set(searched(x, 4.0, IMAGE_GRID, IMAGE_BLOCK, stats, cell=40))  # 30 cells of the index
    assert pairs == brute and stats.found == len(brute)
    n = len(x)
    assert stats.compared < n * (n - 1) / 2 / 2  # each row meets the cells near it, not every row


def test_groups_are_named_by_their_first_record():
    groups = Groups(6)
    groups.join(4, 2)
    groups.join(5, 4)
    groups.join(1, 5)  # 5's group (named 2) meets 1: the earlier name wins
    assert groups.roots() == [0, 1, 1, 3, 1, 1]


def test_text_is_compared_after_normalising():
    assert normalise_text("  A  Red\tCIRCLE ") == normalise_text("a red circle") == "a red circle"
    assert normalise_text("e\u0301") == normalise_text("\u00e9") and normalise_text(None) is None


def test_a_search_of_the_appended_rows_finds_what_a_fresh_search_does(tmp_path):
    """The pairs depend on the rows alone, not on the index's cells: the old rows' pairs (searched when there were
    fewer rows, other cells) plus the new rows searched against all are a fresh search's pairs (validate's
    incremental runs, issue 33); resumed_index cuts a saved index to the rows kept."""
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (900, 8)).astype(np.float32)
    x[850:] = x[rng.integers(0, 850, 50)] + rng.normal(0, 0.05, (50, 8)).astype(np.float32)  # near the old ones
    brute = brute_force(x, 0.9)
    with tempfile.TemporaryFile() as scratch:
        rows = RowFile(scratch, 8)
        for row in x[:800]:
            rows.append(row)
        old = {(i, j) for i, j, _ in near_pairs(rows, 0.9, (8,), (2,), cell=20)}
        saved = tmp_path / "rows.index"
        faiss.write_index(coarse_index(rows, (8,), (2,), cell=20), str(saved))
        for row in x[800:]:
            rows.append(row)
        index = resumed_index(saved, rows, (8,), (2,))
        assert index.ntotal == 900
        new = {(i, j) for i, j, _ in near_pairs(rows, 0.9, (8,), (2,), start=800, index=index)}
        rows.truncate(850)  # a changed row 850: the index forgets the rows after it
        assert resumed_index(saved, rows, (8,), (2,)).ntotal == 850
    assert old | new == brute and min(j for _, j in new) >= 800 and sum(j >= 850 for _, j in brute) >= 50
