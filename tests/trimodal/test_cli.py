"""`trimodal predict` on an image, a sound and a text: the console script pyproject installs once (a process costs
~5 s of imports), then its `main` in this process."""
import json
import subprocess
from pathlib import Path

import pytest

from tests.trimodal.conftest import TRIMODAL, png, wav
from trimodal.cli import main


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


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_predict_answers_about_an_image_an_audio_file_and_a_text(models, media, capsys):
    runs = {"image": ["--image", str(media / "red.png")], "audio": ["--audio", str(media / "tone.wav")],
            "text": ["--text", "there is a red circle 3"]}
    for modality, given in runs.items():
        code, stdout, stderr = run_main(capsys, "predict", "--model", str(models["student-int8"]), *given,
                                        "--question", "what color is it?", "--json")
        assert code == 0, stderr
        out = json.loads(stdout)
        assert out["inputs"] == [modality] and out["answer"] == "red" and out["caption"]
        assert len(out["labels"]) == 2 and out["labels"][0]["probability"] >= out["labels"][1]["probability"]


@pytest.mark.slow
def test_predict_prints_a_readable_answer(models, media):
    proc = trimodal("predict", "--model", str(models["teacher"]), "--image", str(media / "red.png"),
                    "--question", "what color is it?", "--top-k", "1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "inputs:   image" and lines[1].startswith("caption:  ") and lines[2] == "answer:   red"
    assert lines[3].startswith("labels:   ") and lines[3].count(",") == 0  # top-1 only


@pytest.mark.slow
@pytest.mark.parametrize(("args", "message"), [
    (["--image", "broken.png"], "image truncated"),
    (["--image", "missing.png"], "missing.png: no such file"),
    (["--question", "what color is it?"], "give at least one input"),
])
def test_bad_input_exits_2_with_the_reason(models, media, capsys, args, message):
    args = [str(media / a) if a.endswith(".png") else a for a in args]
    code, _, stderr = run_main(capsys, "predict", "--model", str(models["teacher"]), *args)
    assert code == 2 and stderr.startswith("trimodal predict: ") and message in stderr


def test_a_missing_model_folder_exits_2(tmp_path, media, capsys):
    code, _, stderr = run_main(capsys, "predict", "--model", str(tmp_path / "nothing"), "--image",
                               str(media / "red.png"))
    assert code == 2 and "not a saved model folder" in stderr


@pytest.mark.slow
def test_the_console_script_exits_2_on_bad_input_without_a_traceback(models, media):
    proc = trimodal("predict", "--model", str(models["teacher"]), "--image", str(media / "broken.png"))
    assert proc.returncode == 2 and "image truncated" in proc.stderr and "Traceback" not in proc.stderr


def test_a_params_yaml_that_does_not_fit_the_schema_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    """`trimodal promote` reads params.yaml through the schema, `trimodal report` its paths."""
    params = (Path(__file__).resolve().parents[2] / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(params.replace("max_pixels: 40000000", "max_pixels: abc"))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run_main(capsys, "promote")
    assert (code, stderr) == (2, f"{Path.cwd() / 'params.yaml'}: validate.max_pixels: expected int, got 'abc'\n")
    (tmp_path / "params.yaml").write_text("paths: [\n")
    code, _, stderr = run_main(capsys, "report")
    assert (code, stderr) == (2, "trimodal report: params.yaml has no readable paths section: `python -m "
                                 "stages.common.params write` rewrites it from conf/\n")
