"""instruct -> preferences -> align (docs/model.md "Alignment"), each run as dvc.yaml runs it, on the 28-record shard
fixtures: what each writes and measures, the pairs table's contract (yours replaces ours; bad rows quarantined),
DPO and reward model + PPO, and align's exact resume after a kill -9."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch
from safetensors.torch import load_file

from tests.stage_runner import REPO, run_stage
from trimodal.alignment.instructions import TASKS
from trimodal.data.loader import read_meta
from trimodal.params import defaults

pytestmark = pytest.mark.slow  # instruct, preferences and align stage runs

SHORT = ["steps=3", "batch_size=4", "warmup_steps=1", "log_every=1", "checkpoint_every=2", "shuffle=0"]
TEMPLATES = defaults().instructions.templates


@pytest.fixture(scope="module")
def project(aligned_project):
    return aligned_project  # tests/stages/conftest.py


def pairs_of(root):
    return [json.loads(line) for line in (root / "data/preferences/pairs.jsonl").read_text().splitlines()]


def splits_of(root):
    return {m["id"]: split for split in ("train", "val", "test") for m in read_meta(str(root / "data/shards"), split)}


def test_instruct_scores_held_out_templates_before_and_after(project):
    details = json.loads((project / "metrics/details/instruct.json").read_text())
    for when in ("before", "after"):
        scores = details["held_out"][when]
        assert set(scores) - {"mean"} <= set(TASKS) and scores["mean"] is not None
        for task, row in ((t, r) for t, r in scores.items() if t != "mean"):
            assert set(row["templates"]) == set(TEMPLATES[task]["held_out"])  # the held-out ones, only
            assert 0.0 <= row["accuracy"] <= 1.0 and row["n"] > 0
    summary = json.loads((project / "metrics/instruct.json").read_text())
    assert summary["held_out_mean"] == details["held_out"]["after"]["mean"]
    assert summary["held_out_mean_before"] == details["held_out"]["before"]["mean"]
    for task, per in details["cut_prompts"].items():  # the val prompts too long for the decoder, per template
        for template, count in per.items():
            assert template in TEMPLATES[task]["train"] + TEMPLATES[task]["held_out"] and 0 < count["cut"] <= count["n"]
    assert (project / "models/instruct/model.safetensors").exists()
    live = json.loads((project / "metrics/instruct/metrics.json").read_text())
    assert "instruct" in live and "ce" in live  # the instruction turns and the replayed fine-tuning objectives


def test_preferences_are_reproducible_and_held_out_pairs_use_held_out_templates(project, tmp_path):
    pairs, splits = pairs_of(project), splits_of(project)
    assert pairs and all(p["chosen"] != p["rejected"] and p["inputs"] in splits for p in pairs)
    assert {p["source"] for p in pairs} <= {"sample", "corruption"}
    for p in pairs:
        which = "train" if splits[p["inputs"]] == "train" else "held_out"
        if p["task"] == "caption" or p["task"] == "classify":  # the prompt is the template itself
            assert p["prompt"] in TEMPLATES[p["task"]][which], p
    before = (project / "data/preferences/pairs.jsonl").read_bytes()
    run_stage("preferences", project)
    assert (project / "data/preferences/pairs.jsonl").read_bytes() == before
    counts = json.loads((project / "metrics/preferences.json").read_text())
    assert counts["train_pairs"] == sum(splits[p["inputs"]] == "train" for p in pairs)


def test_dpo_measures_held_out_pairs_and_task_scores_before_and_after(project):
    metrics = json.loads((project / "metrics/align.json").read_text())
    assert metrics["method"] == "dpo" and metrics["quarantined_pairs"] == 0
    assert metrics["held_out_pairs"] == sum(1 for p in pairs_of(project) if splits_of(project)[p["inputs"]] == "val")
    assert 0.0 <= metrics["preference_accuracy"] <= 1.0 and 0.0 <= metrics["preference_accuracy_before"] <= 1.0
    details = json.loads((project / "metrics/details/align.json").read_text())
    scores = details["tasks"]["scores"]
    assert scores["vqa_accuracy"]["before"] == json.loads(
        (project / "metrics/details/instruct.json").read_text())["val"]["overall"]["vqa_accuracy"]
    drops = [100 * (v["before"] - v["after"]) for k, v in scores.items()
             if k in ("vqa_accuracy", "cls_accuracy", "cls_macro_f1", "caption_exact")]
    assert metrics["max_task_drop"] == pytest.approx(max(drops))
    live = json.loads((project / "metrics/align/metrics.json").read_text())
    assert {"dpo", "reward_margin", "reward_accuracy"} <= set(live)
    report = (project / "reports/alignment.md").read_text()  # the before / after tables
    assert f"| overall | {metrics['held_out_pairs']} |" in report and "Largest fall of an accuracy" in report


def copy_project(project, root):
    for folder in ("data/shards", "models/instruct", "metrics/details"):
        shutil.copytree(project / folder, root / folder)
    shutil.copy(project / "params.yaml", root / "params.yaml")
    return root


def test_your_own_table_replaces_ours_and_its_bad_rows_are_quarantined_with_reasons(project, tmp_path):
    root = copy_project(project, tmp_path / "mine")
    train = [i for i, s in splits_of(project).items() if s == "train"]
    good = [{"id": f"p{k}", "inputs": i, "prompt": "What colour is it?", "chosen": "red", "rejected": "blue"}
            for k, i in enumerate(train[:4])]
    row = {"prompt": "p", "chosen": "a", "rejected": "b"}
    bad = [json.dumps({**row, "id": "x", "inputs": "no-such-record"}),
           json.dumps({**row, "id": "y", "inputs": train[0], "chosen": "same", "rejected": "same "}),
           "not json", '["a list"]', json.dumps({**row, "id": "p0", "inputs": train[1]})]
    table = tmp_path / "mine.jsonl"
    table.write_text("\n".join([*(json.dumps(g) for g in good), *bad]) + "\n")
    run_stage("align", root, *[f"align.{s}" for s in SHORT], f"align.pairs={table}")
    metrics = json.loads((root / "metrics/align.json").read_text())
    assert metrics["train_pairs"] == 4 and metrics["quarantined_pairs"] == 5
    reasons = [q["reason"] for q in json.loads((root / "metrics/details/align.json").read_text())["quarantined"]]
    assert any("not a record of the shards" in r for r in reasons) and any("same response" in r for r in reasons)
    assert any("appears twice" in r for r in reasons) and any(r.startswith("not JSON") for r in reasons)
    table.write_text("\n".join(bad[:-1]) + "\n")  # p0 alone would be a usable pair here
    refused = run_stage("align", root, *[f"align.{s}" for s in SHORT], f"align.pairs={table}", check=False)
    assert refused.returncode != 0 and "no usable pair" in refused.stderr and "4 rows quarantined" in refused.stderr


def test_ppo_trains_a_reward_model_then_the_policy_on_its_own_samples(project, tmp_path):
    root = copy_project(project, tmp_path / "ppo")
    shutil.copytree(project / "data/preferences", root / "data/preferences")
    run_stage("align", root, *[f"align.{s}" for s in SHORT], "align.method=ppo", "align.ppo.reward_steps=2",
              "align.ppo.max_new_tokens=4")
    live = json.loads((root / "metrics/align/metrics.json").read_text())
    assert {"reward", "reward_accuracy"} <= set(live["reward"]) and {"ppo", "mean_reward", "kl"} <= set(live["ppo"])
    metrics = json.loads((root / "metrics/align.json").read_text())
    assert metrics["method"] == "ppo"
    details = json.loads((root / "metrics/details/align.json").read_text())
    assert details["held_out_pairs"]["reward_model"]["pairs"] == metrics["held_out_pairs"]
    refused = run_stage("align", root, "align.method=ppo", "trainer.devices=2", "trainer.strategy=fsdp", check=False)
    assert refused.returncode != 0 and "trainer.strategy=ddp" in refused.stderr


def test_align_killed_then_rerun_is_bit_identical_to_an_uninterrupted_run(project, tmp_path):
    overrides = ["align.steps=8", "align.checkpoint_every=4", "align.batch_size=4", "align.shuffle=0"]
    straight = copy_project(project, tmp_path / "straight")
    shutil.copytree(project / "data/preferences", straight / "data/preferences")
    run_stage("align", straight, *overrides)
    killed = copy_project(project, tmp_path / "killed")
    shutil.copytree(project / "data/preferences", killed / "data/preferences")
    proc = subprocess.Popen([sys.executable, "-m", "stages.align", *overrides], cwd=killed,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not list((killed / "checkpoints/align").glob("step-00000004")):
        assert proc.poll() is None and time.time() < deadline, "align ended before step 4 was checkpointed"
        time.sleep(0.02)
    family = [proc, *psutil.Process(proc.pid).children(recursive=True)]
    for member in family:
        member.send_signal(signal.SIGKILL)
    proc.wait()
    assert "resuming from" in run_stage("align", killed, *overrides).stdout
    a, b = (load_file(root / "models/teacher/model.safetensors") for root in (straight, killed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
