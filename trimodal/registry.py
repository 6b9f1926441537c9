"""The model registry the DVC way: dvc.yaml's `artifacts:` name the models (teacher, student, student-int8), and
GTO's git tags record their versions and stages (https://dvc.org/doc/gto/user-guide):

    <artifact>@v<semver>       a registered version: the commit whose dvc.lock records the model's files
    <artifact>#<stage>#<n>     the n-th assignment of a stage, e.g. student-int8#prod#3: production is that version

`gto show`, `dvc artifacts get . student-int8 --stage prod` and DVC Studio read the same tags.

`promote` makes HEAD's model production only when it beats the production model on the test split. Both models
are scored now, by the same code, on the current shards' `evaluate.split`: the production model's files come from
its tag through DVC (cache or remote). Only when they cannot be had (or no longer load) is HEAD's model compared with
the scores recorded at the production tag (metrics/eval/<artifact>.json), on that revision's test split, and the
message says so. "Beats" (conf/promote/default.yaml): lower on none of `promote.metrics` (perplexity: higher on
none) and better on at least one, so a nightly retrain that got worse, or merely no better, never replaces
the production model. The first promotion of an artifact needs nothing to beat.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

LOWER_IS_BETTER = {"perplexity"}
SCORED = ("vqa_accuracy", "cls_accuracy", "cls_macro_f1", "caption_exact", "bleu4", "rouge_l", "cider", "perplexity")
LOCK = "dvc.lock"


class PromoteError(RuntimeError):
    """The repository is not in a state to promote from; the message names the fix."""


@dataclass
class PromoteResult:
    """What `promote` decided. `promoted`: HEAD's model is production now (or already was). `message`: the
    decision with every score compared, for a person. `tags`: the git tags created (pushed with push=True)."""
    variant: str
    promoted: bool
    message: str
    revision: str
    candidate: dict[str, float]
    production: dict[str, float] | None = None
    production_version: str | None = None
    version: str | None = None
    rescored: bool = True  # False: the production scores are the ones recorded at its tag
    tags: list[str] = field(default_factory=list)


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PromoteError(f"git {' '.join(args)} failed in {repo}: {(proc.stdout + proc.stderr).strip()[-2000:]}")
    return proc.stdout.strip()


def artifacts(repo: Path) -> dict[str, str]:
    """dvc.yaml's `artifacts:` of type model: name -> path (as DVC resolves ${paths.*})."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        return {name: art.path for file in dvc.artifacts.read().values() for name, art in file.items()
                if art.type == "model"}


def model_files(repo: Path, path: str) -> tuple[str, list[str]]:
    """(the stage that writes the model in `path`, the files it declares there); the card evaluate writes beside
    them is not the model."""
    from dvc.repo import Repo

    from trimodal.cards import CARD

    with Repo(str(repo)) as dvc:
        for stage in dvc.index.stages:
            outs = [str(Path(out.fs_path).relative_to(Path(repo).resolve())) for out in stage.outs]
            inside = [out for out in outs if Path(out).parent == Path(path) and Path(out).name != CARD]
            if inside:
                return stage.name, inside
    raise PromoteError(f"no stage in dvc.yaml writes files in {path}")


def check_workspace(repo: Path, stage: str, files: Sequence[str]) -> dict[str, str]:
    """The model files in the workspace must be the ones HEAD's dvc.lock records (what the version tag will point
    at). Returns HEAD's dvc.lock md5 of every out (the shards' is the data version)."""
    if git(repo, "status", "--porcelain", "--", LOCK):
        raise PromoteError(f"{LOCK} has uncommitted changes: commit it (git add {LOCK} && git commit) so the version "
                           "tag points at the lock that records this model")
    from trimodal.cards import lock_md5s

    md5s = lock_md5s(yaml.safe_load(git(repo, "show", f"HEAD:{LOCK}")))
    for name in files:
        if name not in md5s:
            raise PromoteError(f"HEAD's {LOCK} records no {name}: run `dvc repro {stage}` and commit {LOCK}")
        if not (repo / name).exists():
            raise PromoteError(f"{name} is missing: `dvc pull {stage}` (or `dvc checkout {stage}`) first")
        if hashlib.md5((repo / name).read_bytes()).hexdigest() != md5s[name]:  # DVC 3's md5 of a file
            raise PromoteError(f"{name} differs from HEAD's {LOCK}: `dvc checkout {stage}` restores HEAD's model, or "
                               f"commit the {LOCK} of the model you mean to promote")
    return md5s


