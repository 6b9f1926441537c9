"""A tiny validated dataset + tokenizer + shards, built without running the earlier stages."""
from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
from filelock import FileLock
from PIL import Image

from stages.shard import run as shard
from stages.tokenizer import train_tokenizer
from tests.stage_runner import make_project, run_stage
from trimodal.data import limits
from trimodal.data.records import record_key
from trimodal.data.tars import write_tar
from trimodal.params import Params, TokenizerParams, defaults

TINY_MODEL = ["model.image_size=16", "model.patch_size=8", "model.n_mels=20"]
# DeepSeek-VL sizes for the fixture's 16 px images (merged over conf/model/deepseek_vl.yaml): 4 visual tokens
TINY_DEEPSEEK_VL = {"low_vision": {"image_size": 16, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                        "num_hidden_layers": 1, "num_attention_heads": 2},
         "high_vision": {"image_size": 32, "patch_size": 8, "hidden_size": 16, "mlp_dim": 32, "num_hidden_layers": 2,
                         "num_attention_heads": 2, "window_size": 2, "global_attn_indexes": [1], "output_channels": 16,
                         "num_pos_feats": 8},
         "high_channels": [16, 32],
         "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "num_key_value_heads": 2, "max_position_embeddings": 128, "tie_word_embeddings": True}}

SR = 16000


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder `build` fills once per test session, by whichever pytest-xdist worker asks first; a worker that
    asks meanwhile waits for it (a file lock) rather than training the same models again. The tests only read it
    (a test that changes it works on a copy)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder, above each worker's own
    root = base / name
    with FileLock(f"{root}.lock"):
        if not (root / ".built").exists():
            shutil.rmtree(root, ignore_errors=True)  # what a failed build left
            build(root)
            (root / ".built").touch()
    return root


def validated_records(n: int = 24) -> tuple[list[dict], dict[str, bytes]]:
    """n records cycling through all 7 modality subsets, with targets; returns (manifest, media members)."""
    records, media = [], {}
    subsets = [("image",), ("audio",), ("text",), ("image", "text"), ("image", "audio"), ("audio", "text"),
               ("image", "audio", "text")]
    for i in range(n):
        rid, subset = f"rec-{i:03d}", subsets[i % len(subsets)]
        key = record_key(rid)
        rec = {"id": rid, "key": key, "source": "t.jsonl", "row": i + 1, "text": None, "image": None, "audio": None,
               "caption": f"a red shape number {i}", "question": "what color is it?", "answer": "red",
               "label": ["circle", "square"][i % 2] if i % 3 else None, "converted": []}
        if "image" in subset:
            buf = io.BytesIO()
            Image.new("RGB", (40 + i, 30), (200, 10, 10)).save(buf, format="PNG")
            media[f"{key}.png"] = buf.getvalue()
            rec["image"] = f"media-000000.tar:{key}.png"
        if "audio" in subset:
            buf = io.BytesIO()
            sf.write(buf, np.sin(np.arange(SR // 4 + 160 * i) / SR * 2 * np.pi * 300).astype(np.float32), SR,
                     format="WAV", subtype="FLOAT")
            media[f"{key}.wav"] = buf.getvalue()
            rec["audio"] = f"media-000000.tar:{key}.wav"
        if "text" in subset:
            rec["text"] = f"there is a red circle {i}"
        records.append(rec)
    return records, media


def build_validated(root: Path, n: int = 24) -> list[dict]:
    records, media = validated_records(n)
    (root / "validated").mkdir(parents=True, exist_ok=True)
    (root / "validated/manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_tar(root / "validated/media-000000.tar", media)
    limits.write(root / "validated", limits.MediaLimits.of(defaults().validate))  # as validate writes them
    texts = [r[f] for r in records for f in ("text", "caption", "question", "answer", "label") if r[f]]
    train_tokenizer(texts, TokenizerParams(vocab_size=300, min_frequency=1)).save_pretrained(root / "tokenizer")
    return records


def sharded(root: Path, n: int = 28) -> Path:
    """root/validated, root/tokenizer (with its chat template) and root/shards of `n` fixture records; returns root."""
    build_validated(root, n=n)
    shard(root / "validated", root / "tokenizer", root / "shards", shard_params())
    return root


def tiny_deepseek_vl(tokenizer, labels=("circle", "square"), **features):
    """An untrained DeepSeek-VL at TINY_DEEPSEEK_VL sizes for `tokenizer`'s vocabulary; `features`: the data's
    (image_size, n_mels, ...), as the pretrain stage stores them in the config."""
    import torch

    from trimodal.model.families import build_config, model_class, read_preset

    config = build_config({**read_preset("deepseek_vl"), **TINY_DEEPSEEK_VL}, vocab_size=len(tokenizer),
                          pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, **features)
    config.id2label = dict(enumerate(labels))
    torch.manual_seed(0)
    return model_class(config)(config)


def shard_params(**shard) -> Params:
    params = defaults()
    params.shard.samples_per_shard = 4
    params.split.val_fraction = params.split.test_fraction = 0.2
    params.shard.image_size = 16
    params.shard.n_mels = 20
    for k, v in shard.items():
        setattr(params.split if k.endswith("_fraction") else params.shard, k, v)
    return params


def trained_project(data: Path, root: Path, pretrain: list[str], finetune: list[str],
                    align: list[str] | None = None) -> Path:
    """A project in `root` whose models/teacher was pretrained and fine-tuned (the stages run as dvc.yaml runs
    them, with these `key=value` settings of their sections) on 28 fixture records sharded in `data`. With
    `align` (settings of instruct and align), the teacher comes out of the DAG's own instruct -> preferences ->
    align; without, finetune writes it (paths.finetuned pointed at the teacher's folder), which is quicker."""
    build_validated(data, n=28)
    shard(data / "validated", data / "tokenizer", data / "shards", shard_params())
    make_project(root)
    shutil.copytree(data / "shards", root / "data/shards")
    shutil.copytree(data / "tokenizer", root / "artifacts/tokenizer")
    run_stage("pretrain", root, *TINY_MODEL, *[f"pretrain.{s}" for s in pretrain])
    if align is None:
        run_stage("finetune", root, *[f"finetune.{s}" for s in finetune], f"paths.finetuned={defaults().paths.teacher}")
        return root
    run_stage("finetune", root, *[f"finetune.{s}" for s in finetune])
    run_stage("instruct", root, *[f"instruct.{s}" for s in align])
    run_stage("preferences", root)
    run_stage("align", root, *[f"align.{s}" for s in align])
    return root
