"""A tiny model that has learnt something (pretrain + finetune on tiny shards, then INT8), served and used by the
trimodal tests; and the media the tests send it."""
from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from tests.shard_fixtures import SR, trained_project
from tests.stage_runner import run_stage

# every fixture record's answer is "red": enough steps for a tiny model to say so
FINETUNE = ["steps=60", "batch_size=8", "warmup_steps=5", "log_every=20", "checkpoint_every=1000", "shuffle=0",
            "lr=3e-3"]
PRETRAIN = ["steps=2", "batch_size=4", "warmup_steps=1", "log_every=1", "checkpoint_every=1000", "shuffle=0"]


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """{"teacher": folder, "student-int8": folder} trained on the shard fixtures (answer always "red")."""
    root = trained_project(tmp_path_factory.mktemp("served-data"), tmp_path_factory.mktemp("served"), PRETRAIN,
                           FINETUNE)
    shutil.copytree(root / "models/teacher", root / "models/student")  # quantize reads the student
    run_stage("quantize", root, "quantize.speed_batch_sizes=[]", "quantize.int8_min_features=0")
    return {"teacher": root / "models/teacher", "student-int8": root / "models/student-int8"}


def png(size: tuple[int, int] = (40, 30), color=(200, 10, 10), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def wav(seconds: float = 0.25, hz: float = 300.0, rate: int = SR) -> bytes:
    buf = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    sf.write(buf, np.sin(2 * np.pi * hz * t).astype(np.float32), rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def labels_of(model_dir) -> set[str]:
    return set(json.loads((model_dir / "config.json").read_text())["id2label"].values())
