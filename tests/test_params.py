"""conf/ is the one source of parameter values; params.yaml is its Hydra composition (what `dvc exp run` would
write), checked, and fits the typed schema."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.dvc_stages import ParamsDiverged, apply_overrides
from stages.common.params import check, write
from trimodal.params import Params, compose, defaults, load_params

REPO = Path(__file__).resolve().parents[1]


def test_params_yaml_equals_hydra_composition_of_conf():
    assert check(REPO / "params.yaml", (), REPO / "conf") == []  # on failure: the diverging keys, both values
    assert (REPO / "params.yaml").read_text().startswith("# GENERATED from conf/")


def test_params_load_typed_and_overrides_apply():
    params = load_params(REPO / "params.yaml", ["ingest.retries=5", "data.sources=[a.csv,b.jsonl]"])
    assert isinstance(params, Params)
    assert params.ingest.retries == 5 and params.data.sources == ["a.csv", "b.jsonl"]


@pytest.mark.parametrize("override", ["ingest.retries=many", "ingest.no_such_key=1"])
def test_bad_params_fail_loudly(override):
    with pytest.raises(Exception) as e:
        load_params(REPO / "params.yaml", [override])
    assert "retries" in str(e.value) or "no_such_key" in str(e.value)


def test_conf_is_the_only_place_values_live():
    with pytest.raises(TypeError):
        Params()  # the schema holds no defaults to disagree with conf/
    assert defaults().finetune.steps == yaml.safe_load((REPO / "conf/finetune/default.yaml").read_text())["steps"]
    assert defaults(["model=small"]).model["d_model"] != defaults().model["d_model"]


def test_a_hand_edit_of_params_yaml_is_named_and_refused(tmp_path):
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    write(tmp_path / "params.yaml", compose((), tmp_path / "conf"))
    assert check(tmp_path / "params.yaml", (), tmp_path / "conf") == []
    edited = (tmp_path / "params.yaml").read_text().replace("max_pixels: 40000000", "max_pixels: 1")
    (tmp_path / "params.yaml").write_text(edited)
    assert check(tmp_path / "params.yaml", (), tmp_path / "conf") == [
        "validate.max_pixels: conf/ has 40000000, params.yaml has 1"]
    with pytest.raises(ParamsDiverged, match="validate.max_pixels"):  # a flow run would otherwise drop the edit
        apply_overrides(tmp_path, ["pretrain.steps=3"])
    proc = subprocess.run([sys.executable, "-m", "stages.common.params", "check"], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "agrees" in proc.stdout  # the repository's own params.yaml


def test_flow_overrides_compose_from_conf_and_name_themselves(tmp_path):
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    write(tmp_path / "params.yaml", compose((), tmp_path / "conf"))
    params = apply_overrides(tmp_path, ["pretrain.steps=3", "model=small"])
    assert params["pretrain"]["steps"] == 3 and load_params(tmp_path / "params.yaml").pretrain.steps == 3
    assert "# overrides: pretrain.steps=3 model=small" in (tmp_path / "params.yaml").read_text()
    assert check(tmp_path / "params.yaml", None, tmp_path / "conf") == []  # a composition, by its own record
    # a second call (the ingest flow after a train run in one folder) keeps the first's overrides, later wins
    again = apply_overrides(tmp_path, ["pretrain.steps=5", "data.sources=[data/sources/x.csv]"])
    assert again["pretrain"]["steps"] == 5 and again["model"] == params["model"] != compose()["model"]
    assert again["data"]["sources"] == ["data/sources/x.csv"]


def test_a_missing_value_fails_loudly(tmp_path):
    values = compose()
    del values["validate"]["max_pixels"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(Exception, match="max_pixels"):
        load_params(tmp_path / "params.yaml")
