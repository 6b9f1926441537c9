"""`python -m stages.common.params write [overrides...]` | `check [overrides...]`: params.yaml composed from conf/,
and checked against it (the pipeline's side of the parameters; the schema, `load_params` and the composition itself
are the library's, trimodal/params.py).
"""
from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from trimodal.config_errors import run_main
from trimodal.params import CONF_DIR, _typed, compose

HEADER = ("# GENERATED from conf/ by `python -m stages.common.params write`: edit conf/, not this file.\n"
          "# DVC tracks it and `dvc repro` reads it; tests/test_params.py checks it against conf/.\n")


def differences(expected: dict, actual: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts, with both values."""
    out = []
    for key in sorted(set(expected) | set(actual), key=str):
        a, b = expected.get(key, "<absent>"), actual.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: conf/ has {a!r}, params.yaml has {b!r}")
    return out


OVERRIDES_LINE = "# overrides: "


def write(path: Path, values: dict, overrides: Sequence[str] = ()) -> None:
    """params.yaml from composed `values`, naming the Hydra `overrides` they were composed with (so `check` can
    tell a composition from a hand edit). Values the schema refuses raise ConfigError and leave `path` as it was."""
    from trimodal.atomic import atomic_open

    _typed(values)  # a wrong type is told now, not when a stage reads params.yaml
    with atomic_open(path, "w") as f:
        f.write(HEADER + (OVERRIDES_LINE + shlex.join(overrides) + "\n" if overrides else ""))
        yaml.safe_dump(values, f, sort_keys=False)


def recorded_overrides(path: Path) -> list[str]:
    """The overrides a params.yaml says it was composed with (its `# overrides:` line), [] when none."""
    for line in Path(path).read_text().splitlines():
        if not line.startswith("#"):
            break
        if line.startswith(OVERRIDES_LINE):
            return shlex.split(line[len(OVERRIDES_LINE):])
    return []


def merged_overrides(first: Sequence[str], then: Sequence[str]) -> list[str]:
    """`then` on top of `first`: one override per key (the text before `=`), the later one winning."""
    by_key = {o.split("=", 1)[0]: o for o in first}
    by_key.update({o.split("=", 1)[0]: o for o in then})
    return list(by_key.values())


def check(path: Path = Path("params.yaml"), overrides: Sequence[str] | None = None,
          conf_dir: Path = CONF_DIR) -> list[str]:
    """The differences between params.yaml and conf/ composed with `overrides` (default: the ones params.yaml
    records); [] when they agree."""
    overrides = recorded_overrides(path) if overrides is None else overrides
    return differences(compose(overrides, conf_dir), yaml.safe_load(Path(path).read_text()) or {})


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m stages.common.params write [overrides...]` | `check [overrides...]`, from the repository root."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("write", "check"):
        raise SystemExit("usage: python -m stages.common.params write|check [hydra overrides...]")
    command, overrides = args[0], args[1:]
    if command == "write":
        write(Path("params.yaml"), compose(overrides), overrides)
        print("params.yaml written from conf/" + (f" with {' '.join(overrides)}" if overrides else ""))
        return
    diverged = check(Path("params.yaml"), overrides or None)
    if diverged:
        raise SystemExit("params.yaml differs from conf/ (edit conf/, then `python -m stages.common.params write`):\n  "
                         + "\n  ".join(diverged))
    print("params.yaml agrees with conf/")


if __name__ == "__main__":
    run_main(main)
