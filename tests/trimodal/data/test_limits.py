"""The validate limits a model folder carries: written beside the validated data, kept in a saved config, read back
by predict and serve; a folder without them is an error naming the file where no conf/ can stand in."""
import json

import pytest

from trimodal.data import limits
from trimodal.data.limits import MediaLimits, model_limits
from trimodal.model.families import build_config, read_preset
from trimodal.model.trimodal.configuration import TrimodalConfig
from trimodal.params import defaults

STRICT = MediaLimits(min_side=31, max_pixels=5000, max_seconds=2.5)


def test_written_atomically_beside_the_data_and_read_back(tmp_path):
    limits.write(tmp_path, STRICT)
    assert json.loads((tmp_path / "limits.json").read_text()) == {"min_side": 31, "max_pixels": 5000,
                                                                   "max_seconds": 2.5}
    assert [p.name for p in tmp_path.iterdir()] == ["limits.json"]  # no temp file left beside it
    assert limits.read(tmp_path) == STRICT


@pytest.mark.parametrize("settings", [{}, read_preset("deepseek_vl")])
def test_a_saved_config_keeps_them_for_either_family(tmp_path, settings):
    # what pretrain does with the shards' index.json: the family's config built with them
    config = build_config(settings, **{limits.KEY: STRICT.to_dict()})
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())[limits.KEY] == STRICT.to_dict()
    assert model_limits(type(config).from_pretrained(tmp_path), tmp_path) == STRICT


def test_a_folder_without_them_outside_the_repository_is_one_line_naming_its_config(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "CONF_DIR", tmp_path / "no-conf")  # as installed from the wheel: no conf/
    with pytest.raises(FileNotFoundError) as caught:
        model_limits(TrimodalConfig(), tmp_path / "old-model")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'old-model' / 'config.json'} has no media_limits") and "\n" not in message


def test_in_the_repository_an_older_folder_gets_conf_validates_limits(tmp_path):
    assert model_limits(TrimodalConfig(), tmp_path) == MediaLimits.of(defaults().validate)


def test_limits_of_the_wrong_shape_are_named():
    with pytest.raises(ValueError, match=r"x/config.json: media_limits must hold exactly min_side, max_pixels"):
        MediaLimits.from_dict({"min_side": 16}, "x/config.json")
