"""trimodal, the library: the model families (trimodal.model, the repository's model/ folder), the data
(trimodal.data: records, media, features, the shard loader, ingest's fetching, the validate gate), training
(trimodal.training), the alignment tasks (trimodal.alignment), evaluation (trimodal.evaluation), serving
(trimodal.serving: the predictor, the OpenAI-compatible server and its demo page), the model registry
(registry.py) and the `trimodal` command (cli.py). The DAG's stages (stages/) and flows (flows/) use it; it never
imports them (tests/test_import_direction.py).

`trimodal.model` is the repository's top-level model/ folder. An installed trimodal (a wheel) holds it as
trimodal/model/ (pyproject.toml's package-dir mapping); in the repository, or installed editable, model/ sits beside
this folder, and the finder below maps `trimodal.model` to it, ahead of any other trimodal on the path.
"""
import os
import sys
from importlib.machinery import ModuleSpec, PathFinder

# backbones and tokenizers load from local folders only: a missing folder must fail at once with its path, not be
# taken for a hub id and retried over the network (set HF_HUB_OFFLINE=0 yourself to allow the hub)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class _ModelFolder:
    """A meta path finder for `trimodal.model` alone: the model/ folder beside this package's folder."""

    def __init__(self, folder: str):
        self.folder = folder

    def find_spec(self, fullname: str, path=None, target=None) -> ModuleSpec | None:
        if fullname != f"{__name__}.model":
            return None
        return PathFinder.find_spec(fullname, [os.path.dirname(self.folder)])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.folder!r})"


def _source_tree_model() -> str | None:
    """model/ beside trimodal/ when this is a source tree (no trimodal/model/ of its own), else None."""
    here = os.path.dirname(os.path.abspath(__file__))
    beside = os.path.join(os.path.dirname(here), "model")
    if os.path.isdir(os.path.join(here, "model")) or not os.path.isfile(os.path.join(beside, "__init__.py")):
        return None
    return beside


_model = _source_tree_model()
if _model is not None and not any(isinstance(f, _ModelFolder) and f.folder == _model for f in sys.meta_path):
    sys.meta_path.insert(0, _ModelFolder(_model))
