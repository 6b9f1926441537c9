"""The DeepSeek-VL family through the DAG's stages, each run as dvc.yaml runs it (`python -m stages.<name>`) from a
params.yaml composed with `model=deepseek_vl`: pretrain (adaptor warm-up, then joint pretraining), instruct, align
(DPO) and distill on two processes sharded per block (FSDP), finetune on two DDP processes, then preferences, quantize
and evaluate, on tiny shards holding every modality subset, audio-only records included."""
import json

import pytest
import yaml

from stages.common.params import write
from tests.shard_fixtures import TINY_DEEPSEEK_VL, sharded
from tests.stage_runner import make_project, run_stage
from trimodal.model.families import saved_family
from trimodal.params import compose

pytestmark = pytest.mark.slow  # every stage run on the DeepSeek-VL family

SHORT = {"steps": 4, "batch_size": 4, "warmup_steps": 1, "log_every": 1, "checkpoint_every": 2, "shuffle": 0}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    data = sharded(tmp_path_factory.mktemp("vl-stage-data"), n=56)  # language-only records on both ranks
    root = make_project(tmp_path_factory.mktemp("vl-stages"))
    values = compose(["model=deepseek_vl"])
    values["model"] = {**values["model"], **TINY_DEEPSEEK_VL}
    for stage in (values["pretrain"], values["pretrain"]["adaptor_warmup"], values["finetune"], values["instruct"],
                  values["align"], values["distill"]):
        stage.update(SHORT, shards=str(data / "shards"))
    values["preferences"]["shards"] = str(data / "shards")
    values["pretrain"]["batch_size"] = 2
    values["distill"]["student"] = {"low_vision": {"hidden_size": 16, "intermediate_size": 32},
                                    "high_vision": {"num_hidden_layers": 1, "global_attn_indexes": [0]},
                                    "text": {"num_hidden_layers": 1, "hidden_size": 24, "intermediate_size": 48}}
    values["quantize"].update(shards=str(data / "shards"), speed_batch_sizes=[], int8_min_features=0)
    values["evaluate"].update(shards=str(data / "shards"), latency_batch_sizes=[1], latency_repeats=2)
    values["paths"].update(shards=str(data / "shards"), tokenizer=str(data / "tokenizer"))
    write(root / "params.yaml", values, ["model=deepseek_vl"])
    # every training stage under torchrun with two processes, sharded per block (FSDP, gloo) but finetune (DDP):
    # pretrain's warm-up shards are gathered into a whole model on every rank and sharded again for joint
    # pretraining; align's frozen reference and distill's teacher are not sharded; rank 0 saves
    two = ("trainer.devices=2", "trainer.strategy=fsdp")
    for stage, overrides in (("pretrain", two), ("finetune", ("trainer.devices=2", "trainer.strategy=ddp")),
                             ("instruct", two), ("preferences", ()), ("align", two), ("distill", two),
                             ("quantize", ()), ("evaluate", ())):
        run_stage(stage, root, *overrides)
    return root


def test_pretrain_warms_the_adaptor_alone_then_trains_the_llm_on_mixed_batches(project):
    metrics = json.loads((project / "metrics/pretrain/metrics.json").read_text())
    warm, joint = metrics["warmup"], metrics
    # warm-up: the LLM frozen, the adaptor trains; joint: the LLM joins it. The recipe freezes the towers too, but
    # these start random (no pretrained folders), so they train in both phases: nothing is frozen in the joint one
    assert metrics["warmup/trained_parameters"] < metrics["trained_parameters"]
    assert metrics["warmup/frozen_parameters"] > 0 and metrics["frozen_parameters"] == 0
    assert metrics["warmup/trained_parameters"] + metrics["warmup/frozen_parameters"] == \
        metrics["trained_parameters"] + metrics["frozen_parameters"]
    assert "lm" in warm and "lm" in joint
    assert 0.0 < joint["language_fraction"] < 1.0  # both kinds of batch were drawn in 4 steps
    assert metrics["train_skipped_audio_only"] > 0 and metrics["train_records"] > metrics["train_skipped_audio_only"]


def test_finetune_and_distill_score_the_records_the_family_reads_and_count_the_skipped(project):
    finetune = json.loads((project / "metrics/finetune.json").read_text())
    assert finetune["train_skipped_audio_only"] > 0
    details = json.loads((project / "metrics/details/finetune.json").read_text())
    assert "audio" not in details and {"image", "text", "overall"} <= set(details)
    distill = json.loads((project / "metrics/details/distill.json").read_text())
    assert distill["student_parameters"] < distill["teacher_parameters"]
    config = json.loads((project / "models/student/config.json").read_text())
    assert config["text"]["num_hidden_layers"] == 1 and config["text"]["hidden_size"] == 24  # distill.student


def test_instruct_and_align_tune_the_family_on_instructions_and_its_own_pairs(project):
    instructed = json.loads((project / "metrics/details/instruct.json").read_text())
    assert {"before", "after"} == set(instructed["held_out"])
    assert "audio" not in instructed["val"]  # audio-only records are not asked anything
    assert json.loads((project / "metrics/instruct.json").read_text())["train_skipped_audio_only"] > 0
    pairs = [json.loads(line) for line in (project / "data/preferences/pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["chosen"] != p["rejected"] for p in pairs)
    assert json.loads((project / "metrics/preferences.json").read_text())["train_unreadable"] > 0  # audio only
    aligned = json.loads((project / "metrics/align.json").read_text())
    assert aligned["method"] == "dpo" and aligned["train_pairs"] == sum(
        1 for p in pairs if p["inputs"] in {m["id"] for m in _train_metas(project)})
    assert saved_family(project / "models/teacher") == "deepseek_vl"


def _train_metas(project):
    from trimodal.data.loader import read_meta

    params = yaml.safe_load((project / "params.yaml").read_text())
    return read_meta(params["paths"]["shards"], "train")


def test_quantize_and_evaluate_ship_and_score_the_family(project):
    quantized = json.loads((project / "metrics/details/quantize.json").read_text())
    assert quantized["round_trip_max_difference"] == 0.0
    for variant in ("teacher", "student", "student-int8"):
        assert saved_family(project / "models" / variant) == "deepseek_vl"
        result = json.loads((project / f"metrics/details/eval/{variant}.json").read_text())
        assert result["family"] == "deepseek_vl" and "audio" not in result["rows"]
        assert "latency_ms_batch1" in result
        assert "image_text_r@1" not in result["rows"]["overall"]  # no contrastive embeddings: no retrieval
        card = (project / "models" / variant / "README.md").read_text()
        assert "DeepSeek-VL" in card
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["model"]["family"] == "deepseek_vl"
