"""params.yaml is the Hydra composition of conf/ (what `dvc exp run` would write) and fits the typed schema."""
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from stages.common.params import Params, load_params

REPO = Path(__file__).resolve().parents[1]


def test_params_yaml_equals_hydra_composition_of_conf():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        composed = OmegaConf.to_container(compose(config_name="config"), resolve=True)
    assert composed == yaml.safe_load((REPO / "params.yaml").read_text())


def test_params_load_typed_and_overrides_apply():
    params = load_params(REPO / "params.yaml", ["ingest.retries=5", "data.sources=[a.csv,b.jsonl]"])
    assert isinstance(params, Params)
    assert params.ingest.retries == 5 and params.data.sources == ["a.csv", "b.jsonl"]


@pytest.mark.parametrize("override", ["ingest.retries=many", "ingest.no_such_key=1"])
def test_bad_params_fail_loudly(override):
    with pytest.raises(Exception) as e:
        load_params(REPO / "params.yaml", [override])
    assert "retries" in str(e.value) or "no_such_key" in str(e.value)
