"""Model cards from hand-made evaluate results and a hand-made dvc.lock, read back with huggingface_hub."""
import json
import subprocess

import yaml
from huggingface_hub import ModelCard

from trimodal.cards import CARD, card_text, provenance, write_card

LOCK = {"schema": "2.0", "stages": {
    "demo": {"outs": [{"path": "data/sources/demo", "md5": "d0.dir"}]},
    "ingest": {"params": {"params.yaml": {"data.sources": ["data/sources/demo/records.jsonl"]}}},
    "shard": {"outs": [{"path": "data/shards", "hash": "md5", "md5": "5ba7d5.dir"}]},
    "quantize": {"params": {"params.yaml": {"quantize": {"prune_amount": 0.0, "max_val_drop": 0.0}}},
                 "outs": [{"path": "models/student-int8/model.int8.safetensors", "md5": "aa"}]},
}}
RESULT = {"parameters": 123456, "size_bytes": 4567, "rows": {
    "overall": {"n": 40, "few": False, "vqa_accuracy": 0.75, "cls_accuracy": 0.5, "caption_exact": 0.25,
                "bleu4": 12.34, "cider": 0.9},
    "image": {"n": 9, "few": True, "vqa_accuracy": 1.0, "cls_accuracy": 0.0},
}}
BASELINES = {"majority": {"rows": {"overall": {"n": 40, "vqa_accuracy": 0.1, "cls_accuracy": 0.3}}},
             "question_prior": {"rows": {"overall": {"n": 40, "vqa_accuracy": 0.2}}}}


def model_folder(tmp_path):
    folder = tmp_path / "models/student-int8"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"id2label": {"1": "square", "0": "circle"}}))
    (folder / "model.int8.safetensors").write_bytes(b"\0" * 16)
    return folder


def test_the_card_is_hub_metadata_with_the_test_scores_and_the_data_version(tmp_path):
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    folder = model_folder(tmp_path)
    origin = provenance("student-int8", "data/shards", tmp_path)
    assert origin.revision is None and origin.generated and origin.shards_md5 == "5ba7d5.dir"
    path = write_card(folder, card_text("student-int8", folder, RESULT, BASELINES, "test", origin, "data/shards"))
    assert path == folder / CARD
    card = ModelCard.load(path)  # the Hub's own parser
    results = {r.metric_name: r for r in card.data.eval_results}
    assert card.data.model_name == "trimodal-student-int8" and card.data.license == "apache-2.0"
    assert results["VQA exact match"].metric_value == 0.75 and results["BLEU-4 (sacrebleu)"].metric_value == 12.34
    assert {r.dataset_split for r in results.values()} == {"test"}
    assert {r.dataset_revision for r in results.values()} == {"5ba7d5.dir"}  # the shards' md5 in dvc.lock
    assert "cls_macro_f1" not in card.text and len(results) == 5  # only the scores the variant has
    text = card.text
    assert "`data/shards` with DVC md5 `5ba7d5.dir`" in text and "generated demo scrape" in text
    assert "prune_amount: 0.0" in text  # the stage's parameters as dvc.lock recorded them
    assert "| image | 9 *few* | 1.000 | 0.000 |" in text and "| *baseline majority* | 40 | 0.100 | 0.300 |" in text
    assert "123,456 parameters" in text and "`model.int8.safetensors`, 4,567 bytes" in text
    assert "2 classes (circle, square)" in text and "rows with fewer than 20 (image)" in text
    assert "trimodal predict --model models/student-int8 --image" in text and "CPU only" in text


def test_the_card_names_the_commit_and_says_when_code_was_edited_after_it(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "c"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    folder = model_folder(tmp_path)
    origin = provenance("student-int8", "data/shards", tmp_path)
    assert origin.revision == head and origin.edited == [] and origin.params is None  # no dvc.lock: ran outside DVC
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    origin = provenance("student-int8", "data/shards", tmp_path)
    assert origin.edited == ["params.yaml"]
    text = card_text("student-int8", folder, RESULT, BASELINES, "test", origin, "data/shards")
    assert f"git commit `{head}`, with uncommitted edits to params.yaml" in text
    assert "not recorded by DVC" in text and "dvc.lock has no entry for stage `quantize`" in text
