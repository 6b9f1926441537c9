"""Content identity of records: exact digests and near-duplicate fingerprints of their media, and the groups of
records that share media (docs/data.md "Duplicates and splits").

Exact: the sha256 of the decoded, normalised media bytes validate writes (PNG of the RGB pixels, float WAV of the
mono samples at the target rate), so the same picture or sound re-encoded, re-wrapped or converted is the same
content. Text is compared after NFC, case folding and whitespace collapsing.

Near: an image's fingerprint is its 8x8 RGB thumbnail (box filter); an audio clip's is a 16 x 32 grid (mel bands
up to 4 kHz x time slices) of its mean log-power in dB, floored 50 dB below the peak, mean removed (loudness does
not count). Two are near duplicates when the RMS difference of their fingerprints is at most a threshold
(`validate.near_duplicate_image_rms`, pixel levels of 0-255; `validate.near_duplicate_audio_db`; 0 turns it off).
Candidates come from a faiss inverted-file index over block means of the fingerprints (`near_pairs`), which can only
bring rows closer, and every candidate is checked on its full fingerprint.
Measured on the demo:
- images (1,440): JPEG quality 40 moves the fingerprint by at most 3.1, halving or doubling the size by 1.4, while
  99% of distinct renders are more than 3.8 from their nearest neighbour (default 4.0). A 64-bit DCT perceptual
  hash (pHash) did worse on such small, flat images: JPEG moved it by up to 17 bits, and 458 pairs of distinct
  renders hashed the same (a red and a blue circle alike: it ignores colour).
- audio (1,440 clips): 16-bit PCM re-encoding and gain changes move it by 0.00, resampling through 8 kHz by up to
  0.85, added noise (std 0.003) by up to 1.6; the demo's distinct clips (noise plus a few tone pulses) come as
  close as 0.55. The default 0.5 catches re-encodings and level changes, not resampling; speech or music, whose
  clips differ more, can take a larger threshold.
"""
from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from trimodal.data.spool import RowFile

IMAGE_THUMB = 8  # side of the RGB thumbnail: 192 numbers
AUDIO_GRID = (16, 32)  # mel bands x time steps of the audio fingerprint
# what near_pairs indexes of each: 4x4 RGB (48 numbers) and 8 bands x 8 steps (64)
IMAGE_GRID, IMAGE_BLOCK = (IMAGE_THUMB, IMAGE_THUMB, 3), (2, 2, 1)
AUDIO_BLOCK = (2, 4)
FINGERPRINT_WIDTH = {"image": IMAGE_THUMB * IMAGE_THUMB * 3, "audio": AUDIO_GRID[0] * AUDIO_GRID[1]}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def normalise_text(text: str | None) -> str | None:
    return " ".join(unicodedata.normalize("NFC", text).casefold().split()) if text is not None else None


def image_fingerprint(rgb: Image.Image) -> np.ndarray:
    """Of the RGB pixels validate decoded (the same as its lossless PNG holds)."""
    thumb = rgb.resize((IMAGE_THUMB, IMAGE_THUMB), Image.Resampling.BOX)
    return np.asarray(thumb, dtype=np.float32).ravel()


