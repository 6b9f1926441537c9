"""distill -> quantize -> evaluate on tiny shards, each run as dvc.yaml runs it; plus the student's init. Then the
same models under real git and DVC: the files dvc.yaml declares, the model cards evaluate writes (DVC stays clean),
`dvc metrics show`, and `trimodal promote` (first promotion, a better model, a worse one refused)."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from dvc.repo import Repo
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from stages.distill import init_from_teacher, student_config
from tests.shard_fixtures import TINY_MODEL
from tests.stage_runner import make_project, run_stage
from tests.test_pipeline_e2e import clone_worktree, dvc, set_params
from trimodal.cards import CARD
from trimodal.data.limits import MediaLimits
from trimodal.data.loader import read_meta
from trimodal.evaluation.baselines import majority
from trimodal.evaluation.scoring import SUBSETS, headline, subset_name
from trimodal.model.quantization import WEIGHTS, load_int8
from trimodal.model.trimodal.configuration import TrimodalConfig
from trimodal.model.trimodal.modeling import TrimodalForConditionalGeneration
from trimodal.params import defaults
from trimodal.registry import PromoteError, production_version, promote

MODEL = TINY_MODEL
SHORT = ["steps=3", "batch_size=4", "warmup_steps=1", "log_every=1", "checkpoint_every=2", "shuffle=0"]


@pytest.fixture(scope="module")
def project(aligned_project, tmp_path_factory):
    """A copy of tests/stages/conftest.py's project (the teacher out of finetune -> instruct -> preferences ->
    align): these tests run stages in it, and test_alignment_stages reads the original meanwhile."""
    return Path(shutil.copytree(aligned_project, tmp_path_factory.mktemp("post-training") / "project"))


@pytest.mark.slow
def test_each_training_stage_sets_its_own_loss_weights(project):
    pretrained = json.loads((project / "models/pretrain/config.json").read_text())["loss_weights"]
    teacher = json.loads((project / "models/teacher/config.json").read_text())["loss_weights"]
    assert pretrained["itc"] == pretrained["vac"] == 0.1 and teacher["itc"] == teacher["vac"] == 0.1  # params.yaml
    run_stage("pretrain", project, *MODEL, *[f"pretrain.{s}" for s in SHORT], "pretrain.loss_weights.itc=1.0")
    assert json.loads((project / "models/pretrain/config.json").read_text())["loss_weights"]["itc"] == 1.0
    proc = run_stage("finetune", project, *[f"finetune.{s}" for s in SHORT], "finetune.loss_weights.bogus=1.0",
                     check=False)
    assert proc.returncode != 0 and "bogus" in proc.stderr


@pytest.mark.slow
def test_distill_quantize_evaluate_write_their_artifacts(project):
    run_stage("distill", project, *[f"distill.{s}" for s in SHORT])
    distilled = json.loads((project / "metrics/details/distill.json").read_text())
    assert distilled["student_parameters"] <= 0.5 * distilled["teacher_parameters"]
    summary = json.loads((project / "metrics/distill.json").read_text())  # what `dvc metrics show` lists
    assert summary == {**headline(distilled["student"]["overall"]), "parameters": distilled["student_parameters"]}
    assert {"cls_accuracy", "vqa_accuracy"} <= set(distilled["student"]["overall"])
    assert not list((project / "checkpoints/distill").glob("step-*"))

    run_stage("quantize", project, "quantize.speed_batch_sizes=[]",  # every Linear INT8 but the fragile ones
              "quantize.int8_min_features=0")
    quantized = json.loads((project / "metrics/details/quantize.json").read_text())
    assert quantized["round_trip_max_difference"] == 0.0
    assert quantized["int8_bytes"] < 0.4 * quantized["fp32_bytes"]
    summary = json.loads((project / "metrics/quantize.json").read_text())
    assert summary["size_bytes"] == quantized["int8_bytes"] and summary["linear_fp32"] == len(quantized["kept_fp32"])
    assert not list((project / "models/student-int8").glob("*.bin"))  # safetensors only, nothing pickled
    # the sweep covers every INT8 Linear and every one kept in float, most fragile first
    sweep = quantized["sensitivity"]
    assert len(sweep) == quantized["linear_int8"] + len(quantized["kept_fp32"])
    assert [r["kl"] for r in sweep] == sorted((r["kl"] for r in sweep), reverse=True)
    assert {r["linear"] for r in sweep if r["fp32"]} == set(quantized["kept_fp32"])
    acc = quantized["val_accuracy"]
    assert acc["fp32"] - acc["int8"] <= 0.0 or len(quantized["kept_fp32"]) == 8  # the keep rule's two exits
    assert quantized["speed"] == [] and quantized["latency"] == {} and quantized["kept_fp32_narrow"] == []
    # every model folder carries the validate limits its data passed (shard's index.json), for predict and serve
    limits = json.loads((project / PATHS.shards / "index.json").read_text())["media_limits"]
    assert limits == MediaLimits.of(defaults().validate).to_dict()
    for folder in ("pretrained", "finetuned", "instructed", "teacher", "student", "student_int8"):
        assert json.loads((project / getattr(PATHS, folder) / "config.json").read_text())["media_limits"] == limits


@pytest.mark.slow
def test_quantize_computes_narrow_linears_in_float_measures_speed_and_is_deterministic(project):
    if not (project / "models/student").exists():
        run_stage("distill", project, *[f"distill.{s}" for s in SHORT])
    run_stage("quantize", project, "quantize.speed_repeats=3", "quantize.int8_min_features=48")
    quantized = json.loads((project / "metrics/details/quantize.json").read_text())
    student = TrimodalForConditionalGeneration.from_pretrained(project / "models/student")
    fragile = quantized["kept_fp32_fragile"]
    linears = {n: m for n, m in student.named_modules() if type(m) is torch.nn.Linear and n not in fragile}
    narrow = [n for n, m in linears.items() if min(m.in_features, m.out_features) < 48]
    assert narrow and quantized["kept_fp32_narrow"] == narrow and quantized["kept_fp32"] == fragile + narrow
    assert any(linears[n].in_features >= 48 for n in narrow)  # narrow on the output side only, e.g. the classes
    model = load_int8(project / "models/student-int8")
    assert quantized["linear_int8"] == sum(not r["fp32"] for r in quantized["speed"]) > 0  # the wide ones
    for row in quantized["speed"]:
        assert (type(model.get_submodule(row["linear"])) is torch.nn.Linear) == row["fp32"]
    head = next(r for r in quantized["speed"] if r["linear"] == "decoder.lm_head")
    assert head["calls_batch1"] >= 12 and head["calls_batch32"] == head["calls_batch1"]  # one per greedy token
    slower = [r["linear"] for r in quantized["speed"] if any(
        r[f"int8_ms_{w}"] > r[f"float_ms_{w}"] for w in ("batch1", "batch32") if r[f"calls_{w}"])]
    assert sorted(quantized["slower_in_int8"]) == sorted(slower)
    assert set(quantized["latency"]) == {"fp32", "int8_all", "shipped"}
    assert all(ms["ms_batch1"] > 0 and ms["ms_batch32"] > 0 for ms in quantized["latency"].values())
    # timings differ from run to run, the artifact does not
    first = {p.name: p.read_bytes() for p in (project / "models/student-int8").glob("*.json")}
    weights = load_file(project / "models/student-int8" / WEIGHTS)
    run_stage("quantize", project, "quantize.speed_repeats=3", "quantize.int8_min_features=48")
    assert {p.name: p.read_bytes() for p in (project / "models/student-int8").glob("*.json")} == first
    again = load_file(project / "models/student-int8" / WEIGHTS)
    assert again.keys() == weights.keys() and all(torch.equal(again[k], weights[k]) for k in weights)


@pytest.mark.slow
def test_quantize_keeps_the_most_fragile_linears_in_float_when_asked(project):
    if not (project / "models/student").exists():
        run_stage("distill", project, *[f"distill.{s}" for s in SHORT])
    run_stage("quantize", project, "quantize.max_val_drop=-1", "quantize.max_fp32_linears=3",  # never close enough
              "quantize.speed_batch_sizes=[]", "quantize.int8_min_features=0")
    quantized = json.loads((project / "metrics/details/quantize.json").read_text())
    fragile = [r["linear"] for r in quantized["sensitivity"][:3]]
    assert quantized["kept_fp32"] == fragile
    model = load_int8(project / "models/student-int8")
    assert all(type(model.get_submodule(name)) is torch.nn.Linear for name in fragile)
    sweep = json.loads((project / "models/student-int8/sensitivity.json").read_text())
    assert sweep["kept_fp32"] == fragile

    run_stage("evaluate", project, "evaluate.latency_repeats=2", "evaluate.split=val")
    for variant in ("teacher", "student", "student-int8", "baselines"):
        assert (project / f"metrics/details/eval/{variant}.json").exists()
    for name in ("teacher", "student", "student-int8", "majority", "question_prior", "random_ranking"):
        assert (project / f"metrics/eval/{name}.json").exists()  # the headlines `dvc metrics show` lists
    scores = json.loads((project / "metrics/details/eval/student-int8.json").read_text())
    rows = scores["rows"]
    for key in ("vqa_accuracy", "cls_accuracy", "cls_macro_f1", "bleu4", "bleu2", "rouge_l", "cider", "perplexity",
                "image_noise_cls_accuracy", "n", "few"):
        assert key in rows["overall"], key
    for key in ("latency_ms_batch1", "latency_ms_batch32", "size_bytes", "parameters"):
        assert key in scores, key
    for size in (1, 32):  # INT8 against the FP32 student, per round: quartiles in order around the median
        ratio = scores[f"latency_ratio_batch{size}"]
        assert 0 < ratio["q1"] <= ratio["median"] <= ratio["q3"]
    assert "latency_ratio_batch32" in json.loads((project / "metrics/details/eval/student.json").read_text())
    assert "INT8 latency not above FP32 student (batch1; per-round ratio" in (project / "reports/report.md").read_text()
    # the subsets partition the records: counts add up and the overall accuracy is their n-weighted mean
    val = [m for m in read_meta(str(project / "data/shards"), "val")]
    subsets = {k: v for k, v in rows.items() if k in SUBSETS}
    assert rows["overall"]["n"] == len(val) == sum(v["n"] for v in subsets.values())
    assert all(v["few"] == (v["n_scored"] < 20) for v in rows.values())
    labelled = {k: sum(1 for m in val if subset_name(m["modalities"]) == k and m.get("label_index", -1) >= 0)
                for k in subsets}
    assert rows["overall"]["cls_accuracy"] == pytest.approx(
        sum(subsets[k]["cls_accuracy"] * labelled[k] for k in subsets if labelled[k]) / sum(labelled.values()))
    # the majority baseline is the train split's most frequent label, scored on the val records
    baselines = json.loads((project / "metrics/details/eval/baselines.json").read_text())
    top = majority(m.get("label_index", -1) for m in read_meta(str(project / "data/shards"), "train"))
    hits = [m["label_index"] == top for m in val if m.get("label_index", -1) >= 0]
    assert baselines["majority"]["rows"]["overall"]["cls_accuracy"] == pytest.approx(sum(hits) / len(hits))
    assert baselines["majority"]["train_records"] == len(read_meta(str(project / "data/shards"), "train"))
    report = (project / "reports/report.md").read_text()
    assert "| metric | teacher | student | student-int8 | majority | question prior | random ranking |" in report
    assert "## Per modality subset" in report and "## Targets" in report and "nrefs:1" in report
    assert (project / "metrics/eval/plots/scores.csv").read_text().startswith("variant,metric,value")


@pytest.mark.slow
def test_quantize_prunes_before_quantizing(project, tmp_path):
    if not (project / "models/student").exists():
        run_stage("distill", project, *[f"distill.{s}" for s in SHORT])
    run_stage("quantize", project, "quantize.prune_amount=0.5")
    pruned = json.loads((project / "metrics/details/quantize.json").read_text())
    linear = sum(m.weight.numel() for m in TrimodalForConditionalGeneration.from_pretrained(
        project / "models/student").modules() if type(m) is torch.nn.Linear)
    assert pruned["pruned_weights"] >= 0.5 * linear - 100  # L1 pruning of each Linear (tied weights counted once)
    assert pruned["round_trip_max_difference"] == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["prune_amount=1.5", "sensitivity_batches=0"])
def test_quantize_rejects_a_bad_setting_naming_it(project, setting):
    proc = run_stage("quantize", project, f"quantize.{setting}", check=False)
    assert proc.returncode != 0 and f"quantize.{setting.split('=')[0]}" in proc.stderr, proc.stderr[-2000:]


def test_student_takes_the_teachers_leading_layers_and_slices():
    torch.manual_seed(0)
    teacher = TrimodalForConditionalGeneration(TrimodalConfig(vocab_size=40, image_size=16, patch_size=8, n_mels=20))
    student = TrimodalForConditionalGeneration(student_config(teacher.config, {
        "d_model": 48, "vision_dim": 48, "audio_dim": 48, "audio_subsample_channels": 16, "text_layers": 1,
        "text_dim": 48, "text_ffn": 96}))
    taken, total = init_from_teacher(student, teacher)
    assert taken == total  # every student tensor fits inside a teacher tensor
    t, s = teacher.state_dict(), student.state_dict()
    assert s["encoder.audio.subsample.conv2.weight"].shape == (16, 16, 3, 3)
    # the projection's input is (channel, frequency) flattened channel-major: its leading 16 * 5 columns are the
    # teacher's columns for channels 0..15, every frequency
    freq = 5  # 20 mels after two stride-2 convolutions
    proj = "encoder.audio.subsample.proj.weight"
    assert torch.equal(s[proj], t[proj][:48, :16 * freq])
    assert torch.equal(s["encoder.text.blocks.0.ffn.fc1.weight"], t["encoder.text.blocks.0.ffn.fc1.weight"][:96, :48])
    assert torch.equal(s["decoder.blocks.1.ffn.fc2.bias"], t["decoder.blocks.1.ffn.fc2.bias"][:48])
    with pytest.raises(ValueError, match="no_such_setting"):
        student_config(teacher.config, {"no_such_setting": 1})


@pytest.mark.slow
def test_distill_under_fsdp_on_two_processes_saves_one_whole_student(project, tmp_path):
    root = make_project(tmp_path / "fsdp")
    for folder in ("data/shards", "models/teacher"):
        shutil.copytree(project / folder, root / folder)
    (root / "metrics/details").mkdir(parents=True)
    shutil.copy(project / "metrics/details/align.json", root / "metrics/details/align.json")
    run_stage("distill", root, *[f"distill.{s}" for s in SHORT], "trainer.devices=2", "trainer.strategy=fsdp")
    student = TrimodalForConditionalGeneration.from_pretrained(root / "models/student")  # a plain, unsharded model
    assert sum(p.numel() for p in student.parameters()) == json.loads(
        (root / "metrics/details/distill.json").read_text())["student_parameters"]


PATHS = defaults().paths
TRAINED = ["finetune", "instruct", "preferences", "align", "distill", "quantize"]  # the stages before evaluate
VARIANTS = {"align": PATHS.teacher, "distill": PATHS.student, "quantize": PATHS.student_int8}
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]


def git(root: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def with_every_model(project: Path) -> Path:
    """The project with student and student-int8 (what the tests above leave, when run alone too)."""
    if not (project / PATHS.student / "model.safetensors").exists():
        run_stage("distill", project, *[f"distill.{s}" for s in SHORT])
    if not (project / PATHS.student_int8 / "model.int8.safetensors").exists():
        run_stage("quantize", project, "quantize.speed_batch_sizes=[]")
    return project


@pytest.fixture(scope="module")
def tracked(project, tmp_path_factory):
    """The models above in a git + DVC project: finetune, distill and quantize recorded in dvc.lock as they ran
    (`dvc commit`, DVC's way to take outputs made outside `dvc repro`), then `dvc repro evaluate` for real, which
    writes the cards; everything committed. Returns (root, the commit the cards name)."""
    with_every_model(project)
    root = clone_worktree(tmp_path_factory.mktemp("tracked"))
    git(root, "config", "user.name", "t")  # the GTO tags' tagger
    git(root, "config", "user.email", "t@localhost")
    for folder in (PATHS.shards, PATHS.tokenizer, "models", PATHS.metrics):
        shutil.copytree(project / folder, root / folder, dirs_exist_ok=True)
    for file in (PATHS.preferences, PATHS.alignment_report):  # align's table and its tables
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(project / file, root / file)
    for stage in ("finetune", "instruct", "align", "distill"):
        (root / PATHS.checkpoints / stage).mkdir(parents=True, exist_ok=True)
    set_params(root, evaluate={"latency_repeats": 1, "latency_batch_sizes": [1]})
    git(root, "add", "-A")
    git(root, "commit", "-qm", "code and params")
    trained = git(root, "rev-parse", "HEAD")
    dvc(root, "commit", "--force", *TRAINED)
    assert "Running stage 'evaluate'" in dvc(root, "repro", "--single-item", "evaluate").stdout
    git(root, "add", "-A")
    git(root, "commit", "-qm", "trained and evaluated")
    return root, trained


@pytest.mark.slow
def test_model_folders_hold_exactly_the_files_dvc_yaml_declares(tracked):
    """Each training stage declares its model's files one by one and evaluate the card beside them (dvc.yaml): a
    file a stage writes undeclared (a new transformers version's extra file) would leave DVC blind to it."""
    root, _ = tracked
    with Repo(str(root)) as repo:
        outs = {stage.name: {str(Path(out.fs_path).relative_to(root)) for out in stage.outs}
                for stage in repo.index.stages}
    for stage, folder in VARIANTS.items():
        written = {f"{folder}/{p.name}" for p in (root / folder).iterdir()}
        declared = {out for out in outs[stage] if out.startswith(f"{folder}/")}
        cards = {out for out in outs["evaluate"] if out.startswith(f"{folder}/")}
        assert cards == {f"{folder}/{CARD}"}
        assert written == declared | cards, (stage, sorted(written ^ (declared | cards)))


def flat(data: dict, prefix: str = "") -> set[str]:
    return {key for k, v in data.items()
            for key in (flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"})}


@pytest.mark.slow
def test_cards_leave_dvc_clean_and_a_second_repro_does_nothing(tracked):
    root, trained = tracked
    status = dvc(root, "status", *TRAINED, "evaluate").stdout
    assert "up to date" in status.lower(), status
    again = dvc(root, "repro", "--single-item", *TRAINED, "evaluate").stdout
    assert "Running stage" not in again and "is cached" not in again, again
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert {out["path"] for out in lock["evaluate"]["outs"]} >= {f"{f}/{CARD}" for f in VARIANTS.values()}
    shards = next(out["md5"] for out in lock["shard"]["outs"]) if "shard" in lock else None
    card = ModelCard.load(root / PATHS.student_int8 / CARD)
    assert card.data.model_name == "trimodal-student-int8" and card.data.eval_results
    assert f"git commit `{trained}`" in card.text and shards is None and "quantize:" in card.text
    test = next(r for r in card.data.eval_results if r.metric_name == "VQA exact match")
    scores = json.loads((root / PATHS.metrics / "eval/student-int8.json").read_text())
    assert test.dataset_split == "test" and test.metric_value == round(scores["vqa_accuracy"], 4)


@pytest.mark.slow
def test_the_train_flow_finds_each_card_and_its_md5_for_its_artifacts(tracked):
    from flows.cards import card_outs, cards_index

    root, _ = tracked
    cards = card_outs(root)
    lock = {out["path"]: out["md5"] for entry in yaml.safe_load((root / "dvc.lock").read_text())["stages"].values()
            for out in entry.get("outs", [])}
    assert [row["artifact"] for row in cards] == ["teacher", "student", "student-int8"]  # dvc.yaml's artifacts
    assert all(row["md5"] == lock[row["card"]] for row in cards)
    index = cards_index(cards, "0123456789abcdef", "git@example:trimodal.git")
    assert "| student-int8 | `models/student-int8/README.md` |" in index
    assert "`dvc artifacts get git@example:trimodal.git student-int8 --stage prod`" in index


@pytest.mark.slow
def test_dvc_metrics_show_is_a_few_columns_shared_by_the_models(tracked):
    root, _ = tracked
    (workspace,) = json.loads(dvc(root, "metrics", "show", "--json").stdout).values()
    shown = workspace["data"]
    columns = {path: flat(entry["data"]) for path, entry in shown.items() if "data" in entry}  # present files
    models = [columns[f"{PATHS.metrics}/eval/{name}.json"] for name in ("teacher", "student", "student-int8")]
    assert models[0] == models[1] == models[2] and len(models[0]) <= 16
    assert columns[f"{PATHS.metrics}/eval/majority.json"] <= models[0]
    assert columns[f"{PATHS.metrics}/finetune.json"] <= models[0]  # the val scores under the same names
    # 58 with the alignment stages' own measurements (held-out templates, pairs, preference accuracy, align's
    # anchor loss) and the training stages' itm and view_image losses
    assert len(set().union(*columns.values())) <= 58, sorted(set().union(*columns.values()))


def speechless(folder: Path) -> None:
    """The saved model with its LM head zeroed: every generated token is padding, so it answers nothing (VQA 0),
    and it classifies exactly as before (the classifier reads the encoder)."""
    model = TrimodalForConditionalGeneration.from_pretrained(folder)
    with torch.no_grad():
        model.decoder.lm_head.weight.zero_()
    model.save_pretrained(folder)


@pytest.mark.slow
def test_promote_takes_the_first_model_then_a_better_one_and_refuses_a_worse_one(tracked):
    root, _ = tracked
    good = git(root, "rev-parse", "HEAD")
    speechless(root / PATHS.teacher)
    dvc(root, "commit", "--force", "align")
    with pytest.raises(PromoteError, match="dvc.lock has uncommitted changes"):
        promote("teacher", root)
    git(root, "commit", "-qam", "a teacher that forgot how to answer")
    worse = git(root, "rev-parse", "HEAD")

    first = promote("teacher", root)  # nothing to beat yet
    assert first.promoted and first.tags == ["teacher@v0.0.1", "teacher#prod#1"], first.message
    assert first.candidate["vqa_accuracy"] == 0.0

    git(root, "checkout", "-q", good)
    dvc(root, "checkout", "--force", "align")
    better = promote("teacher", root)
    assert better.promoted and better.rescored and better.production_version == "v0.0.1", better.message
    assert better.candidate["vqa_accuracy"] > better.production["vqa_accuracy"] == 0.0
    assert better.candidate["cls_accuracy"] == better.production["cls_accuracy"]  # the classifier is the same
    assert better.tags == ["teacher@v0.0.2", "teacher#prod#2"]

    git(root, "checkout", "-q", worse)  # a later retrain that got worse
    dvc(root, "checkout", "--force", "align")
    refused = promote("teacher", root)
    print(refused.message)
    assert not refused.promoted and refused.rescored and refused.tags == []
    assert refused.message.startswith(f"teacher: NOT promoted. HEAD ({worse[:10]}) does not beat prod v0.0.2")
    assert (f"vqa_accuracy   HEAD 0.0000 vs production {refused.production['vqa_accuracy']:.4f}: worse"
            in refused.message)
    found = production_version(root, "teacher", "prod")
    assert found.version == "v0.0.2" and found.commit_hexsha == good
