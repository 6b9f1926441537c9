"""`trimodal report`: the headline files of the evaluate stage side by side."""
import json
from pathlib import Path

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


def evaluation(family: str, vqa: dict[str, float], parameters: int) -> dict:
    rows = {row: {"vqa_accuracy": v, "n_vqa": 10 + i} for i, (row, v) in enumerate(vqa.items())}
    return {"family": family, "parameters": parameters, "rows": rows}


def test_compare_puts_two_revisions_side_by_side_per_subset(tmp_path, monkeypatch, capsys):
    import subprocess
    import sys

    import yaml

    monkeypatch.chdir(tmp_path)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], check=True)
    Path("params.yaml").write_text(yaml.safe_dump({"paths": {"metrics": "metrics", "details": "metrics/details"}}))
    details = Path("metrics/details/eval")
    details.mkdir(parents=True)
    for tag, result in (("trimodal-run", evaluation("trimodal", {"overall": 1.0, "audio": 0.9}, 900)),
                        ("vl-run", evaluation("deepseek_vl", {"overall": 0.63, "image": 0.78}, 386))):
        (details / "teacher.json").write_text(json.dumps(result))
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-qm", tag], check=True)
        subprocess.run([*git, "tag", tag], check=True)
    assert main(["report", "--compare", "trimodal-run", "vl-run"]) == 0
    out = capsys.readouterr().out
    assert "trimodal-run (trimodal) 900, vl-run (deepseek_vl) 386" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("overall", "audio",
                                                                                               "image"))}
    assert rows["overall"] == ["1.000", "(n=10)", "0.630", "(n=10)"]
    assert rows["audio"] == ["0.900", "(n=11)", "-"]  # a family that skips audio-only records has no such row
    assert rows["image"] == ["-", "0.780", "(n=11)"]
    order = [line.split()[0] for line in out.splitlines() if line.startswith(("overall", "audio", "image"))]
    assert order == ["overall", "audio", "image"]  # overall first, then the subsets
    assert main(["report", "--compare", "no-such-rev"]) == 2
    assert "cannot compare no-such-rev" in capsys.readouterr().err
