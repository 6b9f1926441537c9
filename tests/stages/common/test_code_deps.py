import subprocess
import sys

import pytest
import yaml

from stages.common.code_deps import REPO, differences, main, stage_code_deps, write
from trimodal.config_errors import run_main

DVC_YAML = (REPO / "dvc.yaml").read_text()
VALIDATE = "      - stages/validate.py\n      - trimodal/atomic.py\n"
DEDUP = "      - trimodal/data/dedup.py\n"
VALIDATE_END = "    params:\n      - validate\n"  # what follows validate's last dep


def broken(text: str) -> str:
    """dvc.yaml with validate's dedup.py dep removed and an extra model/layers.py listed after its data dep."""
    assert DEDUP in text and VALIDATE_END in text
    return text.replace(DEDUP, "", 1).replace(VALIDATE_END, "      - model/layers.py\n" + VALIDATE_END, 1)


def code_deps_of(path, stage: str) -> list[str]:
    deps = yaml.safe_load(path.read_text())["stages"][stage]["deps"]
    return [d for d in deps if d.startswith(("stages/", "trimodal/", "model/"))]


def test_write_restores_a_removed_and_an_extra_code_dep(tmp_path):
    path = tmp_path / "dvc.yaml"
    path.write_text(broken(DVC_YAML))
    assert write(path) == ["validate"]
    assert code_deps_of(path, "validate") == stage_code_deps("validate")
    assert path.read_text() == DVC_YAML


def test_check_names_the_stage_and_its_files_and_exits_1(tmp_path):
    path = tmp_path / "dvc.yaml"
    path.write_text(broken(DVC_YAML))
    check = subprocess.run([sys.executable, "-m", "stages.common.code_deps", "check", str(path)], cwd=REPO,
                           capture_output=True, text=True)
    assert check.returncode == 1
    assert "validate: missing trimodal/data/dedup.py; extra model/layers.py" in check.stderr
    assert "code_deps write" in check.stderr


def test_check_passes_on_the_real_dvc_yaml(capsys):
    main(["check"])
    assert "match" in capsys.readouterr().out


def test_a_code_dep_folder_becomes_its_files(tmp_path):
    """Deps are files, never folders: `model/` would rerun the stage for the model files it does not import."""
    path = tmp_path / "dvc.yaml"
    pretrain = "".join(f"      - {f}\n" for f in stage_code_deps("pretrain") if f.startswith("model/"))
    path.write_text(DVC_YAML.replace(pretrain, "      - model/\n", 1))
    assert differences(path)[0].startswith(
        "pretrain: missing model/blocks.py, model/chat.py, model/deepseek_vl/family.py, ")
    assert differences(path)[0].endswith("; extra model/")
    write(path)
    assert path.read_text() == DVC_YAML


def test_order_is_the_module_then_the_rest_sorted(tmp_path):
    path = tmp_path / "dvc.yaml"
    path.write_text(DVC_YAML.replace(VALIDATE, "      - trimodal/atomic.py\n      - stages/validate.py\n", 1))
    assert differences(path) == ["validate: listed out of order"]
    write(path)
    assert path.read_text() == DVC_YAML


def test_comments_and_other_deps_stay_where_they_are(tmp_path):
    """A comment line after the code deps, a comment among the outs and the stage's data deps all survive; the
    code-dep lines are written afresh, a comment at the end of one dropped."""
    commented = (DVC_YAML.replace("      - trimodal/data/tars.py\n      - ${paths.raw}\n",
                                  "      - trimodal/data/tars.py\n      # the raw shards\n      - ${paths.raw}\n", 1)
                 .replace("      - ${paths.validated}\n      - ${paths.validate_report}\n",
                          "      - ${paths.validated}  # quarantine.jsonl too\n      - ${paths.validate_report}\n", 1))
    path = tmp_path / "dvc.yaml"
    path.write_text(broken(commented).replace("      - trimodal/data/gate.py\n",
                                              "      - trimodal/data/gate.py  # the expectations\n", 1))
    write(path)
    assert path.read_text() == commented


def test_a_stage_without_its_module_is_one_line_and_exit_code_2(tmp_path, capsys):
    path = tmp_path / "dvc.yaml"
    path.write_text("stages:\n  nosuch:\n    cmd: python -m stages.nosuch\n")
    with pytest.raises(SystemExit) as exit_:
        run_main(lambda: main(["write", str(path)]))
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("error: dvc.yaml stage nosuch has no module stages/nosuch.py "
                                       "(a stage runs `python -m stages.nosuch`)\n")
    assert path.read_text() == "stages:\n  nosuch:\n    cmd: python -m stages.nosuch\n"
