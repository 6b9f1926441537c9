"""dvc.yaml's code deps, written from each stage's import closure, never by hand.

A stage's code deps are the repository files (stages/, trimodal/, model/) that `stages.<name>` imports, directly or
through each other, lazy imports inside functions included: editing a file reruns exactly the stages that run it.
`python -m stages.common.code_deps write` rewrites them in every stage of dvc.yaml: the stage's module first, the
rest sorted, one file per line and never a folder (a folder would rerun the stage for files it does not import).
They go where the stage's first code dep was; every other dep (data, conf files) keeps its place, and the
comments and formatting outside the code-dep lines are kept (a ruamel.yaml round trip; the code-dep lines are
written afresh, so a comment at the end of one is not). `check` names, per stage, the files missing and extra,
exit code 1; tests/stages/test_stage_imports.py runs it. A stage without its module is one line and exit code 2.
"""
from __future__ import annotations

import ast
import sys
from collections.abc import Sequence
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from trimodal.atomic import atomic_open
from trimodal.config_errors import ConfigError, run_main

REPO = Path(__file__).resolve().parents[2]
DVC_YAML = REPO / "dvc.yaml"
CODE_ROOTS = ("stages", "trimodal")  # import roots; trimodal.model is the model/ folder
CODE_FOLDERS = ("stages", "trimodal", "model")  # the folders their files are in
MODEL = "trimodal.model"
USAGE = "usage: python -m stages.common.code_deps write|check [dvc.yaml]"


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function; `from a import b` gives `a` and `a.b` (b may
    be a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def module_file(name: str, root: Path = REPO) -> Path | None:
    """The repository file of module `name`; trimodal.model's are model/'s (installed, its package-dir mapping)."""
    if name == MODEL or name.startswith(MODEL + "."):
        name = "model" + name[len(MODEL):]
    for path in (root / (name.replace(".", "/") + ".py"), root / name.replace(".", "/") / "__init__.py"):
        if path.exists():
            return path
    return None


def code_closure(module: str, root: Path = REPO) -> set[str]:
    """Repository files (stages/, trimodal/, model/) that `module` imports, directly or through each other, itself
    included; lazy imports inside functions count too."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        path = module_file(todo.pop(), root)
        if path is None or path in seen:
            continue
        seen.add(path)
        todo += [m for m in imported_modules(path) if m.split(".")[0] in CODE_ROOTS]
    return {str(p.relative_to(root)) for p in seen if p.name != "__init__.py"}


def stage_code_deps(stage: str, root: Path = REPO) -> list[str]:
    """What dvc.yaml lists as `stage`'s code deps: its module first, then the rest of its closure sorted."""
    module = f"stages/{stage}.py"
    if not (root / module).is_file():
        raise ConfigError(f"dvc.yaml stage {stage} has no module {module} (a stage runs `python -m stages.{stage}`)")
    return [module, *sorted(code_closure(f"stages.{stage}", root) - {module})]


def is_code_dep(dep: object) -> bool:
    return isinstance(dep, str) and dep.startswith(tuple(f"{r}/" for r in CODE_FOLDERS))


def yaml() -> YAML:
    """A round-trip loader that dumps dvc.yaml as it reads it (its indents, long lines unwrapped)."""
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    rt.indent(mapping=2, sequence=4, offset=2)
    return rt


def after_line(comments: list | None) -> list | None:
    """A seq item's comments less the one at the end of its own line: what follows the line (comment lines, blank
    lines), None when nothing does."""
    token = comments[0] if comments else None
    if token is None or not token.value.startswith("#"):
        return comments
    _, newline, rest = token.value.partition("\n")
    if not rest:
        return None
    token.value = newline + rest
    return comments


def replace_code_deps(deps: CommentedSeq, code: list[str]) -> None:
    """`deps` with its code deps replaced by `code`, in place, at the first one's position (the top when none).
    What follows the first run of code-dep lines (a comment, blank lines) stays after the new run."""
    code_at = [i for i, d in enumerate(deps) if is_code_dep(d)]
    start = code_at[0] if code_at else 0
    run_end = start
    while run_end + 1 < len(deps) and is_code_dep(deps[run_end + 1]):
        run_end += 1
    trailing = after_line(deps.ca.items.pop(run_end, None)) if code_at else None
    for i in reversed(code_at):
        del deps[i]  # also moves the later items' comments up
    for offset, dep in enumerate(code):
        deps.insert(start + offset, dep)
    if trailing is not None:
        deps.ca.items[start + len(code) - 1] = trailing


def stage_deps(stage: CommentedMap) -> CommentedSeq:
    """The stage's deps list, a new one after `cmd` where it has none."""
    if "deps" not in stage:
        keys = list(stage)
        stage.insert(keys.index("cmd") + 1 if "cmd" in keys else len(keys), "deps", CommentedSeq())
    return stage["deps"]


def planned(stage: CommentedMap, wanted: list[str]) -> list:
    """The deps `write` gives a stage, as a plain list."""
    deps = CommentedSeq(stage.get("deps", []))
    replace_code_deps(deps, wanted)
    return list(deps)


def differences(path: Path = DVC_YAML, root: Path = REPO) -> list[str]:
    """One line per stage whose code deps differ from its imports (the files missing, the extra ones, or their
    order); [] when `write` would change nothing."""
    lines = []
    for name, stage in yaml().load(path.read_text())["stages"].items():
        listed = [d for d in stage.get("deps", []) if is_code_dep(d)]
        wanted = stage_code_deps(name, root)
        missing, extra = sorted(set(wanted) - set(listed)), sorted(set(listed) - set(wanted))
        parts = [f"{what} {', '.join(files)}" for what, files in (("missing", missing), ("extra", extra)) if files]
        if not parts and stage.get("deps", []) != planned(stage, wanted):
            parts = ["listed out of order"]
        if parts:
            lines.append(f"{name}: {'; '.join(parts)}")
    return lines


def write(path: Path = DVC_YAML, root: Path = REPO) -> list[str]:
    """Rewrite every stage's code deps from its imports, atomically and only when one changes; the stages
    rewritten."""
    rt = yaml()
    dvc = rt.load(path.read_text())
    changed = []
    for name, stage in dvc["stages"].items():
        wanted = stage_code_deps(name, root)
        if stage.get("deps", []) != planned(stage, wanted):
            replace_code_deps(stage_deps(stage), wanted)
            changed.append(name)
    if changed:
        with atomic_open(path, "w") as f:
            rt.dump(dvc, f)
    return changed


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m stages.common.code_deps write [dvc.yaml]` | `check [dvc.yaml]`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("write", "check") or len(args) > 2:
        raise SystemExit(USAGE)
    path = Path(args[1]) if len(args) > 1 else DVC_YAML
    if args[0] == "write":
        changed = write(path)
        print(f"{path}: code deps of {', '.join(changed)} rewritten" if changed
              else f"{path}: code deps already match the imports")
        return
    lines = differences(path)
    if lines:
        raise SystemExit(f"{path}: code deps differ from what the stages import "
                         "(run `python -m stages.common.code_deps write`):\n  " + "\n  ".join(lines))
    print(f"{path}: code deps match the imports")


if __name__ == "__main__":
    run_main(main)
