"""The DeepSeek-VL family behind the `Family` interface (model/family.py): a causal LM reading visual tokens and
chat turns (model/deepseek_vl/modeling.py), trained on the turns of model/deepseek_vl/tasks.py. It reads images and
text, not sound: records with audio only are skipped, and counted."""
from __future__ import annotations

import torch

from trimodal.data.records import MODALITIES
from trimodal.model.deepseek_vl import tasks
from trimodal.model.deepseek_vl.modeling import DeepSeekVLConfig, DeepSeekVLForCausalLM
from trimodal.model.family import Family, LossesFn, Predictions, Response, StepFn

TEXT_KEYS = ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id")  # what the data fixes of the LLM


class DeepSeekVLFamily(Family):
    name = "deepseek_vl"
    config_class = DeepSeekVLConfig
    model_class = DeepSeekVLForCausalLM
    stages = ("warmup", "pretrain", "finetune", "distill")
    keep = staticmethod(tasks.usable)

    def build_config(self, settings: dict, **from_data) -> DeepSeekVLConfig:
        text = {**settings.get("text", {}), **{k: from_data[k] for k in TEXT_KEYS if k in from_data}}
        rest = {k: v for k, v in from_data.items() if k not in TEXT_KEYS}
        return DeepSeekVLConfig(**{**settings, "text": text, **rest})

    def _step(self, stage: str, tokenizer, teacher, alpha: float, temperature: float) -> StepFn:
        """DeepSeek-VL's stages: 1 the adaptor warm-up, 2 joint pretraining (`pretrain`), 3 supervised fine-tuning
        on chat turns (`finetune`), and distillation on the same turns."""
        if stage == "distill":
            return tasks.kd_step(teacher, tokenizer, alpha, temperature)
        return {"warmup": tasks.warmup_step, "pretrain": tasks.joint_step, "finetune": tasks.sft_step}[stage](tokenizer)

    def replay(self, tokenizer) -> LossesFn:
        return tasks.sft_losses(tokenizer)

    def skipped(self, shards: str, split: str) -> dict[str, int]:
        return tasks.skipped(shards, split)

    def predict(self, model, tokenizer, batch: dict, max_new_tokens: int, captions: bool = True) -> Predictions:
        """The records of the batch's usable samples; no embeddings (present: none), so no retrieval scores."""
        records = tasks.predict_batch(model, tokenizer, batch, max_new_tokens, captions)
        return Predictions(records, {m: torch.zeros(len(records), 1) for m in MODALITIES},
                           {m: torch.zeros(len(records), dtype=torch.bool) for m in MODALITIES})

    def respond(self, model, tokenizer, batch: dict, caption_tokens: int, answer_tokens: int) -> list[Response]:
        """Caption and answer generated from its chat turns, label probabilities from the likelihood of each class
        name (softmax over the classes); audio is not read."""
        device = torch.device("cpu")
        text, visual = tasks.texts(tokenizer, batch), tasks.visual_of(model, batch)
        out: dict[str, list] = {}
        for task, budget in (("ce", caption_tokens), ("vqa", answer_tokens)):
            turns = tasks.chat_turns(tokenizer, batch, task, text, device, with_targets=False)
            words = [None] * len(batch["meta"])
            if turns is not None:
                said = tasks.generated(model, tokenizer, turns, visual, batch, budget)
                for i, words_i in zip(turns.rows, said, strict=True):
                    words[i] = words_i
            out[task] = words
        scored = tasks.class_scores(model, tokenizer, batch, text, visual)
        probs = {i: row.softmax(-1) for i, row in zip(*scored, strict=True)} if scored is not None else {}
        return [Response(out["ce"][i] or "", out["vqa"][i], probs.get(i),
                         [m for m in meta["modalities"] if m != "audio"])
                for i, meta in enumerate(batch["meta"])]

    def class_scores(self, model, tokenizer, batch: dict) -> tuple[list[int], torch.Tensor] | None:
        return tasks.class_scores(model, tokenizer, batch, tasks.texts(tokenizer, batch), tasks.visual_of(model, batch))
