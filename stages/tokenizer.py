"""Stage `tokenizer`: train a byte-level BPE on the validated text -> artifacts/tokenizer/ (PreTrainedTokenizerFast).

Every text field (inputs, captions, questions, answers, labels) of the accepted records of the **train** split
(trimodal/data/records.record_split, as shard assigns them) is training text, so the vocabulary covers what the
decoders must generate and nothing of the val/test text leaks into it.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from trimodal.atomic import atomic_dir, read_jsonl
from trimodal.config_errors import run_main
from trimodal.data.records import TEXT_FIELDS, record_split
from trimodal.params import SplitParams, TokenizerParams, load_params

SPECIAL_TOKENS = {
    "pad_token": "<pad>",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "mask_token": "<mask>",
    "cls_token": "<s>",
    "sep_token": "</s>",
}
SPECIALS_IN_ORDER = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]  # ids 0..4, stable across vocab sizes
# The chat format of the turns a causal LM is fine-tuned on (the DeepSeek-VL family, model/deepseek_vl/tasks.py),
# DeepSeek-VL's own "User: ...\n\nAssistant: ..." layout; `add_generation_prompt` opens the assistant's turn.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}User: {{ message['content'] }}{{ '\\n\\n' }}"
    "{%- else -%}Assistant: {{ message['content'] }}{{ eos_token }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}Assistant:{%- endif -%}"
)


def iter_texts(records: Iterable[dict]) -> Iterator[str]:
    for record in records:
        for name in TEXT_FIELDS:
            if record.get(name):
                yield record[name]


def train_tokenizer(texts: Iterable[str], params: TokenizerParams) -> PreTrainedTokenizerFast:
    """Byte-level BPE (RoBERTa-style): no unknown characters, NFC-normalised, `<s> ... </s>` framing, and the
    chat template of CHAT_TEMPLATE."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=params.vocab_size,
        min_frequency=params.min_frequency,
        special_tokens=SPECIALS_IN_ORDER,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=sys.stderr.isatty(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=512, chat_template=CHAT_TEMPLATE,
                                   **SPECIAL_TOKENS)


def run(manifest: Path, out_dir: Path, params: TokenizerParams, split: SplitParams) -> PreTrainedTokenizerFast:
    records = [r for r in read_jsonl(manifest)
               if record_split(r, split.val_fraction, split.test_fraction) == "train"]
    if not any(True for _ in iter_texts(records)):
        raise SystemExit(f"tokenizer: no text in the train split of {manifest}: nothing to train a tokenizer on")
    tokenizer = train_tokenizer(iter_texts(records), params)
    with atomic_dir(out_dir) as tmp:
        tokenizer.save_pretrained(tmp)
    print(f"tokenizer: vocab {len(tokenizer)} from the {len(records)} train records -> {out_dir}")
    return tokenizer


def main(argv: Sequence[str] | None = None) -> None:
    params = load_params("params.yaml", sys.argv[1:] if argv is None else argv)
    run(Path(params.paths.validated) / "manifest.jsonl", Path(params.paths.tokenizer), params.tokenizer, params.split)


if __name__ == "__main__":
    run_main(main)
