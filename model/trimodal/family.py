"""The trimodal family behind the `Family` interface (model/family.py): an encoder-decoder reading any subset of
an image, a sound and a text (model/trimodal/modeling.py), trained by the steps of model/trimodal/tasks.py."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from trimodal.data.batches import decoder_labels, fitted, model_inputs, question_prefixed, question_prompts
from trimodal.data.records import MODALITIES
from trimodal.evaluation.generation import ANSWER_TOKENS, answered, greedy
from trimodal.evaluation.scoring import record_of
from trimodal.model import lockstep
from trimodal.model.chat import Prompted, chat_prompt_ids, right_padded, shifted
from trimodal.model.family import Family, LossesFn, Predictions, Response, StepFn
from trimodal.model.trimodal.configuration import TrimodalConfig
from trimodal.model.trimodal.fusion import Stream
from trimodal.model.trimodal.modeling import TrimodalForConditionalGeneration
from trimodal.model.trimodal.tasks import distill_step, finetune_losses, finetune_step, pretrain_step

RESPONSE_ROOM = 16  # decoder positions kept for a response after its chat prompt (captions are the longest asked)


class TrimodalFamily(Family):
    name = "trimodal"
    config_class = TrimodalConfig
    model_class = TrimodalForConditionalGeneration
    card_about = {
        "teacher": "The teacher: the trimodal encoder-decoder (image, audio and text in any combination; "
                   "captions, answers questions, classifies), pre-trained self-supervised, fine-tuned, then "
                   "instruction-tuned and preference-tuned (DPO by default).",
        "student": "The student: a smaller trimodal model (fewer layers, narrower) distilled from the teacher with "
                   "the KD loss (Hinton et al. 2015) on caption, answer and class logits.",
        "student-int8": "The INT8 student: the student with uniform affine INT8 weights (per channel) and calibrated "
                        "activation scales (torch.ao); narrow and fragile Linears compute in float from int8 weights.",
    }

    def build_config(self, settings: dict, **from_data) -> TrimodalConfig:
        return TrimodalConfig(**{**settings, **from_data})

    def _step(self, stage: str, tokenizer, teacher, alpha: float, temperature: float) -> StepFn:
        if stage == "distill":
            return distill_step(teacher, alpha, temperature)
        return {"pretrain": pretrain_step, "finetune": finetune_step}[stage]

    def replay(self, tokenizer) -> LossesFn:
        return finetune_losses

    def predict(self, model, tokenizer, batch: dict, max_new_tokens: int, captions: bool = True) -> Predictions:
        """Per sample: the generated caption (greedy, from the record's inputs), the generated answer (greedy, after
        the question as the decoder's prefix), the predicted class, the teacher-forced caption NLL, and the
        contrastive embedding of each modality it holds."""
        encoded = model.encoder(**model_inputs(batch))
        caption = decoder_labels(batch["caption_ids"], batch["caption_mask"])
        forced = model(encoder_outputs=encoded, decoder_input_ids=model.shift_right(caption))
        nll = F.cross_entropy(forced.logits.float().transpose(1, 2), caption, ignore_index=-100,
                              reduction="none").sum(1)
        generated = greedy(model, tokenizer, encoded, max_new_tokens) if captions else None
        answers = answered(model, tokenizer, encoded, question_prompts(batch, model.config.decoder_start_token_id),
                           ANSWER_TOKENS)
        classes = forced.class_logits.argmax(-1).tolist()
        size = len(batch["ids"])
        embeddings, present = {}, {}
        for modality in MODALITIES:
            if modality in encoded.unimodal:
                embeddings[modality] = F.normalize(model.global_embedding(encoded, modality).float(), dim=-1).cpu()
                present[modality] = encoded.unimodal_masks[modality].any(-1).cpu()
            else:
                embeddings[modality] = torch.zeros(size, model.config.projection_dim)
                present[modality] = torch.zeros(size, dtype=torch.bool)
        records = []
        for i, meta in enumerate(batch["meta"]):
            record = {**record_of(meta), "answer_pred": answers[i], "label_pred": classes[i], "nll": float(nll[i]),
                      "tokens": int(caption[i].ne(-100).sum())}
            if generated is not None:
                record["caption_pred"] = generated[i]
            records.append(record)
        return Predictions(records, embeddings, present)

    def respond(self, model, tokenizer, batch: dict, caption_tokens: int, answer_tokens: int) -> list[Response]:
        """Caption, class probabilities and, for the samples asking a question, the answer (the question as the
        decoder's prefix), all from one encoding of the batch."""
        metas = batch["meta"]
        encoded = model.encoder(**model_inputs(batch))
        probs = model(encoder_outputs=encoded).class_logits.float().softmax(-1)
        captions = greedy(model, tokenizer, encoded, caption_tokens)
        asked = [i for i, has in enumerate(batch["question_mask"].any(-1).tolist()) if has]  # a question's tokens
        answers: list[str | None] = [None] * len(metas)
        if asked:  # from the same encoding, the question as the decoder's prefix
            prompts = question_prompts(batch, model.config.decoder_start_token_id)
            replies = answered(model, tokenizer, _rows(encoded, asked), [prompts[i] for i in asked], answer_tokens)
            for i, answer in zip(asked, replies, strict=True):
                answers[i] = answer
        return [Response(captions[i], answers[i], probs[i], meta["modalities"]) for i, meta in enumerate(metas)]

    def class_scores(self, model, tokenizer, batch: dict) -> tuple[list[int], torch.Tensor] | None:
        encoded = model.encoder(**model_inputs(batch))
        logits = model(encoder_outputs=encoded).class_logits.float()
        return list(range(len(logits))), logits.log_softmax(-1)

    def calibration_passes(self, model, tokenizer, batch: dict) -> list[dict]:
        """The batch's captioning pass (the caption as `labels`, the class as `class_labels`) and its VQA pass (the
        answer as `labels`), each when the batch has targets for it."""
        passes = []
        inputs = model_inputs(batch)
        caption = decoder_labels(batch["caption_ids"], batch["caption_mask"])
        if caption.ne(-100).any() or batch["label"].ge(0).any():
            passes.append({**inputs, "decoder_input_ids": model.shift_right(caption), "labels": caption,
                           "class_labels": batch["label"]})
        asked, answer = question_prefixed(batch, model.config)
        if answer.ne(-100).any():
            passes.append({**inputs, "decoder_input_ids": asked, "labels": answer})
        return passes

    def timed(self, model, batch: dict, inputs, max_new_tokens: int) -> Callable[[], None]:
        """The encoder, the classifier and a greedy caption of exactly `max_new_tokens` tokens."""
        features = model_inputs(batch)

        @torch.no_grad()
        def run() -> None:
            encoded = model.encoder(**features)
            model(encoder_outputs=encoded)
            model.generate(encoder_outputs=encoded, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                           do_sample=False, num_beams=1)

        return run

    def media(self, model, batch: dict):
        """The encoder's streams of the batch (image, audio, text), fused per prompt's rows by `prompted`."""
        return model.encoder.streams(**model_inputs(batch))

    def prompted(self, model, tokenizer, batch: dict, media, rows: list[int], contents: list[str]) -> Prompted:
        """The rows' streams fused, and each chat prompt as the decoder's prefix, cut to `prompt_width` (the start
        of a long text goes; "<s>", the end of the instruction and "Assistant:" stay)."""
        index = torch.tensor(rows, device=batch["image"].device)
        # in lockstep every stream stays (all False where the rows lack it): every rank fuses the same streams
        streams = {m: Stream(s.hidden[index], s.mask[index]) for m, s in media.items()
                   if s.mask[index].any() or lockstep.active()}
        width = self.prompt_width(model)
        return Prompted(rows, batch, encoded=model.encoder.fuse(streams),
                        prompts=[fitted(ids, width) for ids in chat_prompt_ids(tokenizer, contents)])

    def response_logits(self, model, tokenizer, asked: Prompted, responses: list[str]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each response's tokens and </s> as the shards tokenize answers (<s> dropped), after its prompt, which
        gives up its start where prompt and response overflow the decoder."""
        targets, room = [ids[1:] for ids in tokenizer(responses)["input_ids"]], model.config.max_decoder_positions
        prompts = [fitted(p, room - len(t)) for p, t in zip(asked.prompts, targets, strict=True)]
        ids, _, labels = right_padded(prompts, targets, model.config.pad_token_id, asked.batch["image"].device)
        logits = model(encoder_outputs=asked.encoded, decoder_input_ids=ids).logits
        return shifted(logits, labels)

    def generate(self, model, tokenizer, asked: Prompted, max_new_tokens: int, sample: bool) -> list[str]:
        prompts = [torch.tensor(p, device=asked.batch["image"].device) for p in asked.prompts]
        return answered(model, tokenizer, asked.encoded, prompts, max_new_tokens, sample)  # fits them itself

    def prompt_width(self, model) -> int:
        """The decoder's positions less RESPONSE_ROOM."""
        return model.config.max_decoder_positions - RESPONSE_ROOM


def _rows(encoded, rows: list[int]):
    """The encoder output of the given samples only (answers are generated for the asked ones alone)."""
    index = torch.tensor(rows, dtype=torch.long)
    return type(encoded)(**{k: _take(v, index) for k, v in encoded.items()})


def _take(value, index: torch.Tensor):
    if torch.is_tensor(value):
        return value.index_select(0, index)
    if isinstance(value, dict):
        return {k: _take(v, index) for k, v in value.items()}
    return value
