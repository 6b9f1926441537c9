"""Text from an encoder output: greedy captions, and greedy or sampled continuations of decoder prompts
(answers, chat responses), as the val scores, the evaluate stage, the alignment stages and `trimodal` use them."""
from __future__ import annotations

import torch

from trimodal.data.batches import fitted

ANSWER_TOKENS = 6  # answers are a word or two


def greedy(model, tokenizer, encoded, max_new_tokens: int) -> list[str]:
    """One string per sample (special tokens and outer spaces dropped); the encoder does not run again."""
    ids = model.generate(encoder_outputs=encoded, max_new_tokens=max_new_tokens, num_beams=1, do_sample=False)
    return [s.strip() for s in tokenizer.batch_decode(ids, skip_special_tokens=True)]


@torch.no_grad()
def answered(model, tokenizer, encoded, prompts: list[torch.Tensor], max_new_tokens: int, sample: bool = False
             ) -> list[str]:
    """Greedy (or with `sample`, drawn: temperature 1, torch's global generator) continuation of each sample's
    decoder prompt (a question, trimodal/data/batches.question_prompts, or a chat turn), the words after it.
    Prompts differ in length, so each row is decoded right-padded and the whole prefix is re-decoded every step
    (answers are a few tokens; causal attention keeps the padding after a row's end unseen)."""
    eos, pad = model.config.eos_token_id, model.config.pad_token_id
    prompts = [fitted(p, model.config.max_decoder_positions - max_new_tokens) for p in prompts]
    device = encoded.last_hidden_state.device
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    ids = torch.full((len(prompts), int(lengths.max()) + max_new_tokens), pad, dtype=torch.long, device=device)
    for i, prompt in enumerate(prompts):
        ids[i, : len(prompt)] = prompt
    rows, done = torch.arange(len(prompts), device=device), torch.zeros(len(prompts), dtype=torch.bool, device=device)
    position = lengths.clone()
    for _ in range(max_new_tokens):
        logits = model(encoder_outputs=encoded, decoder_input_ids=ids[:, : int(position.max())]).logits
        last = logits[rows, position - 1].float()
        token = torch.multinomial(last.softmax(-1), 1).squeeze(1) if sample else last.argmax(-1)
        ids[rows, position] = torch.where(done, pad, token)
        done |= token == eos
        position += 1
        if done.all():
            break
    return [tokenizer.decode(ids[i, int(n):], skip_special_tokens=True).strip() for i, n in enumerate(lengths)]
