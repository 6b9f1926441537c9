"""pyproject.toml lists every library package (model/ is installed as trimodal.model by its package-dir mapping;
stages/ and flows/ stay in the repository), and `trimodal.model` is model/ when run from the repository."""
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package_folder():
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"] == {"trimodal.model": "model"}
    folders = set()
    for root in ("trimodal", "model"):
        for init in (REPO / root).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO).parts
            folders.add(".".join(["trimodal", *parts] if parts[0] == "model" else parts))
    assert sorted(tool["packages"]) == sorted(folders)


def test_trimodal_model_is_the_repository_model_folder():
    code = "import trimodal.model.layers as m, trimodal.model as p; print(m.__file__); print(p.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(REPO / "model" / "layers.py"), str(REPO / "model" / "__init__.py")]
