"""The validate stage's decoding limits, carried with the data into every model trained on it.

validate writes them beside its output (validated/limits.json), shard copies them into the shards' index.json, and
pretrain into the model's config (config.json `media_limits`, beside the feature sizes), which every later stage
keeps. So a saved model folder alone tells `trimodal predict` and `trimodal serve` which files to refuse, with the
reasons its training data was quarantined for, wherever it is installed: no conf/ needed.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from trimodal.atomic import write_json
from trimodal.params import CONF_DIR, ValidateParams

FILE = "limits.json"  # in the validate stage's output folder
KEY = "media_limits"  # in the shards' index.json and a model's config.json


@dataclass(frozen=True)
class MediaLimits:
    min_side: int  # smallest image side (pixels)
    max_pixels: int  # decompression-bomb limit
    max_seconds: float  # longer audio is cropped

    @classmethod
    def of(cls, validate: ValidateParams) -> MediaLimits:
        return cls(validate.min_side, validate.max_pixels, validate.max_seconds)

    @classmethod
    def from_dict(cls, values: dict, where: str) -> MediaLimits:
        names = [f.name for f in fields(cls)]
        if not isinstance(values, dict) or sorted(values) != sorted(names):
            raise ValueError(f"{where}: {KEY} must hold exactly {', '.join(names)}, got {values!r}")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


def write(validated_dir: Path, limits: MediaLimits) -> None:
    write_json(Path(validated_dir) / FILE, limits.to_dict())


def read(validated_dir: Path) -> MediaLimits:
    """The limits validate wrote into `validated_dir`."""
    path = Path(validated_dir) / FILE
    return MediaLimits.from_dict(json.loads(path.read_text()), str(path))


def model_limits(config, model_dir: Path | str) -> MediaLimits:
    """The limits a saved model's data was validated with (its config's `media_limits`). A folder saved before
    they were recorded is read with conf/validate's when the repository's conf/ is here; anywhere else it is an
    error naming the file, never a guess."""
    values = getattr(config, KEY, None)
    config_json = Path(model_dir) / "config.json"
    if values is not None:
        return MediaLimits.from_dict(values, str(config_json))
    if (CONF_DIR / "config.yaml").is_file():
        from trimodal.params import defaults

        return MediaLimits.of(defaults().validate)  # one Hydra composition (~0.25 s)
    raise FileNotFoundError(f"{config_json} has no {KEY} (the validate limits its data passed; folders saved "
                            f"before they were recorded lack them): retrain it with `dvc repro`, or run from the "
                            f"repository, whose conf/validate then gives them")
