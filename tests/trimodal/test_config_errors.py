"""A configuration mistake is one line naming the key and the fix, exit code 2, never a traceback: at
`python -m stages.common.params write` (before params.yaml changes), and when any stage reads params.yaml."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stage_runner import REPO, make_project, run_stage
from trimodal.config_errors import ConfigError, run_main
from trimodal.params import compose, load_params


def write_params(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "stages.common.params", "write", *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("override, line", [
    ("model=nonexistent", "error: model=nonexistent: no conf/model/nonexistent.yaml; model is one of base, "
                          "deepseek_vl, deepseek_vl_1.3b, deepseek_vl_7b, full, small, tiny"),
    ("validate.max_pixels=abc", "error: validate.max_pixels: expected int, got 'abc'"),
    ("validat.max_pixels=5", "error: unknown key validat.max_pixels; did you mean validate.max_pixels?"),
])
def test_a_bad_override_is_one_line_exit_2_and_params_yaml_stays_as_it_was(tmp_path, override, line):
    before = make_project(tmp_path).joinpath("params.yaml").read_bytes()
    proc = write_params(tmp_path, override)
    assert (proc.returncode, proc.stderr, proc.stdout) == (2, line + "\n", "")
    assert (tmp_path / "params.yaml").read_bytes() == before


def test_an_unknown_group_choice_lists_every_preset_of_its_group():
    with pytest.raises(ConfigError) as e:
        compose(["demo=nope"])
    presets = sorted(p.stem for p in (REPO / "conf/demo").glob("*.yaml"))
    assert str(e.value) == f"demo=nope: no conf/demo/nope.yaml; demo is one of {', '.join(presets)}"


@pytest.mark.parametrize("override, message", [
    ("modle=tiny", "unknown key modle; did you mean model?"),  # a group's name
    ("validate.max_pixelz=5", "unknown key validate.max_pixelz; did you mean validate.max_pixels?"),
    ("model.d_modle=8", "unknown key model.d_modle; did you mean model.d_model?"),  # a preset's own keys
])
def test_a_mistyped_key_names_the_nearest_real_one(override, message):
    with pytest.raises(ConfigError, match=f"^{message.replace('?', '[?]')}$"):
        compose([override])


def test_a_mapping_override_adding_a_key_names_it_and_the_plus_form():
    """A mapping value (`a.b={c: 1}`) adds keys Hydra refuses without `+`: said in one line, the `+` form works."""
    with pytest.raises(ConfigError, match=r"^unknown key align\.loss_weights\.ppo; to add a key conf/ does not "
                                          r"hold, write \+align\.loss_weights\.ppo=VALUE$"):
        compose(["align.loss_weights={ppo: 0.5}"])
    assert compose(["+align.loss_weights.ppo=0.5"])["align"]["loss_weights"]["ppo"] == 0.5


@pytest.mark.parametrize("override, message", [
    ("validat.max_pixels=5", "unknown key validat.max_pixels; did you mean validate.max_pixels?"),
    ("quantize.speed_batch_sizes=5", "quantize.speed_batch_sizes: expected a list of int, got 5"),
    ("quantize.speed_batch_sizes=[1,b]", "quantize.speed_batch_sizes[1]: expected int, got 'b'"),
    ("pretrain.language_fraction=x", "pretrain.language_fraction: expected float or null, got 'x'"),
    ("validate.dedup_text_only=maybe", "validate.dedup_text_only: expected bool, got 'maybe'"),
    ("validate.max_pixels=[1", "override 'validate.max_pixels=[1' is not YAML: expected ',' or ']', "
                               "but got '<stream end>' at line 1"),
    ("evaluate.targets.student_speedup=fast", "evaluate.targets.student_speedup: expected float, got 'fast'"),
    ("evaluate.targets.speedup_batch_size=1.5", "evaluate.targets.speedup_batch_size: expected int, got 1.5"),
    ("evaluate.targets.speedup=2", "unknown key evaluate.targets.speedup; did you mean "
                                   "evaluate.targets.student_speedup?"),
])
def test_a_stage_override_that_does_not_fit_the_schema_is_named(override, message):
    with pytest.raises(ConfigError) as e:
        load_params(REPO / "params.yaml", [override])
    assert str(e.value) == message


def test_a_missing_value_names_its_key_and_the_fix(tmp_path):
    text = (REPO / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(text.replace("  max_pixels: 40000000\n", ""))
    with pytest.raises(ConfigError, match=r"^validate.max_pixels has no value: set it in conf/, then `python -m "):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize("edit, override, line", [
    (("max_pixels: 40000000", "max_pixels: abc"), None, "error: validate.max_pixels: expected int, got 'abc'"),
    (("\nvalidate:\n", "\nvalidat:\n"), None, "error: unknown key validat; did you mean validate?"),
    (None, "validate.min_sid=3", "error: unknown key validate.min_sid; did you mean validate.min_side?"),
])
def test_a_stage_on_a_bad_params_yaml_exits_2_with_one_line(tmp_path, edit, override, line):
    params = make_project(tmp_path) / "params.yaml"
    if edit:
        assert edit[0] in params.read_text()
        params.write_text(params.read_text().replace(*edit))
    proc = run_stage("validate", tmp_path, *([override] if override else []), check=False, timeout=120)
    assert (proc.returncode, proc.stderr) == (2, line + "\n")  # no traceback, nothing else
    assert not (tmp_path / "data").exists()  # refused before any work


def test_every_stage_runs_its_main_through_run_main():
    """What the validate stage shows above holds for each: a stage's `__main__` block is `run_main(main)`."""
    for path in sorted((REPO / "stages").glob("*.py")):
        if path.name == "__init__.py":
            continue
        [block] = [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.If)
                   and ast.unparse(n.test) == "__name__ == '__main__'"]
        assert [ast.unparse(s) for s in block.body] == ["run_main(main)"], path.name


def test_run_main_exits_2_on_a_config_error_and_lets_any_other_error_through(capsys):
    def bad_config():
        raise ConfigError("unknown key x")

    def broken():
        raise RuntimeError("a bug")

    with pytest.raises(SystemExit) as e:
        run_main(bad_config)
    assert e.value.code == 2 and capsys.readouterr().err == "error: unknown key x\n"
    with pytest.raises(RuntimeError, match="a bug"):  # its traceback is kept
        run_main(broken)
