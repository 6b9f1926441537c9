"""Content identity of records: exact digests and near-duplicate fingerprints of their media, and the groups of
records that share media (docs/data.md "Duplicates and splits").

Exact: the sha256 of the decoded, normalised media bytes validate writes (PNG of the RGB pixels, float WAV of the
mono samples at the target rate), so the same picture or sound re-encoded, re-wrapped or converted is the same
content. Text is compared after NFC, case folding and whitespace collapsing.

Near: an image's fingerprint is its 8x8 RGB thumbnail (box filter); an audio clip's is a 16 x 32 grid (mel bands
up to 4 kHz x time slices) of its mean log-power in dB, floored 50 dB below the peak, mean removed (loudness does
not count). Two are near duplicates when the RMS difference of their fingerprints is at most a threshold
(`validate.near_duplicate_image_rms`, pixel levels of 0-255; `validate.near_duplicate_audio_db`; 0 turns it off).
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

import numpy as np
from PIL import Image

IMAGE_THUMB = 8  # side of the RGB thumbnail: 192 numbers
AUDIO_GRID = (16, 32)  # mel bands x time steps of the audio fingerprint


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


def _tiles(norms: np.ndarray, reach: float, block: int) -> Iterator[tuple[slice, slice]]:
    """(rows, columns) of the block x block tiles to compare over rows sorted by norm: the upper triangle, cut
    where the columns' norms exceed the rows' by more than `reach` (|a| - |b| <= |a - b|: no near pair beyond)."""
    n = len(norms)
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        end = int(np.searchsorted(norms, norms[rows.stop - 1] + reach, side="right"))
        for first in range(start, end, block):
            yield rows, slice(first, min(first + block, end))


def near_pairs(fingerprints: np.ndarray, max_rms: float, block: int = 1024) -> Iterator[tuple[int, int]]:
    """Index pairs (i < j, in no set order) whose fingerprints differ by at most `max_rms` (root mean square),
    through |a - b|^2 = |a|^2 + |b|^2 - 2 a.b in tiles of rows sorted by norm: memory ~ block^2 however many rows,
    and rows whose norms are far apart are never compared."""
    dims = fingerprints.shape[1] if fingerprints.size else 1
    squares = np.einsum("ij,ij->i", fingerprints, fingerprints, dtype=np.float64)
    order = np.argsort(squares, kind="stable")
    squares = squares[order]
    limit = max_rms * max_rms * dims + 1e-6 * dims  # slack for the rounding of the expansion
    for rows, cols in _tiles(np.sqrt(squares), np.sqrt(limit) * (1 + 1e-6), block):
        a, b = (fingerprints[order[s]].astype(np.float64) for s in (rows, cols))
        squared = squares[rows, None] + squares[None, cols] - 2 * a @ b.T
        for i, j in zip(*np.nonzero(squared <= limit), strict=True):
            if rows.start + i < cols.start + j:  # the diagonal tiles hold each pair twice
                pair = int(order[rows.start + i]), int(order[cols.start + j])
                yield min(pair), max(pair)


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
