"""The DeepSeek-VL family behind the `Family` interface (model/family.py): a causal LM reading visual tokens and
chat turns (model/deepseek_vl/modeling.py), trained on the turns of model/deepseek_vl/tasks.py. It reads images and
text, not sound: records with audio only are skipped, and counted."""
from __future__ import annotations

from collections.abc import Callable

import torch

from trimodal.data.records import MODALITIES
from trimodal.model.chat import IGNORE, Prompted, chat_prompt_ids, encode, left_padded, right_padded, shifted, texts
from trimodal.model.deepseek_vl import tasks
from trimodal.model.deepseek_vl.modeling import DeepSeekVLConfig, DeepSeekVLForCausalLM
from trimodal.model.family import Family, Keep, LossesFn, Predictions, Response, StepFn

TEXT_KEYS = ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id")  # what the data fixes of the LLM


class DeepSeekVLFamily(Family):
    name = "deepseek_vl"
    config_class = DeepSeekVLConfig
    model_class = DeepSeekVLForCausalLM
    stages = ("warmup", "pretrain", "finetune", "distill")
    keep = staticmethod(tasks.usable)
    card_about = {
        "teacher": "The teacher: DeepSeek-VL (Lu et al. 2024): a SigLIP + SAM-B hybrid vision encoder and an MLP "
                   "adaptor in front of a Llama-architecture LLM (image and text; audio-only records are skipped), "
                   "trained in the paper's three stages: adaptor warm-up, joint pretraining, chat-format "
                   "fine-tuning; then instruction-tuned and preference-tuned (DPO by default).",
        "student": "The student: a shallower, narrower DeepSeek-VL distilled from the teacher with the KD loss "
                   "(Hinton et al. 2015) on the fine-tuning turns' next-token distributions.",
        "student-int8": "The INT8 DeepSeek-VL student: the student with uniform affine INT8 weights (per channel) and "
                        "calibrated activation scales (torch.ao); narrow and fragile Linears compute in float from "
                        "int8 weights.",
    }
    card_tags = ("deepseek-vl",)

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
        text, visual = texts(tokenizer, batch), tasks.visual_of(model, batch)
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
        return tasks.class_scores(model, tokenizer, batch, texts(tokenizer, batch), tasks.visual_of(model, batch))

    def records(self, phase: str) -> Keep | None:
        """The adaptor warm-up reads image-caption pairs; every other phase the records with an image or text."""
        return tasks.captioned_image if phase == "warmup" else self.keep

    def calibration_passes(self, model, tokenizer, batch: dict) -> list[dict]:
        """One pass per fine-tuning task the batch has targets for (tasks.chat_turns), with the pixels of its rows
        when the batch has an image (as the family runs: tasks.visual_of); `labels` are the target tokens moved to
        the logits' positions: those cover [visual tokens; text], and position t predicts token t + 1."""
        if tokenizer is None:
            raise ValueError("a DeepSeek-VL model is calibrated on chat turns: pass its tokenizer")
        text, images = texts(tokenizer, batch), bool(batch["image_present"].any())
        visual = model.vision.num_tokens if images else 0
        passes = []
        for task in tasks.TASKS:
            turns = tasks.chat_turns(tokenizer, batch, task, text, torch.device("cpu"))
            if turns is None:
                continue
            rows, labels = torch.tensor(turns.rows), turns.labels
            aligned = torch.cat([labels.new_full((len(rows), visual), IGNORE), labels[:, 1:],
                                 labels.new_full((len(rows), 1), IGNORE)], 1)
            pixels = ({"pixel_values": batch["image"][rows], "image_present": batch["image_present"][rows]}
                      if images else {})
            passes.append({"input_ids": turns.ids, "attention_mask": turns.mask, **pixels, "labels": aligned})
        return passes

    def timing_inputs(self, tokenizer, batch: dict) -> tasks.Turns | None:
        """The batch's caption prompts (its inference is a chat turn)."""
        if tokenizer is None:
            raise ValueError("latency: a DeepSeek-VL model's inference is a chat turn: pass its tokenizer")
        return tasks.chat_turns(tokenizer, batch, "ce", texts(tokenizer, batch), torch.device("cpu"),
                                with_targets=False)

    def timed(self, model, batch: dict, inputs, max_new_tokens: int) -> Callable[[], None]:
        """The visual tokens, the prompts' forward (as the teacher-forced scoring pass), a greedy caption of exactly
        `max_new_tokens` tokens."""
        if inputs is None:
            raise ValueError("latency: a DeepSeek-VL model is timed on caption prompts (Family.timing_inputs)")

        @torch.no_grad()
        def run() -> None:
            visual = tasks.visual_of(model, batch)
            tasks.run(model, inputs, visual, batch)
            model.generate(input_ids=inputs.ids, attention_mask=inputs.mask, max_new_tokens=max_new_tokens,
                           min_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                           pad_token_id=model.config.pad_token_id, **tasks.visual_inputs(inputs, visual, batch))

        return run

    def media(self, model, batch: dict):
        """The batch's visual tokens (None without an image)."""
        return tasks.visual_of(model, batch)

    def prompted(self, model, tokenizer, batch: dict, media, rows: list[int], contents: list[str]) -> Prompted:
        return Prompted(rows, batch, prompts=chat_prompt_ids(tokenizer, contents), visual=media)

    def response_logits(self, model, tokenizer, asked: Prompted, responses: list[str]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The causal LM reads the visual tokens, the chat prompt and the response (a space after "Assistant:",
        as the fine-tuning turns), then </s>."""
        targets = [[*t, tokenizer.eos_token_id] for t in encode(tokenizer, [" " + r for r in responses])]
        ids, mask, labels = right_padded(asked.prompts, targets, tokenizer.pad_token_id, asked.batch["image"].device)
        return shifted(tasks.run(model, tasks.Turns(asked.rows, ids, mask), asked.visual, asked.batch), labels)

    def generate(self, model, tokenizer, asked: Prompted, max_new_tokens: int, sample: bool) -> list[str]:
        ids, mask = left_padded(asked.prompts, tokenizer.pad_token_id, asked.batch["image"].device)
        return tasks.generated(model, tokenizer, tasks.Turns(asked.rows, ids, mask), asked.visual, asked.batch,
                               max_new_tokens, sample)
