"""Text from an encoder output: greedy decoding, as the val scores, the evaluate stage and `trimodal` use it."""
from __future__ import annotations

ANSWER_TOKENS = 6  # answers are a word or two


def greedy(model, tokenizer, encoded, max_new_tokens: int) -> list[str]:
    """One string per sample (special tokens and outer spaces dropped); the encoder does not run again."""
    ids = model.generate(encoder_outputs=encoded, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
    return [s.strip() for s in tokenizer.batch_decode(ids, skip_special_tokens=True)]
