import io

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from tests.hostile_corpus import audios, images
from trimodal.data.media import Rejected, decode_audio, decode_image

IMAGE_LIMITS = {"min_side": 16, "max_pixels": 1_000_000}
AUDIO_LIMITS = {"sample_rate": 16000, "max_seconds": 2.0}


@pytest.mark.parametrize("name", sorted(images()))
def test_image_outcome(name):
    data, expected = images()[name]
    if expected.startswith("accepted"):
        out = decode_image(data, **IMAGE_LIMITS)
        img = Image.open(io.BytesIO(out.png))
        assert img.mode == "RGB" and img.size == (out.width, out.height)
        assert np.array_equal(np.asarray(img), np.asarray(out.rgb))  # dedup fingerprints these, not the PNG
        if ":" in expected:
            assert f"image {out.converted_from}->RGB" == expected.split(":", 1)[1]
        else:
            assert out.converted_from is None
    else:
        with pytest.raises(Rejected) as e:
            decode_image(data, **IMAGE_LIMITS)
        assert str(e.value).startswith(expected + ":")


def test_alpha_is_composited_on_white_and_16bit_scaled():
    rgba = decode_image(images()["rgba.png"][0], **IMAGE_LIMITS)
    px = np.asarray(Image.open(io.BytesIO(rgba.png)))[0, 0]
    assert abs(int(px[0]) - 127) <= 2 and abs(int(px[2]) - 255) <= 1  # half-transparent blue over white
    sixteen = decode_image(images()["sixteen.png"][0], **IMAGE_LIMITS)
    assert np.asarray(Image.open(io.BytesIO(sixteen.png)))[0, 0, 0] == round(40000 * 255 / 65535)


@pytest.mark.parametrize("name", sorted(audios()))
def test_audio_outcome(name):
    data, expected = audios()[name]
    if expected.startswith("accepted"):
        out = decode_audio(data, **AUDIO_LIMITS)
        samples, rate = sf.read(io.BytesIO(out.wav), always_2d=True)
        assert rate == 16000 and samples.shape[1] == 1 and np.isfinite(samples).all()
        assert 0 < out.seconds <= 2.0 and samples.shape[0] == round(out.seconds * 16000)
        assert out.samples.dtype == np.float32 and out.rate == rate
        assert np.array_equal(samples[:, 0], out.samples)  # dedup fingerprints these, not the WAV
        if ":" in expected:
            assert expected.split(":", 1)[1].removeprefix("audio ") in out.converted
    else:
        with pytest.raises(Rejected) as e:
            decode_audio(data, **AUDIO_LIMITS)
        assert str(e.value).startswith(expected + ":")


def test_stereo_is_downmixed_and_resampled_length_kept():
    out = decode_audio(audios()["stereo44k.wav"][0], **AUDIO_LIMITS)
    assert "downmixed 2->1" in out.converted
    assert out.seconds == pytest.approx(0.5, abs=1e-3)


def _png_header(width: int, height: int) -> bytes:
    """A 1-bit PNG of any declared size whose pixel data stops after one row: Pillow reads the size, then finds
    it truncated (1 bit per pixel keeps the buffer it allocates small)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = zlib.compressobj().compress(b"\x00" + b"\xff" * (width // 8))  # no flush: the stream just ends
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", row) + chunk(b"IEND", b"")


def test_max_pixels_decides_above_and_below_pillows_own_limit():
    default = Image.MAX_IMAGE_PIXELS
    big = _png_header(10_000, 10_000)  # 100 M pixels: over Pillow's default limit (89.5 M)
    with pytest.raises(Rejected) as e:
        decode_image(big, min_side=16, max_pixels=200_000_000)
    assert str(e.value).startswith("image truncated")  # within the limit; then its pixel data runs out
    with pytest.raises(Rejected) as e:
        decode_image(big, min_side=16, max_pixels=60_000_000)
    assert str(e.value) == "decompression bomb: 10000x10000 = 100000000 pixels > limit 60000000"
    with pytest.raises(Rejected) as e:  # over twice the limit: Pillow's own check fires first, our numbers stay
        decode_image(big, min_side=16, max_pixels=1_000_000)
    assert str(e.value) == "decompression bomb: 100000000 pixels > limit 1000000"
    assert Image.MAX_IMAGE_PIXELS == default  # restored


def test_outputs_and_reasons_are_the_same_on_every_run():
    data = audios()["stereo44k.wav"][0]
    first = decode_audio(data, **AUDIO_LIMITS)
    assert b"PEAK" not in first.wav  # libsndfile's PEAK chunk carries the wall-clock time
    assert decode_audio(data, **AUDIO_LIMITS).wav == first.wav
    reasons = []
    for corpus, decode, limits in ((images(), decode_image, IMAGE_LIMITS), (audios(), decode_audio, AUDIO_LIMITS)):
        for data, expected in corpus.values():
            if not expected.startswith("accepted"):
                with pytest.raises(Rejected) as e:
                    decode(data, **limits)
                reasons.append(str(e.value))
    assert reasons and not [r for r in reasons if " at 0x" in r]
