"""benchmarks/recipe_robustness.py without the DAG: the pure summary of hand-made runs, dvc's output parsed into
stage seconds, the teacher target, and the arguments."""
from __future__ import annotations

import json

import pytest
import yaml

from benchmarks.recipe_robustness import (
    ALIGNMENT_TARGETS,
    TEACHER_TARGET,
    TEACHER_TARGET_ALL,
    alignment,
    headline,
    markdown,
    parse_args,
    run_specs,
    stage_seconds,
    summarise,
    teacher_targets,
    template_falls,
    terminal_view,
)


def teacher_rows(fusion_vqa: float) -> dict:
    return {"overall": {"vqa_accuracy": 0.97, "cls_accuracy": 1.0, "caption_exact": 1.0},
            "image": {"vqa_accuracy": 1.0, "cls_accuracy": 1.0, "caption_exact": 0.96},
            "audio+text": {"vqa_accuracy": 0.98, "cls_accuracy": 1.0, "caption_exact": 1.0},
            "group:fusion": {"vqa_accuracy": fusion_vqa}}


def ok_run(seed: int, fusion_vqa: float, wall_s: float, student_met: bool) -> dict:
    rows = teacher_rows(fusion_vqa)
    return {"seed": seed, "threads": 1, "ok": True, "returncode": 0, "wall_s": wall_s,
            "stage_s": {"demo": 10.0 + seed, "evaluate": 50.0}, "restored": [],
            "metrics": {"teacher": rows, "student": rows, "student-int8": rows},
            "targets": [{"name": "student vqa_accuracy >= 97% of teacher on every row", "value": "x",
                         "met": student_met}, *teacher_targets(rows)]}


def failed_run() -> dict:
    return {"seed": 9, "threads": 2, "ok": False, "returncode": 1, "wall_s": 5.0, "stage_s": {"demo": 4.0},
            "restored": [], "output_tail": "ERROR: failed to reproduce 'finetune'"}


RUNS = [ok_run(0, 0.90, 600.0, True), ok_run(1, 0.99, 500.0, True), ok_run(2, 0.96, 700.0, False), failed_run()]


def test_summary_spreads_metrics_over_the_successful_runs():
    summary = summarise(RUNS)
    fusion = summary["metrics"]["teacher"]["group:fusion"]["vqa_accuracy"]
    assert fusion == {"min": 0.90, "median": 0.96, "max": 0.99, "n": 3}
    assert summary["dag_wall_s"] == {"min": 500.0, "median": 600.0, "max": 700.0, "n": 3}
    assert summary["stage_s"]["demo"] == {"min": 10.0, "median": 11.0, "max": 12.0, "n": 3}  # not the failed 4.0
    assert list(summary["metrics"]["teacher"]) == ["overall", "audio+text", "image", "group:fusion"]
    assert (summary["runs"], summary["failed"]) == (4, 1)


def test_targets_count_every_run_and_a_failed_run_meets_none():
    targets = summarise(RUNS)["targets"]
    assert targets["student vqa_accuracy >= 97% of teacher on every row"]["fraction"] == "2/4"
    assert targets[TEACHER_TARGET.format(key="vqa_accuracy")]["fraction"] == "2/4"  # fusion 0.90 misses
    assert targets[TEACHER_TARGET.format(key="caption_exact")]["fraction"] == "3/4"
    assert targets[TEACHER_TARGET_ALL] == {"met": 2, "of": 4, "fraction": "2/4"}


def test_all_runs_failed():
    summary = summarise([failed_run(), failed_run()])
    assert summary["dag_wall_s"] is None and summary["targets"] == {} and summary["failed"] == 2
    assert "No run succeeded; 2 of 2 run(s) failed." in markdown(summary)


def test_teacher_target_skips_overall_and_rows_without_the_metric():
    rows = teacher_rows(0.99)
    rows["overall"]["cls_accuracy"] = 0.5  # overall is not a subset or group row
    rows["group:ood-render"] = {"vqa_accuracy": 0.5}  # a held-out group: judged by its gap, in the project targets
    targets = {t["name"]: t for t in teacher_targets(rows)}
    assert targets[TEACHER_TARGET.format(key="vqa_accuracy")]["value"] == "0.980 (audio+text)"
    assert targets[TEACHER_TARGET.format(key="cls_accuracy")]["met"]
    assert targets[TEACHER_TARGET.format(key="caption_exact")]["value"] == "0.960 (image)"
    assert targets[TEACHER_TARGET_ALL]["met"]
    assert teacher_targets({"overall": {"vqa_accuracy": 1.0}}) == []


