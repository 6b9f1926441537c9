"""Loader batches (trimodal/data/loader.py) -> the model's arguments and targets, shared by every stage that
runs the model on shards (training, scoring, calibration, evaluation)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
import torch

from trimodal.data.records import MODALITIES
from trimodal.model.masking import random_ordinary_ids, special_ids


def model_inputs(batch: dict) -> dict:
    """Loader batch (trimodal.data.loader) -> the model's encoder arguments."""
    return {"pixel_values": batch["image"], "image_present": batch["image_present"],
            "input_features": batch["mel"], "mel_lengths": batch["mel_lengths"],
            "text_ids": batch["text_ids"], "text_mask": batch["text_mask"]}


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def decoder_labels(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """'<s> a red circle </s>' -> labels 'a red circle </s>' (the decoder starts from <s>), padding -100."""
    return ids[:, 1:].masked_fill(~mask[:, 1:], -100)


def fitted(prompt, width: int):
    """A decoder prompt (list or tensor) cut to `width` tokens from its start, its first token ("<s>") kept: the
    decoder's positions are few, and the end of a prompt (the question, "Assistant:") matters most."""
    if len(prompt) <= width:
        return prompt
    if width <= 1:
        return prompt[:1]
    if isinstance(prompt, list):
        return [prompt[0], *prompt[1:][-(width - 1):]]
    return torch.cat([prompt[:1], prompt[1:][-(width - 1):]])


def question_prompts(batch: dict, start_id: int) -> list[torch.Tensor]:
    """Each sample's question tokens '<s> q </s>' ([start_id] without a question): the decoder's prefix in the VQA
    pass. The question never joins the encoder's inputs, so the fused R that answers it is the one that captions and
    classifies the same inputs (joined to the text, it hid the comparison fusion questions ask about; docs/model.md)."""
    start = batch["question_ids"].new_tensor([start_id])
    return [q[m] if m.any() else start for q, m in zip(batch["question_ids"], batch["question_mask"], strict=True)]


def question_prefixed(batch: dict, config) -> tuple[torch.Tensor, torch.Tensor]:
    """The VQA pass's decoder inputs and labels [B, W]: '<s> q </s> a' in, and after the question's '</s>' the
    answer 'a </s>' as labels (the question's positions, padding and samples without an answer: -100)."""
    rows, labels = [], []
    prompts = question_prompts(batch, config.decoder_start_token_id)
    for prompt, a, am in zip(prompts, batch["answer_ids"], batch["answer_mask"], strict=True):
        answer = a[am][1:]  # its <s> dropped: the question's </s> is where the answer starts
        prompt = fitted(prompt, config.max_decoder_positions + 1 - len(answer))  # the last token is not fed
        sequence = torch.cat([prompt, answer])
        target = sequence[1:].clone()
        target[: len(prompt) - 1] = -100
        rows.append(sequence[:-1] if len(answer) else prompt)
        labels.append(target if len(answer) else torch.full_like(prompt, -100))
    width = max(len(r) for r in rows)
    ids = batch["answer_ids"].new_full((len(rows), width), config.pad_token_id)
    out = batch["answer_ids"].new_full((len(rows), width), -100)
    for i, (r, t) in enumerate(zip(rows, labels, strict=True)):
        ids[i, : len(r)], out[i, : len(t)] = r, t
    return ids, out


def noisy_questions(batch: dict, p: float, generator: torch.Generator, config,
                    spared: dict[tuple[int, ...], frozenset[int]] | None = None) -> dict:
    """Question noise: each word token of each question (between its '<s>' and '</s>'), with probability p, is
    dropped or replaced by a random token that is none of `config`'s special ones (half each), at least one word
    kept. A model trained on a few question templates otherwise answers by template: a phrasing it never saw
    ("which colour is this shape?") gets the answer of the template it looks like most; under noise no template
    is ever whole, and the words that decide what is asked are what stays reliable (docs/model.md, "Held-out
    phrasings"). `spared` (a question's words -> the words noise leaves alone, `decisive_words`) keeps each
    training question's decisive word: dropped, "what is the color of this shape?" would become "what is the of
    this shape?" still answered with a colour, which teaches that a question about the shape asks for its colour.
    A question it lacks is noised whole."""
    if p <= 0:  # off: not even a draw, so the step's generator is what it was without this feature
        return batch
    ids, mask = batch["question_ids"], batch["question_mask"]
    draws = torch.rand(ids.shape, generator=generator)
    replace = torch.rand(ids.shape, generator=generator) < 0.5
    special = torch.tensor(sorted(special_ids(config)), dtype=ids.dtype)
    tokens = random_ordinary_ids(ids.shape, config.vocab_size, special, generator).to(ids.dtype)
    out_ids, out_mask = torch.zeros_like(ids), torch.zeros_like(mask)
    for i in range(len(ids)):
        q = ids[i][mask[i]]
        if len(q) > 3:  # '<s> </s>' or a single word: nothing to spare
            inner = slice(1, len(q) - 1)
            hit, swap = draws[i, inner] < p, replace[i, inner]
            keep_words = spared.get(tuple(q[inner].tolist())) if spared else None
            if keep_words:
                hit = hit & ~torch.tensor([int(t) in keep_words for t in q[inner]])
            keep = ~(hit & ~swap)
            if not keep.any():
                keep[0] = True
            words = torch.where(hit & swap, tokens[i, inner], q[inner])
            q = torch.cat([q[:1], words[keep], q[-1:]])
        out_ids[i, : len(q)], out_mask[i, : len(q)] = q, True
    return {**batch, "question_ids": out_ids, "question_mask": out_mask}


def decisive_words(pairs: Iterable[tuple[np.ndarray, np.ndarray]], max_answers: int = 512,
                   alpha: float = 0.5) -> dict[tuple[int, ...], frozenset[int]]:
    """Each training question's decisive word: the one whose loss would most lower the probability of the
    question's answers, under a naive Bayes model of answer given question words fitted on `pairs` ((question ids
    '<s> q </s>', answer ids)). Keyed by the question's words (without '<s>' and '</s>'). "color" in "what is the
    color of this shape?": without it the words are those of shape questions. A word every kind of question
    shares ("what", "this") moves nothing. Words are counted once per question and smoothed by `alpha`; answers
    past the `max_answers` most frequent share one class, which bounds the work on open-ended data."""
    pairs = [(tuple(int(t) for t in q[1:-1]), tuple(int(t) for t in a)) for q, a in pairs]
    pairs = [(q, a) for q, a in pairs if q]
    if not pairs:
        return {}
    frequent = [a for a, _ in Counter(a for _, a in pairs).most_common(max_answers)]
    cls = {a: i for i, a in enumerate(frequent)}
    other = len(frequent)
    labels = np.array([cls.get(a, other) for _, a in pairs])
    n_cls = other + 1
    words = sorted({w for q, _ in pairs for w in q})
    col = {w: i for i, w in enumerate(words)}
    counts = np.zeros((len(words), n_cls))
    for (q, _), y in zip(pairs, labels, strict=True):
        counts[[col[w] for w in set(q)], y] += 1
    per_cls = np.bincount(labels, minlength=n_cls).astype(np.float64)
    log_prior = np.log(np.maximum(per_cls, 1e-12) / per_cls.sum())
    log_like = np.log((counts + alpha) / (per_cls + 2 * alpha))  # [word, class]: P(word in question | answer)
    answers_of: dict[tuple[int, ...], Counter] = {}
    for (q, _), y in zip(pairs, labels, strict=True):
        answers_of.setdefault(q, Counter())[y] += 1
    out = {}
    for q, ys in answers_of.items():
        present = sorted({col[w] for w in q})
        scores = log_prior + log_like[present].sum(0)  # [class]
        without = scores[None, :] - log_like[present]  # [word, class]: the question less that word
        posterior = scores - np.logaddexp.reduce(scores)
        posterior_without = without - np.logaddexp.reduce(without, axis=1, keepdims=True)
        weight = np.array([ys[y] for y in sorted(ys)], dtype=np.float64)
        loss = (posterior[sorted(ys)][None, :] - posterior_without[:, sorted(ys)]) @ (weight / weight.sum())
        if loss.max() > 1e-6:
            out[q] = frozenset(words[present[i]] for i in np.flatnonzero(loss >= loss.max() - 1e-6))
    return out


def random_backgrounds(batch: dict, p: float, generator: torch.Generator, tolerance: float = 0.15) -> dict:
    """Background randomisation: with probability p, an image that is its sample's only input and whose border is
    mostly one colour (an object on a plain background; the median of its border pixels) gets a random colour
    there instead, in every pixel within `tolerance` of it (max over channels, images in [0, 1]), its noise kept.
    Images of a plain background that never varies teach a model to see an object by its contrast with that
    background: drawn on another (a dark one), it is misread. Samples with another input keep their images as
    they are: swapped there too, the fusion records that compare the image's colours with a tone or a sentence
    were learnt less well (docs/model.md, "Held-out renderings"). Images whose border is not mostly one colour
    (photographs) are left as they are."""
    if p <= 0:  # off: not even a draw, so the step's generator is what it was without this feature
        return batch
    image = batch["image"]
    draws, colors = torch.rand(len(image), generator=generator), torch.rand(len(image), 3, generator=generator)
    border = torch.cat([image[..., 0, :], image[..., -1, :], image[..., :, 0], image[..., :, -1]], dim=-1)
    background = border.median(dim=-1).values  # [B, 3]
    plain = (border - background[..., None]).abs().amax(1).lt(tolerance).float().mean(-1).ge(0.5)
    present = present_modalities(batch)
    chosen = present["image"] & ~present["audio"] & ~present["text"] & plain & (draws < p)
    if not chosen.any():
        return batch
    near = (image - background[..., None, None]).abs().amax(1, keepdim=True).lt(tolerance) & chosen[:, None, None, None]
    swapped = (image - background[..., None, None] + colors[..., None, None]).clamp(0.0, 1.0)
    return {**batch, "image": torch.where(near, swapped, image)}


def pairable(batch: dict, skip_groups=()) -> torch.Tensor:
    """[B] bool: samples whose inputs are views of one content, so the contrastive objectives may pair them; a
    sample of a group in `skip_groups` (e.g. "fusion": two inputs that may disagree, and the answer says whether
    they do) is not."""
    return torch.tensor([meta.get("group") not in skip_groups for meta in batch["meta"]], dtype=torch.bool,
                        device=batch["caption_ids"].device)


def same_caption(batch: dict) -> torch.Tensor:
    """[B, B] bool: samples i, j whose captions are the same token sequence (every sample with itself; a sample
    without a caption only with itself): the positives of the contrastive objectives."""
    ids = batch["caption_ids"].masked_fill(~batch["caption_mask"], -1)
    same = (ids[:, None] == ids[None]).all(-1) & batch["caption_mask"].any(1)[:, None]
    return same | torch.eye(len(ids), dtype=torch.bool, device=ids.device)


def present_modalities(batch: dict) -> dict[str, torch.Tensor]:
    """modality -> [B] bool: which samples of the batch carry it."""
    return {"image": batch["image_present"], "audio": batch["mel_lengths"] > 0, "text": batch["text_mask"].any(1)}


def drop_modalities(batch: dict, p: float, generator: torch.Generator, keep_groups=()) -> dict:
    """Modality dropout: each sample with two or more inputs, with probability p, keeps only a random non-empty
    proper subset of them (uniform over the 2^k - 2 choices), so the model also learns to answer from each input
    alone instead of leaning on the easiest one. Samples of a group in `keep_groups` (e.g. "fusion", whose answer
    needs every input) keep all of theirs. The draws do not depend on the batch's content (same generator state
    after any batch of the same size), so resumed training draws what the uninterrupted run drew."""
    if p <= 0:  # off: not even a draw, so the step's generator is what it was without this feature
        return batch
    n = len(batch["ids"])
    draws, picks = torch.rand(n, generator=generator), torch.randint(0, 2**30, (n,), generator=generator)
    present = {m: v.tolist() for m, v in present_modalities(batch).items()}
    drops: dict[str, list[int]] = {m: [] for m in MODALITIES}
    metas = list(batch["meta"])
    for i in range(n):
        have = [m for m in MODALITIES if present[m][i]]
        if len(have) < 2 or draws[i] >= p or metas[i].get("group") in keep_groups:
            continue
        subsets = [[m for j, m in enumerate(have) if mask >> j & 1] for mask in range(1, 2 ** len(have) - 1)]
        keep = subsets[int(picks[i]) % len(subsets)]
        for m in have:
            if m not in keep:
                drops[m].append(i)
        metas[i] = {**metas[i], "modalities": keep}
    out = {**batch, "meta": metas}
    if drops["image"]:
        out["image"], out["image_present"] = batch["image"].clone(), batch["image_present"].clone()
        out["image"][drops["image"]], out["image_present"][drops["image"]] = 0.0, False
    if drops["audio"]:
        out["mel"], out["mel_lengths"] = batch["mel"].clone(), batch["mel_lengths"].clone()
        out["mel"][drops["audio"]], out["mel_lengths"][drops["audio"]] = 0.0, 0
    if drops["text"]:
        out["text_mask"] = batch["text_mask"].clone()
        out["text_mask"][drops["text"]] = False
    return out
