"""The library (trimodal/, and model/ installed as trimodal.model) never imports the pipeline (stages, flows): the
pipeline is a user of the library, so an installed trimodal works outside the repository. Every import counts,
at the top of a module or inside a function, relative ones resolved."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = ("trimodal", "model")
PIPELINE = ("stages", "flows")


def package_of(path: Path) -> str:
    """The dotted package a file's relative imports resolve against (model/x.py is trimodal.model)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] == "model":
        parts = ["trimodal", *parts]
    return ".".join(parts if parts[-1] == "__init__" and parts.pop() else parts[:-1])


def imports(path: Path, package: str | None = None) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = (package or package_of(path)).split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            found.add(base)
    return found


def library_files() -> list[Path]:
    return sorted(p for root in LIBRARY for p in (REPO / root).rglob("*.py"))


def test_the_library_never_imports_stages_or_flows():
    assert len(library_files()) > 50
    offenders = {str(p.relative_to(REPO)): sorted(m for m in imports(p) if m.split(".")[0] in PIPELINE)
                 for p in library_files()}
    assert not {p: m for p, m in offenders.items() if m}, "the library imports the pipeline"


def test_the_library_imports_the_model_through_its_import_root():
    """`model` is installed as trimodal.model: a bare `import model` would work in the repository only."""
    offenders = {str(p.relative_to(REPO)): sorted(m for m in imports(p) if m.split(".")[0] == "model")
                 for p in [*library_files(), *(REPO / "stages").rglob("*.py"), *(REPO / "flows").rglob("*.py")]}
    assert not {p: m for p, m in offenders.items() if m}


def test_the_check_sees_function_level_and_relative_imports(tmp_path):
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from stages.common import params\n    from ..flows import train\n")
    assert imports(module, package="trimodal.data") == {"stages.common", "trimodal.flows"}


def test_the_library_and_the_pipeline_reach_a_family_through_the_interface():
    """Outside model/, no module imports a family's own package (model/trimodal/, model/deepseek_vl/): what
    differs between the families is asked of `Family` (model/family.py), not branched on where it is used."""
    families = ("trimodal.model.trimodal", "trimodal.model.deepseek_vl")
    users = [p for root in ("trimodal", "stages", "flows") for p in (REPO / root).rglob("*.py")]
    assert len(users) > 50
    offenders = {str(p.relative_to(REPO)): sorted(m for m in imports(p) if m.startswith(families)) for p in users}
    assert not {p: m for p, m in offenders.items() if m}, "imports a family's package instead of its Family"
