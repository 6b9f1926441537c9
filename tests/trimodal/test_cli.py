"""`trimodal predict`, the console script pyproject installs, on an image, a sound and a text."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trimodal.conftest import png, wav

# the console script of the environment running the tests (pip/uv put it beside the interpreter)
TRIMODAL = str(Path(sys.executable).with_name("trimodal"))


def trimodal(*args: str) -> subprocess.CompletedProcess:
    assert Path(TRIMODAL).is_file(), f"{TRIMODAL} is missing: run infra/setup.sh (it installs trimodal)"
    return subprocess.run([TRIMODAL, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    (root / "red.png").write_bytes(png())
    (root / "tone.wav").write_bytes(wav())
    (root / "broken.png").write_bytes(png()[:60])  # cut inside the image data
    return root


def test_predict_answers_about_an_image_an_audio_file_and_a_text(models, media):
    runs = {"image": ["--image", str(media / "red.png")], "audio": ["--audio", str(media / "tone.wav")],
            "text": ["--text", "there is a red circle 3"]}
    for modality, given in runs.items():
        proc = trimodal("predict", "--model", str(models["student-int8"]), *given, "--question", "what color is it?",
                        "--json")
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert out["inputs"] == [modality] and out["answer"] == "red" and out["caption"]
        assert len(out["labels"]) == 2 and out["labels"][0]["probability"] >= out["labels"][1]["probability"]


def test_predict_prints_a_readable_answer(models, media):
    proc = trimodal("predict", "--model", str(models["teacher"]), "--image", str(media / "red.png"),
                    "--question", "what color is it?", "--top-k", "1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "inputs:   image" and lines[1].startswith("caption:  ") and lines[2] == "answer:   red"
    assert lines[3].startswith("labels:   ") and lines[3].count(",") == 0  # top-1 only


@pytest.mark.parametrize(("args", "message"), [
    (["--image", "broken.png"], "image truncated"),
    (["--image", "missing.png"], "missing.png: no such file"),
    (["--question", "what color is it?"], "give at least one input"),
])
def test_bad_input_exits_2_with_the_reason(models, media, args, message):
    args = [str(media / a) if a.endswith(".png") else a for a in args]
    proc = trimodal("predict", "--model", str(models["teacher"]), *args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_a_missing_model_folder_exits_2(tmp_path, media):
    proc = trimodal("predict", "--model", str(tmp_path / "nothing"), "--image", str(media / "red.png"))
    assert proc.returncode == 2 and "not a saved model folder" in proc.stderr