def audio_fingerprint(mono: np.ndarray, rate: int, n_fft: int = 512, max_hz: float = 4000.0,
                      floor_db: float = 50.0) -> np.ndarray:
    """Mean log-power of the clip on an AUDIO_GRID of mel-spaced bands (up to `max_hz`, which survives telephone
    band resampling) x equal time slices, in dB, floored `floor_db` below its peak, mean removed. `mono`: the
    float32 samples validate decoded (the same as its float WAV holds)."""
    mono = np.pad(mono, (0, max(0, n_fft - len(mono))))
    frames = np.lib.stride_tricks.sliding_window_view(mono, n_fft)[:: n_fft // 2] * np.hanning(n_fft)
    freqs = np.fft.rfftfreq(n_fft, 1 / rate)
    keep = (freqs > 0) & (freqs <= max_hz)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2)[:, keep]  # [frames, bins]
    mel = 2595 * np.log10(1 + freqs[keep] / 700)
    bands = np.minimum(((mel - mel[0]) / (mel[-1] - mel[0] + 1e-9) * AUDIO_GRID[0]).astype(int), AUDIO_GRID[0] - 1)
    steps = np.minimum(np.arange(len(power)) * AUDIO_GRID[1] // len(power), AUDIO_GRID[1] - 1)
    grid = np.zeros(AUDIO_GRID, dtype=np.float64)
    counts = np.zeros(AUDIO_GRID, dtype=np.float64)
    np.add.at(grid, (bands[None, :], steps[:, None]), power)
    np.add.at(counts, (bands[None, :], steps[:, None]), 1.0)
    db = 10 * np.log10(grid / np.maximum(counts, 1) + 1e-12)
    db = np.maximum(db, db.max() - floor_db)
    return (db - db.mean()).astype(np.float32).ravel()


CELL = 256  # rows per k-means cell of the near-duplicate index
PIECE = 2048  # candidate pairs checked at once: 2048 x 512 float64 differences, 8 MB


@dataclass
class NearStats:
    """What one near-duplicate search cost and found: fingerprint distances the index computed (`compared`), pairs
    whose full fingerprints were then checked (`candidates`: every pair of coarse rows within the radius, so a
    function of the rows alone), pairs within the threshold (`found`)."""
    compared: int = 0
    candidates: int = 0
    found: int = 0


def coarse(fingerprints: np.ndarray, grid: tuple[int, ...], block: tuple[int, ...]) -> np.ndarray:
    """Means over `block`-shaped cells of each row seen as a `grid`. The RMS difference of two coarse rows is at most
    that of the full rows (a block mean moves less than its members, Jensen), so a radius search over coarse rows
    misses no pair the full rows would find."""
    shape = [len(fingerprints)]
    for side, cell in zip(grid, block, strict=True):
        shape += [side // cell, cell]
    means = fingerprints.reshape(shape).mean(axis=tuple(range(2, 2 * len(grid) + 1, 2)), dtype=np.float32)
    return means.reshape(len(fingerprints), -1)


def near_pairs(rows: RowFile, max_rms: float, grid: tuple[int, ...], block: tuple[int, ...],
               stats: NearStats | None = None, batch: int = 2048, cell: int = CELL, start: int = 0,
               index=None) -> Iterator[tuple[int, int, float]]:
    """(i, j, RMS distance), i < j, j >= `start`, of every pair of rows of `rows` whose fingerprints differ by at most
    `max_rms`: with `start` = the rows of an earlier search, the pairs that search could not see (issue 33).

    Candidates come from a faiss inverted-file index (k-means cells of about `cell` rows) over the coarse rows. The
    search is exact: a row probes every cell that may hold a row within the radius (`probed_cells`), so the pairs
    depend on the rows alone, not on the cells, and an incremental search finds what a fresh one does. Each row meets
    the few cells near it, so the cost grows linearly with the rows however alike they are (norm-sorted tiles went
    quadratic on pictures with one background). `index`: one from `coarse_index` holding every row (else built).
    Memory: the coarse rows and one batch of full rows; the full rows stay in `rows`' file."""
    import faiss  # ~0.3 s to import: only when there is something to compare
    from faiss.contrib.ivf_tools import range_search_preassigned

    stats = stats if stats is not None else NearStats()
    n = len(rows)
    if n < 2 or max_rms <= 0 or start >= n:
        return
    index = index if index is not None else coarse_index(rows, grid, block, batch, cell)
    radius = max_rms * max_rms * index.d * (1 + 1e-5) + 1e-3  # squared L2 of coarse rows; faiss keeps d < radius
    centroids = index.quantizer.reconstruct_n(0, index.nlist).astype(np.float64)
    squares = (centroids * centroids).sum(1)
    apart = np.sqrt(np.maximum(squares[:, None] - 2 * centroids @ centroids.T + squares[None, :], 0))
    faiss.cvar.indexIVF_stats.reset()
    for first in range(start, n, batch):
        full = rows.read(first, min(first + batch, n))
        queries = coarse(full, grid, block)
        cells = probed_cells(queries, centroids, apart, radius)
        index.nprobe = cells.shape[1]
        lims, _, found = range_search_preassigned(index, queries, radius, cells)
        query = np.repeat(np.arange(first, first + len(full)), np.diff(lims).astype(np.int64))
        earlier = found < query
        i, j = found[earlier], query[earlier]
        stats.candidates += len(i)
        for at in range(0, len(i), PIECE):  # the candidates' full rows a piece at a time (PIECE x width)
            yield from _checked(rows, full, first, i[at:at + PIECE], j[at:at + PIECE], max_rms, stats)
    stats.compared += int(faiss.cvar.indexIVF_stats.ndis)


def _checked(rows: RowFile, full: np.ndarray, first: int, i: np.ndarray, j: np.ndarray, max_rms: float,
             stats: NearStats) -> Iterator[tuple[int, int, float]]:
    """The candidate pairs (i, j) within `max_rms` on their full rows, with the distance; `full` holds rows j."""
    others, which = np.unique(i, return_inverse=True)  # each row read once per piece
    distances = np.sqrt(np.mean((full[j - first] - rows.take(others)[which].astype(np.float64)) ** 2, axis=1))
    near = distances <= max_rms
    order = np.lexsort((j[near], i[near]))
    stats.found += int(near.sum())
    yield from zip(i[near][order].tolist(), j[near][order].tolist(), distances[near][order].tolist(), strict=True)


def probed_cells(queries: np.ndarray, centroids: np.ndarray, apart: np.ndarray, radius: float) -> np.ndarray:
    """Per query, every cell that may hold a row within sqrt(`radius`) of it, padded with -1: a row of cell c is at
    least as close to c as to the query's nearest centroid c0, so it lies beyond the hyperplane halfway between them,
    whose distance from the query is (|q - c|^2 - |q - c0|^2) / (2 |c - c0|). The bound is widened a little: float32
    rounding in faiss's own assignment must never hide a pair (an extra cell costs time only). `apart`: the
    centroids' distances from each other."""
    q = queries.astype(np.float64)
    d2 = (q * q).sum(1)[:, None] - 2 * q @ centroids.T + (centroids * centroids).sum(1)[None, :]
    nearest = d2.argmin(1)
    gap, between = d2 - d2[np.arange(len(q)), nearest][:, None], apart[nearest]
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.where(between > 0, gap / (2 * between), np.where(gap > 0, np.inf, 0.0))
    probe = bound <= np.sqrt(radius) * 1.01 + 0.1
    probe[np.arange(len(q)), nearest] = True
    width = int(probe.sum(1).max())
    cells = np.full((len(q), width), -1, dtype=np.int64)
    for k, row in enumerate(probe):
        picked = np.flatnonzero(row)
        cells[k, :len(picked)] = picked
    return cells


def coarse_index(rows: RowFile, grid: tuple[int, ...], block: tuple[int, ...], batch: int = 2048,
                 cell: int = CELL):
    """A faiss IVF index over the coarse rows of `rows`, k-means cells of about `cell` rows."""
    import faiss

    n = len(rows)
    cells = max(1, n // cell)
    every = max(1, n // (64 * cells))  # k-means on at most 64 rows a cell, spread over the file (deterministic)
    picks = np.arange(0, n, every)
    sample = np.concatenate([coarse(rows.take(picks[s:s + batch]), grid, block) for s in range(0, len(picks), batch)])
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(sample.shape[1]), sample.shape[1], cells)
    index.cp.niter = 10
    index.cp.max_points_per_centroid = 64
    index.train(sample)
    extend_index(index, rows, grid, block, batch)
    return index


def extend_index(index, rows: RowFile, grid: tuple[int, ...], block: tuple[int, ...], batch: int = 2048) -> None:
    """Add the rows of `rows` the index does not hold yet (its ids are row numbers)."""
    for start in range(index.ntotal, len(rows), batch):
        index.add(coarse(rows.read(start, min(start + batch, len(rows))), grid, block))


def resumed_index(path: Path, rows: RowFile, grid: tuple[int, ...], block: tuple[int, ...]):
    """The index saved at `path` by an earlier run (faiss.write_index), cut to the rows `rows` still holds and given
    the rest; a new one when there is none, or when its cells have grown to more than twice `CELL` rows (the pairs
    do not depend on the cells: near_pairs is exact)."""
    import faiss

    index = faiss.read_index(str(path)) if path.exists() else None
    if index is not None and index.ntotal > len(rows):
        index.remove_ids(faiss.IDSelectorRange(len(rows), index.ntotal))
    if index is None or len(rows) > 2 * CELL * index.nlist:
        return coarse_index(rows, grid, block)
    extend_index(index, rows, grid, block)
    return index


class Groups:
    """Union-find over record positions; a group is named by its first position (manifest order)."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)  # the earlier record names the group

    def roots(self) -> list[int]:
        return [self.find(i) for i in range(len(self.parent))]