def test_markdown_lists_teacher_vqa_rows_and_targets():
    table = markdown(summarise(RUNS))
    assert "| group:fusion | 0.900 | 0.960 | 0.990 |" in table
    assert f"| {TEACHER_TARGET.format(key='vqa_accuracy')} | 2/4 |" in table
    assert "min 500 s, median 600 s, max 700 s; 1 of 4 run(s) failed." in table


def test_stage_seconds_from_dvc_output():
    lines = [(0.0, "Stage 'demo' is cached - skipping run, checking out outputs"),
             (1.0, "Running stage 'pretrain':"), (2.0, "> python -m stages.pretrain"), (31.0, "step 10"),
             (40.0, "Updating lock file 'dvc.lock'"), (41.0, "Stage 'tokenizer' didn't change, skipping"),
             (42.0, "Running stage 'evaluate':"), (50.5, "")]
    assert stage_seconds(lines) == ({"pretrain": 40.0, "evaluate": 8.5}, ["demo"])


def test_arguments_defaults():
    args = parse_args([])
    assert (args.seeds, args.threads, args.parallel, args.rev) == ([0, 1, 2], [1, 2], 1, "HEAD")
    assert (args.overrides, args.keep, args.reuse_cache) == ([], None, False)
    assert args.out.endswith("benchmarks/results/recipe_robustness.json")


def test_arguments_given():
    args = parse_args(["--seeds", "3", "4", "--threads", "2", "--parallel", "2", "--set", "finetune.steps=20",
                       "--set", "align.ppo.reward_steps=5", "--reuse-cache", "--keep", "/tmp/x", "--rev", "abc"])
    assert (args.seeds, args.threads, args.parallel) == ([3, 4], [2], 2)
    assert args.overrides == ["finetune.steps=20", "align.ppo.reward_steps=5"]
    assert (args.reuse_cache, args.keep, args.rev) == (True, "/tmp/x", "abc")
    assert [(s["seed"], s["threads"]) for s in run_specs([0, 1], [1, 2])] == [(0, 1), (0, 2), (1, 1), (1, 2)]


@pytest.mark.parametrize("argv", [["--set", "finetune.steps"], ["--set", "seed=3"], ["--threads", "0"],
                                  ["--parallel", "0"]])
def test_arguments_refused(argv):
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_headline_of_a_failed_run_names_its_last_line():
    assert headline(failed_run()).endswith("after 5 s: ERROR: failed to reproduce 'finetune'")
    errored = {**failed_run(), "returncode": 0, "error": "KeyError: 'rows'"}
    assert headline(errored).endswith(": KeyError: 'rows'")


def test_terminal_view_keeps_the_last_redraw():
    assert terminal_view("step 1\rstep 2\rRunning stage 'x':\n") == "Running stage 'x':"
    assert terminal_view("done\r\n") == "done"


# alignment: the instruct and align stages' metrics of a clone ---------------------------------------------------------

def held_out(caption: float, vqa: float) -> dict:
    return {"caption": {"accuracy": caption, "n": 10, "templates": {"Describe.": {"accuracy": caption, "n": 10}}},
            "vqa": {"accuracy": vqa, "n": 20, "templates": {"{question} A:": {"accuracy": vqa, "n": 10},
                                                            "Q: {question}": {"accuracy": None, "n": 0}}},
            "mean": (caption + vqa) / 2}


def aligned_clone(tmp_path, preference: float, instruct_mean: float, after_vqa: float, task_drop: float):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"paths": {"metrics": "m", "details": "m/details"}}))
    (tmp_path / "m/details").mkdir(parents=True)
    (tmp_path / "m/instruct.json").write_text(json.dumps({"held_out_mean": instruct_mean, "held_out_mean_before": 0.1,
                                                          "held_out_vqa": 0.9, "vqa_accuracy": 1.0}))
    (tmp_path / "m/align.json").write_text(json.dumps({"preference_accuracy": preference,
                                                       "preference_accuracy_before": 0.8, "held_out_templates": 0.9,
                                                       "max_task_drop": task_drop}))
    (tmp_path / "m/details/align.json").write_text(json.dumps(
        {"held_out_templates": {"before": held_out(1.0, 0.9), "after": held_out(1.0, after_vqa)}}))
    return tmp_path


