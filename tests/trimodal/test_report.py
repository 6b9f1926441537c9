"""`trimodal report`: the headline files of the evaluate stage side by side."""
import json

from trimodal.cli import main


def test_report_puts_models_then_baselines_side_by_side(tmp_path, capsys):
    eval_dir = tmp_path / "metrics/eval"
    eval_dir.mkdir(parents=True)
    scores = {"student": {"vqa_accuracy": 0.9, "size_bytes": 1600780}, "teacher": {"vqa_accuracy": 1.0},
              "majority": {"vqa_accuracy": 0.25}, "student-int8": {"vqa_accuracy": 0.875, "size_bytes": 466910}}
    for name, values in scores.items():
        (eval_dir / f"{name}.json").write_text(json.dumps(values))
    assert main(["report", "--metrics", str(tmp_path / "metrics")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["teacher", "student", "student-int8", "majority"]
    assert lines[2].split() == ["vqa_accuracy", "1", "0.9", "0.875", "0.25"]
    assert lines[3].split() == ["size_bytes", "-", "1,600,780", "466,910", "-"]


def test_report_without_an_evaluation_says_what_to_run(tmp_path, capsys):
    assert main(["report", "--metrics", str(tmp_path)]) == 2
    assert "run `dvc repro evaluate` first" in capsys.readouterr().err


def test_promote_outside_a_registry_exits_2_naming_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no git repository, no dvc.yaml: nothing to promote
    assert main(["promote", "teacher"]) == 2
    assert "is not a trimodal project (no dvc.yaml / params.yaml): run from its root" in capsys.readouterr().err
