"""A saved model folder (float or INT8) answering requests: any subset of an image, a sound and a text, and an
optional question -> the caption, the answer and the top-k labels with their probabilities.

Inputs go through the validate stage's decoding (trimodal/data/media.py: the limits the model's data passed, same
reasons on bad media) and the shard stage's features (trimodal/data/features.py) with the sizes the model was
trained on. Its config carries both (image_size, n_mels, sample_rate, n_fft, hop_length, max_text_tokens; and
media_limits, trimodal/data/limits.py), so the folder alone is enough, installed anywhere. Requests are batched
with the training loader's collate, so one request alone and the same request inside a batch get the same outputs.
Either model family, through its `respond` (model/family.py): a DeepSeek-VL folder answers through its chat turns
(model/deepseek_vl/family.py) and reads the image and text of a request, not its sound.

    predictor = Predictor.load("models/student-int8")
    [prediction] = predictor.predict([predictor.prepare(Inputs(image=png_bytes, question="what color is it?"))])
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer

from trimodal.data.features import image_to_array, log_mel, mel_filters, token_ids
from trimodal.data.limits import MediaLimits, model_limits
from trimodal.data.loader import MODALITY_MEMBERS, collate
from trimodal.data.media import decode_audio, decode_image
from trimodal.evaluation.generation import ANSWER_TOKENS
from trimodal.model.families import family_for
from trimodal.model.quantization import load_saved

CAPTION_TOKENS = 12


@dataclass
class Inputs:
    """One request. Media are the file's bytes (any format the validate stage decodes)."""

    image: bytes | None = None
    audio: bytes | None = None
    text: str | None = None
    question: str | None = None


@dataclass
class Prediction:
    caption: str
    answer: str | None  # None when no question was asked
    labels: list[dict]  # [{"label", "probability"}], most likely first
    inputs: list[str]  # the modalities the model saw, e.g. ["image", "text"]

    def to_dict(self) -> dict:
        return asdict(self)


class Predictor:
    def __init__(self, model, tokenizer, limits: MediaLimits, top_k: int = 3):
        self.model, self.tokenizer, self.config = model, tokenizer, model.config
        self.limits, self.top_k = limits, top_k
        self.filters = mel_filters(self.config.sample_rate, self.config.n_fft, self.config.n_mels)
        self.family = family_for(model)  # DeepSeek-VL reads images and text only

    @classmethod
    def load(cls, model_dir: str | Path, limits: MediaLimits | None = None, top_k: int = 3) -> Predictor:
        """A saved model folder, decoding media within `limits` (None: the ones its config records)."""
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir}: not a saved model folder (no config.json); the DAG writes "
                                    f"models/teacher, models/student and models/student-int8 (`dvc repro`)")
        model = load_saved(model_dir)
        limits = limits or model_limits(model.config, model_dir)
        return cls(model, AutoTokenizer.from_pretrained(model_dir), limits, top_k)

    def prepare(self, inputs: Inputs) -> dict:
        """Decode and featurise one request -> a sample as the shard loader yields it. Raises Rejected (the
        validate stage's reason) on bad media and ValueError when there is no input at all."""
        c = self.config
        sample: dict = {}
        if inputs.image is not None:
            image = decode_image(inputs.image, min_side=self.limits.min_side, max_pixels=self.limits.max_pixels)
            sample["image"] = image_to_array(image.rgb, c.image_size)
        if inputs.audio is not None:
            audio = decode_audio(inputs.audio, sample_rate=c.sample_rate, max_seconds=self.limits.max_seconds)
            sample["mel"] = log_mel(audio.samples, c.sample_rate, c.n_mels, c.n_fft, c.hop_length, self.filters)
        texts = {name: value for name, value in (("text", inputs.text), ("question", inputs.question))
                 if value is not None and value.strip()}
        sample.update(zip(texts, token_ids(self.tokenizer, list(texts.values()), c.max_text_tokens), strict=True))
        modalities = [m for m, member in MODALITY_MEMBERS.items() if member in sample]
        if not modalities:
            raise ValueError("no input: give an image, a sound or a text (a question alone has nothing to ask about)")
        if not self.family.reads(modalities):
            raise ValueError("this model (DeepSeek-VL) reads images and text, not sound: give an image or a text")
        # the question's words too: the DeepSeek-VL family renders it into its chat turn
        sample["meta"] = {"id": None, "modalities": modalities, "question": texts.get("question")}
        return sample

    @torch.no_grad()
    def predict(self, samples: list[dict], caption_tokens: int = CAPTION_TOKENS,
                answer_tokens: int = ANSWER_TOKENS) -> list[Prediction]:
        """Prepared samples (any mix of modalities) -> one Prediction each, in one batched pass."""
        c = self.config
        batch = collate(samples, c.pad_token_id, c.image_size, c.n_mels)
        responses = self.family.respond(self.model, self.tokenizer, batch, caption_tokens, answer_tokens)
        return [Prediction(r.caption, r.answer, self._top(r.probabilities) if r.probabilities is not None else [],
                           r.modalities)
                for r in responses]

    def _top(self, probs: torch.Tensor) -> list[dict]:
        values, indices = probs.topk(min(self.top_k, probs.numel()))
        names = self.config.id2label
        return [{"label": names.get(int(i), str(int(i))), "probability": round(float(v), 6)}
                for v, i in zip(values, indices, strict=True)]