def test_alignment_targets_met(tmp_path):
    scores, targets = alignment(aligned_clone(tmp_path, 0.9, 0.85, 0.95, 0.45))
    assert [t["name"] for t in targets] == list(ALIGNMENT_TARGETS[:5])  # no record-by-record changes: no test
    assert all(t["met"] for t in targets)
    assert scores["instruct"] == {"held_out_mean": 0.85, "held_out_vqa": 0.9}
    assert scores["align"]["largest_template_fall"] == 0.0  # caption stayed; vqa rose
    assert scores["align"]["largest_task_templates_fall"] == 0.0


def test_alignment_targets_missed_name_the_template_that_fell(tmp_path):
    scores, targets = alignment(aligned_clone(tmp_path, 0.84, 0.79, 0.7, 1.5))
    assert not any(t["met"] for t in targets)
    assert "(vqa)" in targets[2]["value"] and "vqa: {question} A:" in targets[3]["value"]
    assert scores["align"]["largest_template_fall"] == pytest.approx(0.2)


def test_alignment_of_a_dag_without_align(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"paths": {"metrics": "m", "details": "m/details"}}))
    assert alignment(tmp_path) == ({}, [])


def test_template_falls_skip_templates_without_records():
    falls = template_falls({"before": held_out(1.0, 0.5), "after": held_out(0.9, 0.6)})
    assert falls == pytest.approx({"caption: Describe.": 0.1, "vqa: {question} A:": -0.1})


def test_template_falls_per_task():
    falls = template_falls({"before": held_out(1.0, 0.5), "after": held_out(0.9, 0.6)}, per_template=False)
    assert falls == pytest.approx({"caption": 0.1, "vqa": -0.1})


def test_markdown_lists_alignment_scores():
    run = ok_run(0, 0.99, 500.0, True)
    run["metrics"]["alignment"] = {"align": {"preference_accuracy": 0.9}}
    assert "| align preference_accuracy | 0.900 | 0.900 | 0.900 |" in markdown(summarise([run]))


def test_the_hosts_speed_is_spread_and_printed_beside_the_wall_time():
    runs = [{**ok_run(0, 0.99, 600.0, True), "machine_gflops": 40.0}, {**ok_run(1, 0.99, 500.0, True),
                                                                       "machine_gflops": 80.0}]
    summary = summarise(runs)
    assert summary["machine_gflops"] == {"min": 40.0, "median": 60.0, "max": 80.0, "n": 2}
    assert markdown(summary).endswith("max 600 s; the host's fp32 matmul 40-80 GFLOP/s before the runs.")
    assert summarise(RUNS)["machine_gflops"] is None  # runs from before the probe
    assert "GFLOP/s" not in markdown(summarise(RUNS))


def test_the_speed_probe_measures_this_host():
    from benchmarks.recipe_robustness import REPO, machine_gflops, run_env
    assert machine_gflops(REPO, {**run_env(REPO, 1), "PYTHONPATH": str(REPO)}) > 0.1


@pytest.mark.parametrize(("lost", "gained", "met"), [(5, 0, False), (2, 0, True), (7, 9, True)])
def test_a_template_falls_beyond_chance_by_the_exact_mcnemar_test(tmp_path, lost, gained, met):
    clone = aligned_clone(tmp_path, 0.9, 0.85, 0.95, 0.45)
    details = json.loads((clone / "m/details/align.json").read_text())
    p = {(5, 0): 1 / 32, (2, 0): 1 / 4}.get((lost, gained), 0.5)
    details["held_out_templates"]["changes"] = {
        "vqa": {"{question} A:": {"lost": lost, "gained": gained, "p": p}},
        "caption": {"Describe.": {"lost": 0, "gained": 0, "p": 1.0}}}
    (clone / "m/details/align.json").write_text(json.dumps(details))
    scores, targets = alignment(clone)
    assert targets[-1]["name"] == ALIGNMENT_TARGETS[5] and targets[-1]["met"] is met
    assert f"vqa: {{question}} A:: {lost} lost, {gained} gained" in targets[-1]["value"]
    assert scores["align"]["smallest_template_fall_p"] == p