def score(model_dir: Path, repo: Path, params) -> dict[str, float]:
    """The model's task scores on `evaluate.split` of the repository's shards, overall, as evaluate computes them
    (trimodal/evaluation/predict.py, trimodal/evaluation/scoring.py), with the evaluate stage's batch size and
    token budget."""
    from transformers import AutoTokenizer

    from trimodal.evaluation.predict import predict
    from trimodal.evaluation.scoring import task_scores
    from trimodal.model.quantization import load_saved

    p = params.evaluate
    shards = p.shards if "://" in p.shards else str(repo / p.shards)
    records = predict(load_saved(model_dir), AutoTokenizer.from_pretrained(model_dir), shards, p.split, p.batch_size,
                      p.max_new_tokens, seed=params.seed)["records"]
    scores = task_scores(records)
    return {k: float(scores[k]) for k in SCORED if k in scores} | {"n": len(records)}


def beats(candidate: dict, production: dict, metrics: Sequence[str]) -> tuple[bool, list[str]]:
    """(candidate beats production, one line per metric). Beats: worse on none of `metrics`, better on at least
    one. A metric neither model has (e.g. no labelled test record) is left out; one only production has is a loss."""
    lines, better, worse = [], False, False
    for key in metrics:
        c, p = candidate.get(key), production.get(key)
        if c is None and p is None:
            lines.append(f"  {key:<14} not scored for either model (no test record carries its target)")
            continue
        if c is None or p is None:
            worse = worse or c is None
            lines.append(f"  {key:<14} HEAD {_num(c)} vs production {_num(p)}: only one of them is scored")
            continue
        gain = (p - c) if key in LOWER_IS_BETTER else (c - p)
        better, worse = better or gain > 0, worse or gain < 0
        verdict = "better" if gain > 0 else "worse" if gain < 0 else "equal"
        lines.append(f"  {key:<14} HEAD {c:.4f} vs production {p:.4f}: {verdict}")
    return better and not worse, lines


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def production_version(repo: Path, variant: str, stage: str):
    """The version GTO says holds `stage` now (its tag, version, commit), or None."""
    from gto.api import find_versions_in_stage
    from gto.exceptions import ArtifactNotFound

    try:
        found = find_versions_in_stage(str(repo), variant, stage)
    except ArtifactNotFound:  # no tag names the artifact yet
        return None
    return found[0] if found else None


def production_scores(repo: Path, variant: str, found, params) -> tuple[dict | None, bool, str]:
    """(scores, rescored, note): the production model scored now on the current test split, its files fetched at
    its commit through DVC; else the scores recorded at its tag (metrics/eval/<variant>.json), with why."""
    from dvc.repo import Repo

    try:
        with tempfile.TemporaryDirectory() as tmp, Repo(str(repo)) as dvc:
            folder = Path(tmp) / variant
            dvc.artifacts.download(variant, version=found.version, out=str(folder))
            return score(folder, repo, params), True, "both scored now on the same split"
    except Exception as e:  # noqa: BLE001 - any failure to fetch or load it: fall back to its recorded scores, say why
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    recorded = f"{params.paths.metrics}/eval/{variant}.json"
    try:
        scores = json.loads(git(repo, "show", f"{found.commit_hexsha}:{recorded}"))
    except (PromoteError, json.JSONDecodeError):
        return None, False, f"its files could not be had ({reason}) and its commit has no {recorded}"
    scores = scores["rows"]["overall"] if "rows" in scores else scores  # the layout before the headline files
    return scores, False, (f"its files could not be had ({reason}): compared with the scores recorded at its tag "
                           f"({recorded}), which were measured on the test split of its own revision")


def tag_version(repo: Path, variant: str, stage: str, author: str | None, email: str | None,
                push: bool) -> tuple[str, list[str]]:
    """Register HEAD as a new version of `variant` (unless it is one already) and assign it `stage`: the GTO tags."""
    from gto.api import assign, register

    head = git(repo, "rev-parse", "HEAD")
    existing = [tag for tag in git(repo, "tag", "--points-at", head).splitlines() if tag.startswith(f"{variant}@v")]
    created = []
    if existing:
        version = existing[0].split("@", 1)[1]
    else:
        version = register(str(repo), variant, head, author=author, author_email=email, push=push).version
        created.append(f"{variant}@{version}")
    before = set(git(repo, "tag", "--points-at", head).splitlines())
    assign(str(repo), variant, stage, version=version, author=author, author_email=email, push=push)
    created += sorted(set(git(repo, "tag", "--points-at", head).splitlines()) - before)
    return version, created


