"""A tiny model that has learnt something (pretrain + finetune on tiny shards, then INT8); `trimodal serve` over it
(one process for the whole session); and the media the tests send it."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from tests.s3_server import free_port
from tests.shard_fixtures import SR, built_once, trained_project
from tests.stage_runner import run_stage

# every fixture record's answer is "red": enough steps for a tiny model to say so
LIMIT_MB = 1  # request and media limits of the server under test
# the console script of the environment running the tests (pip/uv put it beside the interpreter)
TRIMODAL = str(Path(sys.executable).with_name("trimodal"))
FINETUNE = ["steps=60", "batch_size=8", "warmup_steps=5", "log_every=20", "checkpoint_every=1000", "shuffle=0",
            "lr=3e-3"]
PRETRAIN = ["steps=2", "batch_size=4", "warmup_steps=1", "log_every=1", "checkpoint_every=1000", "shuffle=0"]


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """{"teacher": folder, "student-int8": folder} trained on the shard fixtures (answer always "red"), once for
    the session's workers."""
    def build(folder: Path) -> None:
        root = trained_project(folder / "data", folder / "project", PRETRAIN, FINETUNE)
        shutil.copytree(root / "models/teacher", root / "models/student")  # quantize reads the student
        run_stage("quantize", root, "quantize.speed_batch_sizes=[]", "quantize.int8_min_features=0")

    root = built_once(tmp_path_factory, "served", build) / "project"
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


def start_server(models: dict, *flags: str, program: str = TRIMODAL, **popen) -> tuple[subprocess.Popen, str]:
    """`program serve` (this environment's console script unless told) over `models`; `popen`: cwd, env."""
    port = free_port()
    args = [program, "serve", "--port", str(port), *flags]
    for folder in models.values():
        args += ["--model", str(folder)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **popen)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"trimodal serve exited {proc.returncode}: {proc.stdout.read()[-3000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.5)
    stop_server(proc)
    raise AssertionError("trimodal serve did not answer /health within 180 s")


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def server(models):
    """The base URL of `trimodal serve` over both models, with small limits and a 2 s fetch budget."""
    proc, base = start_server(models, "--max-request-mb", str(LIMIT_MB), "--max-media-mb", str(LIMIT_MB),
                              "--fetch-timeout", "2", "--max-wait-ms", "50")
    yield base
    stop_server(proc)
