"""Text from an encoder output: greedy decoding (or sampling), as the val scores, the evaluate stage and
`trimodal` use it."""
from __future__ import annotations

ANSWER_TOKENS = 6  # answers are a word or two


def greedy(model, tokenizer, encoded, max_new_tokens: int) -> list[str]:
    """One string per sample (special tokens and outer spaces dropped); the encoder does not run again."""
    return decoded(model, tokenizer, encoded, max_new_tokens)


def decoded(model, tokenizer, encoded, max_new_tokens: int, sample: bool = False) -> list[str]:
    """greedy, or with `sample` drawn from the model's distribution (temperature 1, no top-k; torch's global
    generator: seed it first)."""
    search = {"do_sample": True, "top_k": 0} if sample else {"do_sample": False}
    ids = model.generate(encoder_outputs=encoded, max_new_tokens=max_new_tokens, num_beams=1, **search)
    return [s.strip() for s in tokenizer.batch_decode(ids, skip_special_tokens=True)]
