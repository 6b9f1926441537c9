"""The wheel works anywhere: built from this checkout, it holds the library alone (trimodal/, model/ as
trimodal.model, the demo page, the `trimodal` command); installed with its dependencies (the lock's versions, torch
the local CPU wheel, as infra/setup.sh installs them) into a fresh virtualenv outside the repository, it answers
`trimodal predict` and `trimodal serve` from a saved model folder, with no stages/, flows/, model/ or conf/ in reach."""
import base64
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.trimodal.conftest import png, start_server, stop_server

pytestmark = pytest.mark.slow  # a build, an install of ~250 packages (from uv's cache) and three processes

REPO = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).with_name("uv")  # the lock's uv (the dev extra), as infra/setup.sh uses it
QUESTION = "what color is it?"
# what the fresh environment sees of this one: nothing that points back into the repository
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def run(args: list, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300,
                          **kwargs)


def checked(args: list, cwd: Path) -> str:
    proc = run(args, cwd)
    assert proc.returncode == 0, f"{args[:3]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of this checkout's files (tracked and new, not ignored), built in a copy: a build leaves build/
    and *.egg-info in its source folder."""
    source, dist = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    files = checked(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], REPO).split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():  # a file deleted but not yet committed is still listed
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    checked([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, source],
            source)
    [built] = dist.glob("trimodal-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtualenv outside the repository with the wheel and its dependencies; returns its bin/."""
    root = tmp_path_factory.mktemp("venv")
    checked([sys.executable, "-m", "venv", "--without-pip", root], root)
    assert UV.is_file(), f"{UV} is missing: run infra/setup.sh"
    # the lock constrains the resolve to its versions (all in uv's cache); pip-sources.sh adds pip's find-links,
    # where the CPU torch lies (uv reads no pip.conf)
    install = ('. infra/pip-sources.sh && pip_sources "$1" && '
               '"$2" pip install -q --python "$3" "${UV_SOURCES[@]}" -c infra/requirements.lock "$4"')
    checked(["bash", "-c", install, "install", sys.executable, UV, root / "bin/python", wheel], REPO)
    return root / "bin"


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory, models) -> Path:
    """A working folder outside the repository holding a red image and two copies of the INT8 student's folder:
    student-int8 as saved, and strict, whose recorded limits its 40x30 image does not pass."""
    root = tmp_path_factory.mktemp("elsewhere")
    (root / "red.png").write_bytes(png())
    shutil.copytree(models["student-int8"], root / "student-int8")
    strict = shutil.copytree(models["student-int8"], root / "strict")
    config = json.loads((strict / "config.json").read_text())
    assert config["media_limits"]["min_side"] < 30  # the fixture's validate limits: the red image passes them
    config["media_limits"]["min_side"] = 31
    (strict / "config.json").write_text(json.dumps(config))
    return root


def test_the_wheel_holds_the_library_alone(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"trimodal", wheel.name.split("-py3")[0] + ".dist-info"}
    assert {"trimodal/serving/page.html", "trimodal/model/families.py", "trimodal/data/limits.py"} <= set(names)
    entry_points = zipfile.ZipFile(wheel).read(f"{wheel.name.split('-py3')[0]}.dist-info/entry_points.txt").decode()
    assert "trimodal = trimodal.cli:main" in entry_points


PROBE = """
import importlib.util, json, types
import trimodal, trimodal.model, trimodal.params
from trimodal.data.limits import model_limits

try:  # a folder saved before its limits were recorded, with no conf/ to stand in
    model_limits(types.SimpleNamespace(), "old-model")
    refused = None
except FileNotFoundError as e:
    refused = str(e)
print(json.dumps({"missing": [m for m in ("stages", "flows", "model") if importlib.util.find_spec(m) is None],
                  "conf": trimodal.params.CONF_DIR.exists(), "files": [trimodal.__file__, trimodal.model.__file__],
                  "refused": refused}))
"""


def test_nothing_of_the_repository_is_in_reach(venv, elsewhere):
    seen = json.loads(checked([venv / "python", "-c", PROBE], elsewhere))
    assert seen["missing"] == ["stages", "flows", "model"] and seen["conf"] is False
    site = venv.parent / "lib"
    assert all(Path(f).is_relative_to(site) for f in seen["files"]), seen["files"]
    assert seen["refused"].startswith("old-model/config.json has no media_limits")
    assert "\n" not in seen["refused"]


def test_predict_answers_from_the_folder_alone(venv, elsewhere):
    out = json.loads(checked([venv / "trimodal", "predict", "--model", "student-int8", "--image", "red.png",
                              "--question", QUESTION, "--json"], elsewhere))
    assert out["inputs"] == ["image"] and out["answer"] == "red" and out["caption"]
    assert len(out["labels"]) == 2 and out["labels"][0]["probability"] >= out["labels"][1]["probability"]


def test_serve_answers_an_openai_request_within_each_folders_limits(venv, elsewhere):
    folders = {name: elsewhere / name for name in ("student-int8", "strict")}
    proc, base = start_server(folders, program=str(venv / "trimodal"), cwd=elsewhere, env=ENV)
    try:
        image = "data:image/png;base64," + base64.b64encode(png()).decode()
        replies = {model: httpx.post(f"{base}/v1/chat/completions", timeout=60, json={
            "model": model, "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": QUESTION}]}]})
            for model in folders}
        page = httpx.get(f"{base}/", timeout=10)
    finally:
        stop_server(proc)
    assert replies["student-int8"].status_code == 200, replies["student-int8"].text
    body = replies["student-int8"].json()
    assert body["object"] == "chat.completion" and body["model"] == "student-int8"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "red"}
    assert body["trimodal"]["inputs"] == ["image"] and body["trimodal"]["answer"] == "red"
    # the strict folder's own limits, not a default: validate's reason, as the pipeline would quarantine it
    assert replies["strict"].status_code == 400
    assert replies["strict"].json()["error"]["message"] == "image too small: 40x30, smallest side must be >= 31"
    assert page.status_code == 200 and "<html" in page.text.lower()  # the demo page is package data
