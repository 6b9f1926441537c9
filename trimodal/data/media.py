"""Decoding and normalising media payloads; a failure is a `Rejected` with a reason, never a crash.

Reasons read "<category>: <detail>"; metrics group rejections by the category before the colon.
"""
from __future__ import annotations

import io
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy.io import wavfile


class Rejected(Exception):
    """A payload that cannot be used; `str(e)` is the quarantine reason."""


@dataclass
class DecodedImage:
    png: bytes  # RGB, 8 bits per channel
    width: int
    height: int
    converted_from: str | None  # original PIL mode when a conversion happened
    rgb: Image.Image  # the pixels png holds, for a fingerprint without decoding the PNG again


@dataclass
class DecodedAudio:
    wav: bytes  # mono float32 at the target rate
    seconds: float
    converted: list[str]  # e.g. ["resampled 44100->16000", "downmixed 2->1", "cropped 12.0s->10.0s"]
    samples: np.ndarray  # the float32 samples wav holds, for a fingerprint without reading the WAV again
    rate: int


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. Alpha is composited on white; high bit depths are scaled, not clipped."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 / 65535.0 if mode != "F" or arr.max(initial=0) > 1.0 else 255.0
        arr = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info or mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # 1, L, P, CMYK, YCbCr, LAB, HSV


def _detail(e: Exception) -> str:
    """An exception's message without object addresses ("<_io.BytesIO object at 0x7f..>"): a reason must read
    the same on every run."""
    return re.sub(r"<([\w.]+) object at 0x[0-9a-fA-F]+>", r"<\1>", str(e))


def _decode_failure(e: Exception) -> Rejected:
    kind = "image truncated" if "truncat" in str(e).lower() else "image undecodable"
    return Rejected(f"{kind}: {type(e).__name__}: {_detail(e)}")


@contextmanager
def _pillow_limit(max_pixels: int):
    """Pillow's own bomb limit set to ours while a header is read, so that `max_pixels` decides in both
    directions (Pillow's default, 89.5 M pixels, would reject larger images with its own number in the reason).
    Pillow reads it from a module global; the validate stage decodes in one thread."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def decode_image(data: bytes, *, min_side: int, max_pixels: int) -> DecodedImage:
    if not data:
        raise Rejected("image empty: zero-length payload")
    with warnings.catch_warnings(), _pillow_limit(max_pixels):
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # above max_pixels: rejected just below
        try:
            img = Image.open(io.BytesIO(data))  # parses the header only
        except UnidentifiedImageError:
            raise Rejected("image undecodable: not a recognised image format") from None
        except Image.DecompressionBombError as e:  # Pillow's check: over twice its limit, i.e. 2 x max_pixels
            size = re.search(r"\((\d+) pixels\)", str(e))
            pixels = size.group(1) if size else f"more than {2 * max_pixels}"
            raise Rejected(f"decompression bomb: {pixels} pixels > limit {max_pixels}") from None
        except Exception as e:  # noqa: BLE001 - malformed headers raise anything from struct to ValueError
            raise _decode_failure(e) from None
        width, height = img.size
        if width * height > max_pixels:
            raise Rejected(f"decompression bomb: {width}x{height} = {width * height} pixels > limit {max_pixels}")
        if min(width, height) < min_side:
            raise Rejected(f"image too small: {width}x{height}, smallest side must be >= {min_side}")
        try:
            img.load()
        except Exception as e:  # noqa: BLE001
            raise _decode_failure(e) from None
    original_mode = img.mode
    img = ImageOps.exif_transpose(img)
    rgb = _to_rgb(img)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return DecodedImage(buf.getvalue(), rgb.width, rgb.height, original_mode if original_mode != "RGB" else None, rgb)


def decode_audio(data: bytes, *, sample_rate: int, max_seconds: float) -> DecodedAudio:
    if not data:
        raise Rejected("audio empty: zero-length payload")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except sf.LibsndfileError as e:  # libsndfile's own words, without the "Error opening <object>" around them
        raise Rejected(f"audio undecodable: {e.error_string}") from None
    except Exception as e:  # noqa: BLE001 - libsndfile reports every format problem as an error string
        raise Rejected(f"audio undecodable: {_detail(e)}") from None
    if samples.shape[0] == 0:
        raise Rejected("audio empty: zero samples")
    if not np.isfinite(samples).all():
        raise Rejected("audio non-finite: NaN or Inf samples")
    converted = []
    if samples.shape[1] > 1:
        converted.append(f"downmixed {samples.shape[1]}->1")
    mono = samples.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate).astype(np.float32)
        converted.append(f"resampled {rate}->{sample_rate}")
    limit = int(round(max_seconds * sample_rate))
    if mono.shape[0] > limit:
        converted.append(f"cropped {mono.shape[0] / sample_rate:.1f}s->{max_seconds:.1f}s")
        mono = mono[:limit]
    if mono.shape[0] == 0:
        raise Rejected("audio empty: zero samples after resampling")
    buf = io.BytesIO()
    # scipy writes a plain IEEE-float WAV; libsndfile (soundfile) adds a PEAK chunk holding the wall-clock time
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    wavfile.write(buf, sample_rate, mono)
    return DecodedAudio(buf.getvalue(), mono.shape[0] / sample_rate, converted, mono, sample_rate)
