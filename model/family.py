"""The `Family` interface: what the pipeline and the library ask of a model family, one implementation per family
(model/trimodal/family.py, model/deepseek_vl/family.py; model/families.py finds the one a preset, the params, a
model or a saved folder names). The stages, evaluation and serving call it instead of branching on the family.

    build_config / build   the config of the family from a preset's settings and what the data fixes, the network
    step(stage, ...)       the training step of a stage, always `step(model, batch, generator) -> {objective: loss}`
                           (trimodal.training.trainer.fit runs it): pretrain, finetune, distill (DeepSeek-VL also
                           warmup, its adaptor warm-up)
    replay(tokenizer)      finetune's objectives as `losses(model, batch, generator) -> (losses, encoded)`, which
                           instruct and align replay beside their own (encoded: what the step encoded, reused)
    keep / skipped         the records the family reads (None: all) and how many of a split it skips
    predict                a batch's evaluation records (trimodal/evaluation/scoring.py's fields), embeddings and
                           which rows hold each modality
    respond                a batch's caption, answer (where asked) and class probabilities (trimodal.serving)
    class_scores           per class, the rows' scores (log-probabilities up to a constant per row)
    card_about / card_tags what a model card (trimodal/cards.py) says of each variant, and its family's tags
    records(phase)         the records a training phase reads (`keep`, or a phase's own: DeepSeek-VL's warm-up)
    calibration_passes     a val batch as the forward kwargs quantize calibrates on, `labels` at the logits' positions
    timing_inputs / timed  what one timed inference needs beside the batch, and that inference (latency)
    media / prompted / response_logits / logprobs / generate
                           a prompt and a response (trimodal/alignment/responses.py): the batch's inputs encoded once,
                           the rows with one chat prompt each (model/chat.py Prompted), the next-token logits over
                           given responses and their log-probability, and generated ones
    prompt_width           the chat-prompt tokens the model reads whole (None: prompts are not cut)
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel

from trimodal.model.chat import Prompted
from trimodal.model.preference import sequence_logprobs

StepFn = Callable[[nn.Module, dict, torch.Generator], dict[str, torch.Tensor]]
LossesFn = Callable[[nn.Module, dict, torch.Generator], tuple[dict[str, torch.Tensor], object]]
Keep = Callable[[dict], bool]


@dataclass
class Predictions:
    """One batch's evaluation output: a scoring record per sample the family reads, and per modality the [N, D]
    contrastive embeddings with the [N] rows holding that modality (zeros and False where the family has none)."""

    records: list[dict]
    embeddings: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]


@dataclass
class Response:
    """One sample's answer to a request: the caption, the answer (None when no question was asked or the family
    gave none), the class probabilities (None when it could not score the classes) and the modalities it read."""

    caption: str
    answer: str | None
    probabilities: torch.Tensor | None
    modalities: list[str]


class Family(ABC):
    name: ClassVar[str]
    config_class: ClassVar[type[PreTrainedConfig]]
    model_class: ClassVar[type[PreTrainedModel]]
    stages: ClassVar[tuple[str, ...]] = ("pretrain", "finetune", "distill")  # what `step` knows
    keep: Keep | None = None  # the records the family reads; None: every record
    card_about: ClassVar[dict[str, str]]  # variant (teacher, student, student-int8) -> its model card's summary
    card_tags: ClassVar[tuple[str, ...]] = ()  # the model card's tags beside the project's own

    @abstractmethod
    def build_config(self, settings: dict, **from_data) -> PreTrainedConfig:
        """The config from a preset's settings (no `family` key) and what the data fixes (vocabulary, special
        tokens, classes, features)."""

    def build(self, config: PreTrainedConfig) -> PreTrainedModel:
        return self.model_class(config)

    def step(self, stage: str, tokenizer, *, teacher: nn.Module | None = None, alpha: float = 0.0,
             temperature: float = 1.0) -> StepFn:
        """The training step of `stage` (distill: with its teacher, alpha and temperature)."""
        if stage not in self.stages:
            raise ValueError(f"the {self.name} family has no {stage!r} step; it has {', '.join(self.stages)}")
        if stage == "distill" and teacher is None:
            raise ValueError("the distill step needs its teacher")
        return self._step(stage, tokenizer, teacher, alpha, temperature)

    @abstractmethod
    def _step(self, stage: str, tokenizer, teacher: nn.Module | None, alpha: float, temperature: float) -> StepFn:
        ...

    @abstractmethod
    def replay(self, tokenizer) -> LossesFn:
        ...

    def skipped(self, shards: str, split: str) -> dict[str, int]:
        """How many of a split's records the family reads and skips, for a stage's metrics ({} when it reads all)."""
        return {}

    @abstractmethod
    def predict(self, model, tokenizer, batch: dict, max_new_tokens: int, captions: bool = True) -> Predictions:
        ...

    @abstractmethod
    def respond(self, model, tokenizer, batch: dict, caption_tokens: int, answer_tokens: int) -> list[Response]:
        ...

    @abstractmethod
    def class_scores(self, model, tokenizer, batch: dict) -> tuple[list[int], torch.Tensor] | None:
        """(rows, [rows, C] scores): the rows the family classifies and each one's score per class; None when
        none can be."""

    def records(self, phase: str) -> Keep | None:
        """The records training phase `phase` reads (None: all)."""
        return self.keep

    @abstractmethod
    def calibration_passes(self, model, tokenizer, batch: dict) -> list[dict]:
        """The forward kwargs quantize calibrates on, one per pass the batch has targets for, each with `labels`
        aligned with the model's logits (position t's target, -100 where none)."""

    def timing_inputs(self, tokenizer, batch: dict):
        """What one timed inference needs beside the batch, built once outside the timing (None: nothing)."""
        return None

    @abstractmethod
    def timed(self, model, batch: dict, inputs, max_new_tokens: int) -> Callable[[], None]:
        """One inference as latency times it (trimodal/evaluation/latency.py): exactly `max_new_tokens` new tokens."""

    @abstractmethod
    def media(self, model, batch: dict):
        """The batch's inputs, encoded once for every prompt asked of it."""

    @abstractmethod
    def prompted(self, model, tokenizer, batch: dict, media, rows: list[int], contents: list[str]) -> Prompted:
        """The rows' inputs (`media`, as `media` encoded them) with one user turn each, through the chat template."""

    @abstractmethod
    def response_logits(self, model, tokenizer, asked: Prompted, responses: list[str]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [n, T, V], labels [n, T]): position t's prediction of label t, where the labels are each
        response's tokens and </s> and -100 elsewhere (the prompt, padding); with gradients."""

    def logprobs(self, model, tokenizer, asked: Prompted, responses: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(log P(response | inputs, prompt) summed over its tokens and </s> [n], its tokens [n]), with gradients."""
        return sequence_logprobs(*self.response_logits(model, tokenizer, asked, responses))

    @abstractmethod
    def generate(self, model, tokenizer, asked: Prompted, max_new_tokens: int, sample: bool) -> list[str]:
        """Each row's response: greedy, or sampled (temperature 1, torch's global generator)."""

    def prompt_width(self, model) -> int | None:
        """The chat-prompt tokens the model reads whole (a longer prompt loses its start); None: not cut."""
        return None

    def reads(self, modalities: list[str]) -> bool:
        """Whether the family reads a sample holding these modalities."""
        return self.keep is None or self.keep({"modalities": modalities})

    def __repr__(self) -> str:
        return f"<family {self.name}>"
