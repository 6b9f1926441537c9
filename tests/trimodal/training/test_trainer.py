"""The training loop's data and freezing (trimodal/training/trainer.py): language-only / image batches mixed at a set
share, resumable from a position; filtered record streams; `frozen` prefixes; a stage's job and the folders fit
writes for it. The loop's resume exactness and distributed runs: tests/stages/test_train.py."""
from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tests.shard_fixtures import sharded
from trimodal.params import defaults
from trimodal.training.distributed import World
from trimodal.training.trainer import TrainJob, data_stream, fit, freeze, language_only, with_image

ONE = World(0, 1, torch.device("cpu"))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return str(sharded(tmp_path_factory.mktemp("stream-data"), n=56) / "shards")


def params(shards: str, fraction: float | None):
    p = defaults(["model=deepseek_vl"]).pretrain
    p.shards, p.batch_size, p.shuffle, p.language_fraction = shards, 2, 4, fraction
    return p


def test_language_and_image_batches_mix_at_the_set_share_and_each_holds_only_its_kind(shards):
    drawn = list(itertools.islice(data_stream(params(shards, 0.7), 0, {}, ONE), 200))
    kinds = [all(language_only(m) for m in b["meta"]) for _, b in drawn]
    assert all(all(with_image(m) for m in b["meta"]) for (_, b), lang in zip(drawn, kinds, strict=True) if not lang)
    assert sum(kinds) / len(kinds) == pytest.approx(0.7, abs=0.08)
    assert drawn[-1][1]["language_fraction"] == sum(kinds) / len(kinds)  # the share logged is the one drawn


def test_a_mixed_stream_resumed_from_a_position_continues_exactly(shards):
    p = params(shards, 0.7)
    straight = [b["ids"] for _, b in itertools.islice(data_stream(p, 3, {}, ONE), 40)]
    position, _ = next(itertools.islice(data_stream(p, 3, {}, ONE), 24, None))
    resumed = [b["ids"] for _, b in itertools.islice(data_stream(p, 3, position, ONE), 15)]
    assert resumed == straight[25:40]


def test_a_filtered_stream_takes_only_the_records_it_keeps(shards):
    batches = itertools.islice(data_stream(params(shards, None), 0, {"epoch": 0, "consumed": 0}, ONE, with_image), 30)
    assert all(with_image(m) for _, b in batches for m in b["meta"])


def test_a_share_outside_zero_to_one_is_refused(shards):
    with pytest.raises(ValueError, match="language_fraction"):
        next(data_stream(params(shards, 1.5), 0, {}, ONE))


def test_frozen_prefixes_freeze_exactly_their_parameters_and_a_typo_is_an_error():
    model = nn.ModuleDict({"vision": nn.ModuleDict({"low": nn.Linear(2, 2), "high": nn.Linear(2, 2)}),
                           "adaptor": nn.Linear(2, 2)})
    model.requires_grad_(False)  # a model handed on by an earlier phase: its flags are reset, then frozen anew
    freeze(model, ["vision.high"])
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "vision.low.weight", "vision.low.bias", "adaptor.weight", "adaptor.bias"}
    with pytest.raises(ValueError, match="vision.hgih"):
        freeze(model, ["vision.hgih"])


def test_a_mix_without_enough_records_of_a_kind_names_the_kind_and_the_fix(shards):
    p = params(shards, 1.0)  # language-only batches alone
    p.batch_size = 64  # more than the fixture's language-only train records
    with pytest.raises(ValueError, match=r"language-only records \(text, no image\).*lower the stage's batch_size"):
        list(itertools.islice(data_stream(p, 0, {}, ONE), 10))


def test_a_job_trains_its_stages_section_unless_a_phase_gives_its_own():
    params = defaults()
    job = TrainJob.of(params, "finetune", "abc")
    assert (job.name, job.params, job.trainer, job.seed, job.fingerprint, job.paths) == (
        "finetune", params.finetune, params.trainer, params.seed, "abc", params.paths)
    reward = TrainJob.of(params, "align", "def", dataclasses.replace(params.align, steps=3))
    assert (reward.params.steps, reward.params.lr) == (3, params.align.lr) and params.align.steps != 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.seed = 1  # built once per stage: a phase is a job of its own


def test_a_jobs_checkpoints_are_dvc_yamls_folder_and_a_phase_nests_inside_it():
    params = defaults()
    job = TrainJob.of(params, "pretrain", "abc")
    assert job.checkpoints() == Path(params.paths.checkpoints) / "pretrain"  # dvc.yaml: ${paths.checkpoints}/pretrain
    assert job.checkpoints("warmup") == Path(params.paths.checkpoints) / "pretrain" / "warmup"
    assert (job.desc(), job.desc("warmup")) == ("pretrain", "pretrain/warmup")


class Toy(nn.Module):
    """The least a model needs to be fitted: a config with loss weights, and parameters."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(loss_weights={"mse": 1.0})
        self.w = nn.Linear(1, 1)


def toy_step(model: Toy, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {"mse": model.w(torch.ones(len(batch["ids"]), 1)).pow(2).mean()}


def test_fit_logs_a_phase_under_its_prefix_and_checkpoints_it_inside_the_stages_folder(shards, tmp_path):
    params = defaults()
    p = dataclasses.replace(params.pretrain, shards=shards, steps=2, batch_size=2, checkpoint_every=1, log_every=1,
                            warmup_steps=0, frozen=[], language_fraction=None, modality_dropout=0.0,
                            question_noise=0.0, background_swap=0.0, loss_weights={}, num_workers=0)
    paths = dataclasses.replace(params.paths, metrics=str(tmp_path / "metrics"),
                                checkpoints=str(tmp_path / "checkpoints"))
    job = TrainJob("toy", p, params.trainer, 0, "abc", paths)
    model = fit(Toy(), toy_step, job, phase="warm", summary={"skipped": 3})
    assert isinstance(model, Toy) and not model.training
    folder = tmp_path / "checkpoints" / "toy" / "warm"
    assert (folder / "fingerprint").read_text() == "abc:1:single"  # job.fingerprint, one process
    assert sorted(d.name for d in folder.glob("step-*")) == ["step-00000001", "step-00000002"]
    summary = json.loads((tmp_path / "metrics" / "toy" / "metrics.json").read_text())
    # dvclive nests a logged `warm/mse` under "warm"; the summaries fit adds keep their flat names
    assert summary["step"] == 2 and "mse" in summary["warm"]
    assert (summary["warm/skipped"], summary["warm/trained_parameters"]) == (3, 2)
