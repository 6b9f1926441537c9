"""Configuration mistakes said in one line: `ConfigError`, the pieces of its messages (the nearest real key, the type
the schema expects), and `run_main`, which prints one for a `python -m` entry point instead of a traceback."""
from __future__ import annotations

import dataclasses
import difflib
import sys
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence

BAD_CONFIG = 2  # exit code, as argparse's for a bad command line


class ConfigError(ValueError):
    """A configuration the user can fix (a group choice, a key, a value's type), in one line naming it."""


def run_main(main: Callable[[], object]) -> None:
    """Run a `python -m` entry point: a ConfigError is `error: <its line>` on stderr and exit code 2; any other
    exception keeps its traceback."""
    try:
        main()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(BAD_CONFIG)


def unknown_key(key: str, known: Iterable[str]) -> ConfigError:
    near = difflib.get_close_matches(key, sorted(set(known)), n=1)
    return ConfigError(f"unknown key {key}" + (f"; did you mean {near[0]}?" if near else ""))


def dotted(values, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a nested dict, its sections included (`validate`, `validate.max_pixels`)."""
    for key, value in values.items() if isinstance(values, dict) else ():
        yield prefix + str(key)
        yield from dotted(value, f"{prefix}{key}.")


def key_of(override: str) -> str:
    """`+a.b=1` -> `a.b` (Hydra's add / delete prefixes dropped)."""
    return override.split("=", 1)[0].lstrip("+~")


def override_key(key: str, overrides: Sequence[str]) -> str:
    """The key of the override below `key` (OmegaConf names only the first unknown level) or above it (a mapping
    value holding the unknown key), else `key`."""
    return next((k for k in map(key_of, overrides) if k == key or k.startswith(key + ".") or key.startswith(k + ".")),
                key)


def expected_type(schema: type, key: str) -> str | None:
    """What the dataclass `schema` expects at a dotted key (`a.b`, `a.b[0]`), in words; None past a plain dict."""
    annotation: object = schema
    for part in key.split("."):
        name, _, index = part.partition("[")
        annotation = _without_none(annotation)
        if not dataclasses.is_dataclass(annotation):
            return None
        annotation = typing.get_type_hints(annotation).get(name)
        if annotation is None:
            return None
        if index:
            annotation = typing.get_args(annotation)[0]
    return _type_name(annotation)


def _is_union(annotation) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _without_none(annotation):
    """`X | None` -> X (a section that may be null, such as pretrain.adaptor_warmup)."""
    if _is_union(annotation):
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def _type_name(annotation) -> str:
    args = typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if _is_union(annotation):
        return " or ".join(_type_name(a) for a in args)
    if typing.get_origin(annotation) is list:
        return f"a list of {_type_name(args[0])}"
    if annotation is dict or typing.get_origin(annotation) is dict:
        return "a mapping"
    if dataclasses.is_dataclass(annotation):
        return f"a mapping of {annotation.__name__} fields"
    return getattr(annotation, "__name__", str(annotation))


def one_line(text: object) -> str:
    """An OmegaConf / Hydra message on one line, less its `full_key:` / `object_type=` details and doc links."""
    details = ("full_key:", "object_type=", "reference_type=", "See https://", "Config search path:", "provider=")
    lines = [line.strip() for line in str(text).splitlines()]
    return "; ".join(line for line in lines if line and not line.startswith(details))


def yaml_problem(e: Exception) -> str:
    """A YAML parser's complaint and its line."""
    mark = getattr(e, "problem_mark", None)
    return f"{getattr(e, 'problem', None) or e}" + (f" at line {mark.line + 1}" if mark else "")
