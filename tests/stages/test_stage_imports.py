"""A stage never imports another stage (STYLE.md): shared code lives in stages/common or model/, so a stage's
dvc.yaml deps can list what it really uses and editing one stage's code reruns only what depends on it."""
import ast
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
STAGES = sorted(p.stem for p in (REPO / "stages").glob("*.py") if p.stem != "__init__")


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_stage_imports_another_stage():
    offenders = {}
    for stage in STAGES:
        others = {f"stages.{s}" for s in STAGES if s != stage}
        hits = imported_modules(REPO / "stages" / f"{stage}.py") & others
        if hits:
            offenders[stage] = sorted(hits)
    assert not offenders, f"stages importing other stages (move the shared code to stages/common): {offenders}"


def test_dvc_deps_name_no_other_stage_module():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        deps = stage.get("deps", [])
        modules = [d for d in deps if d.startswith("stages/") and d.count("/") == 1 and d.endswith(".py")]
        assert modules == [f"stages/{name}.py"], (name, modules)
