import io

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from stages.common.media import Rejected, decode_audio, decode_image
from tests.hostile_corpus import audios, images

IMAGE_LIMITS = {"min_side": 16, "max_pixels": 1_000_000}
AUDIO_LIMITS = {"sample_rate": 16000, "max_seconds": 2.0}


@pytest.mark.parametrize("name", sorted(images()))
def test_image_outcome(name):
    data, expected = images()[name]
    if expected.startswith("accepted"):
        out = decode_image(data, **IMAGE_LIMITS)
        img = Image.open(io.BytesIO(out.png))
        assert img.mode == "RGB" and img.size == (out.width, out.height)
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
