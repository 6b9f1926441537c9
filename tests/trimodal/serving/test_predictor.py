"""The predictor: validate's decoding (within the limits the folder records), shard's features, and batches that
change nothing."""
import json
import shutil

import pytest

from tests.trimodal.conftest import labels_of, png, wav
from trimodal.data.limits import MediaLimits
from trimodal.data.media import Rejected
from trimodal.serving.predictor import Inputs, Predictor

REQUESTS = [Inputs(image=png(), question="what color is it?"), Inputs(audio=wav(), question="what color is it?"),
            Inputs(text="there is a red circle 3", question="what color is it?"),
            Inputs(image=png((50, 50)), audio=wav(0.5)), Inputs(text="there is a red circle 1")]


@pytest.mark.slow  # the session fixture `models` trains them
@pytest.mark.parametrize("variant", ["teacher", "student-int8"])
def test_a_batch_gives_each_request_what_it_gets_alone(models, variant):
    predictor = Predictor.load(models[variant])
    samples = [predictor.prepare(r) for r in REQUESTS]
    batched = predictor.predict(samples)
    alone = [predictor.predict([s])[0] for s in samples]
    for b, a in zip(batched, alone, strict=True):
        assert (b.caption, b.answer, b.inputs) == (a.caption, a.answer, a.inputs)
        assert [p["label"] for p in b.labels] == [p["label"] for p in a.labels]
        assert max(abs(x["probability"] - y["probability"]) for x, y in zip(b.labels, a.labels, strict=True)) < 1e-4
    assert [p.inputs for p in batched] == [["image"], ["audio"], ["text"], ["image", "audio"], ["text"]]
    assert [p.answer is None for p in batched] == [False, False, False, True, True]
    assert batched[0].answer == "red"  # every training answer was "red": the tiny model learnt it
    for p in batched:
        probabilities = [x["probability"] for x in p.labels]
        assert probabilities == sorted(probabilities, reverse=True) and 0.99 < sum(probabilities) <= 1.0001
        assert {x["label"] for x in p.labels} == labels_of(models[variant])


@pytest.mark.slow  # the session fixture `models` trains them
@pytest.mark.parametrize(("inputs", "reason"), [
    (Inputs(image=png((8, 8))), "image too small: 8x8, smallest side must be >= 16"),
    (Inputs(image=b"<html>not an image</html>"), "image undecodable: not a recognised image format"),
    (Inputs(audio=b"RIFF....WAVEfmt junk"), "audio undecodable"),
    (Inputs(audio=b""), "audio empty: zero-length payload"),
])
def test_bad_media_get_the_validate_stages_reason(models, inputs, reason):
    with pytest.raises(Rejected, match=reason.replace("(", r"\(")):
        Predictor.load(models["teacher"]).prepare(inputs)


@pytest.mark.slow  # the session fixture `models` trains them
def test_a_question_alone_is_refused(models):
    with pytest.raises(ValueError, match="no input"):
        Predictor.load(models["teacher"]).prepare(Inputs(question="what color is it?", text="  "))


def test_a_folder_without_a_model_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved model folder"):
        Predictor.load(tmp_path)


@pytest.fixture(scope="module")
def deepseek_vl(tmp_path_factory):
    """A saved tiny DeepSeek-VL folder (untrained: its words are arbitrary, their shapes are not)."""
    from transformers import AutoTokenizer

    from tests.shard_fixtures import build_validated, tiny_deepseek_vl

    root = tmp_path_factory.mktemp("vl-model")
    build_validated(root, n=7)
    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
    model = tiny_deepseek_vl(tokenizer, image_size=16, n_mels=20, sample_rate=16000, n_fft=400, hop_length=160,
                             max_text_tokens=32)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return root / "model"


def test_a_deepseek_vl_folder_answers_from_image_and_text_and_refuses_sound_alone(deepseek_vl):
    predictor = Predictor.load(deepseek_vl)
    requests = [Inputs(image=png(), question="what color is it?"), Inputs(text="there is a red circle 3"),
                Inputs(image=png((50, 50)), audio=wav(0.5), question="what shape is it?")]
    samples = [predictor.prepare(r) for r in requests]
    batched = predictor.predict(samples)
    alone = [predictor.predict([s])[0] for s in samples]
    assert [(p.caption, p.answer) for p in batched] == [(p.caption, p.answer) for p in alone]
    assert [p.inputs for p in batched] == [["image"], ["text"], ["image"]]  # the sound is not read
    assert [p.answer is None for p in batched] == [False, True, False]
    for p in batched:  # the class names' likelihoods, normalised over the two classes
        assert {x["label"] for x in p.labels} == {"circle", "square"}
        assert abs(sum(x["probability"] for x in p.labels) - 1) < 1e-4
    with pytest.raises(ValueError, match="reads images and text, not sound"):
        predictor.prepare(Inputs(audio=wav()))


def test_the_folders_own_limits_decide(deepseek_vl, tmp_path):
    folder = shutil.copytree(deepseek_vl, tmp_path / "strict")
    config = json.loads((folder / "config.json").read_text())
    config["media_limits"] = {"min_side": 31, "max_pixels": 40000000, "max_seconds": 10.0}
    (folder / "config.json").write_text(json.dumps(config))
    predictor = Predictor.load(folder)
    assert predictor.limits == MediaLimits(31, 40000000, 10.0)
    with pytest.raises(Rejected, match="image too small: 40x30, smallest side must be >= 31"):
        predictor.prepare(Inputs(image=png()))
    predictor.prepare(Inputs(image=png((40, 31))))
