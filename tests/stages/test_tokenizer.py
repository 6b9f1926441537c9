import json

from transformers import AutoTokenizer

from stages.common.params import TokenizerParams
from stages.tokenizer import SPECIALS_IN_ORDER, run


def test_tokenizer_trains_on_every_text_field_and_round_trips(tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    rows = [{"id": f"r{i}", "text": "there is a red circle", "caption": "a blue square",
             "question": "what color is the triangle?", "answer": "yellow", "label": "triangle"} for i in range(20)]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "tok"
    run(manifest, out, TokenizerParams(vocab_size=400, min_frequency=2))
    tok = AutoTokenizer.from_pretrained(out)
    assert [tok.convert_tokens_to_ids(t) for t in SPECIALS_IN_ORDER] == [0, 1, 2, 3, 4]
    assert tok.pad_token_id == 0 and tok.mask_token == "<mask>"
    for text in ("there is a red circle", "what color is the triangle?", "yellow"):
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        assert tok.decode(ids, skip_special_tokens=True).strip() == text
    # words seen 20 times are merged into single tokens; unseen text still encodes (byte-level, no <unk>)
    assert len(tok("yellow", add_special_tokens=False)["input_ids"]) == 1
    assert tok.unk_token_id not in tok("zebra ünïcode ✓")["input_ids"]


def test_tokenizer_refuses_empty_text(tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps({"id": "a", "text": None}) + "\n")
    try:
        run(manifest, tmp_path / "tok", TokenizerParams())
    except SystemExit as e:
        assert "no text" in str(e)
    else:
        raise AssertionError("expected SystemExit")
    assert not (tmp_path / "tok").exists()