def promote(variant: str = "student-int8", repo: Path = Path("."), metrics: Sequence[str] | None = None,
            push: bool = False, author: str | None = None, author_email: str | None = None) -> PromoteResult:
    """Make HEAD's `variant` (a dvc.yaml artifact: teacher, student, student-int8) the production model, only if it
    beats the current production model on the test split (module docstring); the first promotion always succeeds.

    `repo`: the repository root; its workspace must hold HEAD's model files and the shards (`dvc pull`), and
    dvc.lock must be committed. `metrics`: the scores to compare (default params.yaml `promote.metrics`).
    `push`: push the new tags to `origin`. `author`, `author_email`: the tagger (default: git's configuration).
    Returns a PromoteResult whose `message` says why, with every score; refusing is not an error (promoted=False).
    Raises PromoteError when the repository is not in a state to promote from (the message names the fix)."""
    from trimodal.config_errors import ConfigError
    from trimodal.params import load_params

    repo = Path(repo).resolve()
    if not (repo / "dvc.yaml").is_file() or not (repo / "params.yaml").is_file():
        raise PromoteError(f"{repo} is not a trimodal project (no dvc.yaml / params.yaml): run from its root")
    try:
        params = load_params(repo / "params.yaml")
    except ConfigError as e:
        raise PromoteError(f"{repo / 'params.yaml'}: {e}") from None
    metrics = list(metrics or params.promote.metrics)
    if unknown := [m for m in metrics if m not in SCORED]:
        raise PromoteError(f"promote.metrics: {unknown} are not scores promote computes ({', '.join(SCORED)})")
    known = artifacts(repo)
    if variant not in known:
        raise PromoteError(f"no model artifact {variant!r} in dvc.yaml (artifacts: {', '.join(known)})")
    stage, files = model_files(repo, known[variant])
    md5s = check_workspace(repo, stage, files)
    head = git(repo, "rev-parse", "HEAD")
    version = f"DVC md5 {md5s[params.paths.shards]}" if params.paths.shards in md5s else "not recorded by DVC"
    split = f"{params.evaluate.split} split of {params.evaluate.shards} ({version})"
    candidate = score(repo / known[variant], repo, params)
    found = production_version(repo, variant, params.promote.stage)
    result = PromoteResult(variant, False, "", head, candidate)
    if found is not None:
        result.production_version = found.version
        if found.commit_hexsha == head:
            result.promoted, result.version = True, found.version
            result.message = f"{variant}: HEAD ({head[:10]}) is {params.promote.stage} already ({found.version})"
            return result
        production, result.rescored, note = production_scores(repo, variant, found, params)
        result.production = production
        won, lines = beats(candidate, production or {}, metrics) if production else (False, [])
        where = f"{params.promote.stage} {found.version} (commit {found.commit_hexsha[:10]})"
        rule = (f"Rule: lower on none of {', '.join(metrics)} and better on at least one "
                "(promote.metrics, conf/promote/default.yaml).")
        if not won:
            result.message = "\n".join([f"{variant}: NOT promoted. HEAD ({head[:10]}) does not beat {where} on the "
                                        f"{split}, {candidate['n']} records; {note}:", *lines, rule])
            return result
        header = f"{variant}: HEAD ({head[:10]}) beats {where} on the {split}; {note}:"
    else:
        header = (f"{variant}: no {params.promote.stage} version yet, so HEAD ({head[:10]}) needs nothing to beat; "
                  f"its scores on the {split}, {candidate['n']} records:")
        lines = [f"  {key:<14} {_num(candidate.get(key))}" for key in metrics]
        rule = ""
    result.version, result.tags = tag_version(repo, variant, params.promote.stage, author, author_email, push)
    result.promoted = True
    result.message = "\n".join([header, *lines, *([rule] if rule else []),
                                f"Promoted: {variant} {result.version} is {params.promote.stage} "
                                f"(tags {', '.join(result.tags)}{', pushed' if push else ''})."])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m trimodal.registry [variant] [--push]` from the repository root: exit 0 promoted (or already
    production), 1 refused (not better), 2 not in a state to promote (the message names the fix). `trimodal
    promote` is the same function behind the project's command."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m trimodal.registry", description=promote.__doc__.split("\n")[0])
    parser.add_argument("variant", nargs="?", default="student-int8", help="teacher, student or student-int8")
    parser.add_argument("--push", action="store_true", help="push the new tags to origin")
    args = parser.parse_args(argv)
    try:
        result = promote(args.variant, Path("."), push=args.push)
    except PromoteError as e:
        print(e, file=sys.stderr)
        return 2
    print(result.message)
    return 0 if result.promoted else 1


if __name__ == "__main__":
    raise SystemExit(main())
