import json

from transformers import AutoTokenizer

from stages.tokenizer import SPECIALS_IN_ORDER, run
from trimodal.data.records import record_split
from trimodal.params import SplitParams, TokenizerParams


def test_tokenizer_trains_on_every_text_field_and_round_trips(tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    rows = [{"id": f"r{i}", "text": "there is a red circle", "caption": "a blue square",
             "question": "what color is the triangle?", "answer": "yellow", "label": "triangle"} for i in range(20)]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "tok"
    run(manifest, out, TokenizerParams(vocab_size=400, min_frequency=2), SplitParams(val_fraction=0, test_fraction=0))
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
        run(manifest, tmp_path / "tok", TokenizerParams(vocab_size=400, min_frequency=2),
            SplitParams(val_fraction=0.1, test_fraction=0.1))
    except SystemExit as e:
        assert "no text" in str(e)
    else:
        raise AssertionError("expected SystemExit")
    assert not (tmp_path / "tok").exists()


def test_tokenizer_learns_from_the_train_split_only(tmp_path):
    """Words only val/test records hold never become merges: the held-out text does not shape the vocabulary."""
    split = SplitParams(val_fraction=0.3, test_fraction=0.3)
    rows = [{"id": f"r{i}", "text": "a red circle", "caption": None} for i in range(40)]
    for row in rows:
        if record_split(row, 0.3, 0.3) != "train":
            row["text"] = "zyzzyva quokka"  # held-out words, 40% of the rows
    rows.append({"id": "g", "content_group": rows[0]["id"], "text": "a red circle"})  # follows its group's split
    assert {record_split(r, 0.3, 0.3) for r in rows[:40]} == {"train", "val", "test"}
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run(manifest, tmp_path / "tok", TokenizerParams(vocab_size=400, min_frequency=2), split)
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert len(tok("circle", add_special_tokens=False)["input_ids"]) == 1
    assert len(tok("quokka", add_special_tokens=False)["input_ids"]) > 1  # seen 16 times, but only in val/test
    assert "quokka" not in "".join(tok.get_vocab())
