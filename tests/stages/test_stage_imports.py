"""A stage never imports another stage: shared code lives in the library (trimodal/, model/), so a stage's
dvc.yaml deps can list what it really uses and editing one stage's code reruns only what depends on it."""
import ast
from pathlib import Path

import yaml

from stages.common.code_deps import differences, imported_modules

REPO = Path(__file__).resolve().parents[2]
STAGES = sorted(p.stem for p in (REPO / "stages").glob("*.py") if p.stem != "__init__")


def test_no_stage_imports_another_stage():
    offenders = {}
    for stage in STAGES:
        others = {f"stages.{s}" for s in STAGES if s != stage}
        hits = imported_modules(REPO / "stages" / f"{stage}.py") & others
        if hits:
            offenders[stage] = sorted(hits)
    assert not offenders, f"stages importing other stages (move the shared code to the library, trimodal/): {offenders}"


def test_dvc_deps_name_no_other_stage_module():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        deps = stage.get("deps", [])
        modules = [d for d in deps if d.startswith("stages/") and d.count("/") == 1 and d.endswith(".py")]
        assert modules == [f"stages/{name}.py"], (name, modules)


def test_dvc_code_deps_are_exactly_what_each_stage_imports():
    """Editing a file reruns exactly the stages that run it: trimodal/data/gate.py -> validate (and what follows
    once validate's outputs change), never pretrain. The code deps are written, not edited: `code_deps write`."""
    assert differences() == [], "run `python -m stages.common.code_deps write`"
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    validate_only = [n for n, s in stages.items() if "trimodal/data/gate.py" in s.get("deps", [])]
    assert validate_only == ["validate"]


def test_each_stage_reads_only_its_own_params_sections():
    """A stage reads `params.<its section>` (plus the shared top-level `seed`, `split`, `model`, `trainer`,
    `data`, `paths`, `instructions`) and dvc.yaml lists every section it reads, so a change to one stage's
    parameters reruns it.
    `paths` need not be listed: dvc.yaml interpolates them into the deps and outs, which DVC compares itself."""
    shared = {"seed", "split", "model", "trainer", "data", "paths", "instructions"}
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name in STAGES:
        tree = ast.parse((REPO / "stages" / f"{name}.py").read_text())
        read = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name) and node.value.id == "params"}
        read &= {"demo", "ingest", "validate", "tokenizer", "shard", "pretrain", "finetune", "instruct",
                 "preferences", "align", "distill", "quantize", "evaluate", *shared}
        assert read - shared <= {name}, (name, sorted(read - shared - {name}))
        declared = {p.split(".")[0] for p in stages[name].get("params", []) if isinstance(p, str)}
        assert read - {"paths"} <= declared, (name, sorted(read - {"paths"} - declared))


ARTIFACT_ROOTS = ("data/", "models/", "artifacts/", "metrics/", "reports/", "checkpoints/")


def literal_paths(path: Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and node.value.startswith(ARTIFACT_ROOTS) and " " not in node.value}


def test_artifact_paths_are_written_once():
    """conf/config.yaml `paths` is the one place: dvc.yaml names artifacts only through ${paths.*}, and no stage,
    shared module or flow spells one out."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        entries = [d if isinstance(d, str) else next(iter(d)) for key in ("deps", "outs", "metrics", "plots")
                   for d in stage.get(key, [])]
        spelled = [e for e in entries if e.startswith(ARTIFACT_ROOTS)]
        assert not spelled, (name, spelled)
    for path in [*(REPO / "stages").rglob("*.py"), *(REPO / "flows").glob("*.py")]:
        assert not literal_paths(path), (path.relative_to(REPO), sorted(literal_paths(path)))


def paths_read(path: Path) -> set[str]:
    """The `paths` fields a module reads: `params.paths.<f>`, or `paths.<f>` after `paths = params.paths`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and (
                isinstance(node.value, ast.Name) and node.value.id == "paths"
                or isinstance(node.value, ast.Attribute) and node.value.attr == "paths"):
            found.add(node.attr)
    return found


def test_every_path_a_stage_reads_is_a_dep_or_an_output():
    """`params.paths.student` in stages/quantize.py must be in quantize's deps or outs (as DVC resolves dvc.yaml):
    a stage run in a fresh clone that pulls only its deps (flows/stage.py) would not find it otherwise."""
    from dvc.repo import Repo

    from trimodal.params import defaults

    paths = defaults().paths
    with Repo(str(REPO)) as repo:
        declared = {stage.name: [str(Path(d.fs_path).relative_to(REPO)) for d in (*stage.deps, *stage.outs)
                                 if not hasattr(d, "params")] for stage in repo.index.stages}
    for name in STAGES:
        named = {getattr(paths, field) for field in paths_read(REPO / "stages" / f"{name}.py")}
        if "fit(" in (REPO / "stages" / f"{name}.py").read_text():  # the trainer's dvclive and checkpoint folders
            named |= {f"{paths.metrics}/{name}", f"{paths.checkpoints}/{name}"}
        # ingest's and validate's cache is no input: a clone without it starts cold and writes the same outputs
        # (tests/stages/test_incremental.py), so it is neither a dep nor an output
        named -= {paths.cache}
        assert named, name
        missing = {p for p in named  # the path itself, inside a declared folder, or a folder of declared files
                   if not any(p == d or p.startswith(d.rstrip("/") + "/") or d.startswith(p + "/")
                              for d in declared[name])}
        assert not missing, (name, sorted(missing))
