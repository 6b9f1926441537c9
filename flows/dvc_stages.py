"""What the flows need from DVC and Hydra: the stage order and each stage's pool (DVC's own graph of dvc.yaml and
its `meta`, never restated), what a stage reads that other stages write, whether it would run, running it
(`dvc repro -s`, waiting while another DVC process holds the repository lock), the DVC remote, params overrides
(Hydra composition of conf/, as `dvc exp run -S` does) and the output hashes dvc.lock records."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import networkx as nx
import yaml
from dvc.config_schema import RelPath
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo
from dvc.stage import PipelineStage

from stages.common.params import check as check_params
from stages.common.params import merged_overrides, recorded_overrides
from stages.common.params import write as write_params
from trimodal.params import compose as compose_params

DEFAULT_POOL = "cpu"  # a stage without `meta: {pool: ...}` in dvc.yaml
RUN_REMOTE = "trimodal"  # the name a run's DVC remote gets in a clone's .dvc/config.local
REMOTE_ENV = "TRIMODAL_DVC_REMOTE"  # a worker's default for the run's DVC remote


class StageFailed(RuntimeError):
    """A dvc stage exited non-zero; the message carries the end of its output (e.g. the data gate's summary)."""


def stage_order(root: str | Path, targets: Sequence[str] = ()) -> list[str]:
    """dvc.yaml's stage names (not DVC's addressing, which is relative to the current directory), every stage after
    the stages it depends on; with `targets`, only those and what they depend on, as `dvc repro <targets>`."""
    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        order = [stage for stage in reversed(list(nx.topological_sort(graph)))]
        names = {stage.name: stage for stage in order}
        if unknown := [t for t in targets if t not in names]:
            raise KeyError(f"no stage {', '.join(map(repr, unknown))} in dvc.yaml (stages: {', '.join(names)})")
        wanted = {s for t in targets for s in (names[t], *nx.descendants(graph, names[t]))}
        return [stage.name for stage in order if not targets or stage in wanted]


def stage_pools(root: str | Path) -> dict[str, str]:
    """Each stage's work pool, from its `meta: {pool: ...}` in dvc.yaml (DVC itself ignores meta)."""
    with Repo(str(root)) as repo:
        return {stage.name: (stage.meta or {}).get("pool", DEFAULT_POOL) for stage in repo.index.stages}


def _rel(repo: Repo, path: str) -> PurePosixPath:
    return PurePosixPath(os.path.relpath(path, repo.root_dir))


def _find(repo: Repo, name: str) -> PipelineStage:
    stages = {stage.name: stage for stage in repo.index.stages}
    if name not in stages:
        raise KeyError(f"no stage {name!r} in dvc.yaml (stages: {', '.join(stages)})")
    return stages[name]


def _produced(repo: Repo, stage: PipelineStage) -> list[tuple[PurePosixPath, PurePosixPath]]:
    """(dep, out) for each of the stage's deps and each out of another stage that DVC caches, where one lies inside
    the other or they are equal: data/sources holds data/sources/demo; data/validated/manifest.jsonl lies in
    data/validated."""
    outs = [_rel(repo, out.fs_path) for other in repo.index.stages if other is not stage
            for out in other.outs if out.use_cache]
    deps = [_rel(repo, dep.fs_path) for dep in stage.deps if not isinstance(dep, ParamsDependency)]
    return [(dep, out) for dep in deps for out in outs if dep.is_relative_to(out) or out.is_relative_to(dep)]


def _target(dep: PurePosixPath, out: PurePosixPath) -> PurePosixPath:
    """What to pull: the dep when it lies inside the out (DVC 3 pulls a file of a folder out alone), else the out."""
    return dep if dep.is_relative_to(out) else out


def pull_targets(root: str | Path, name: str) -> list[str]:
    """Exactly what `name` reads that other stages produce: the paths to `dvc pull` before running it."""
    with Repo(str(root)) as repo:
        return sorted({str(_target(dep, out)) for dep, out in _produced(repo, _find(repo, name))})


def needs_run(root: str | Path, name: str) -> bool:
    """Would `dvc repro` run this stage? DVC's own verdict with missing data allowed (outs not checked out in a fresh
    clone do not count, as with `--allow-missing`), judged against dvc.lock where deps are not pulled yet: a missing
    dep that is exactly another stage's out is changed when the hashes dvc.lock records for the two differ. A
    missing dep that is part of an out, or holds one, cannot be judged without its data: then the answer is yes
    (pull, ask again)."""
    root = Path(root)
    with Repo(str(root)) as repo:
        stage = _find(repo, name)
        if any(dep != out and not (root / _target(dep, out)).exists() for dep, out in _produced(repo, stage)):
            return True
        upstream = [other for other in repo.index.stages if other is not stage]
        with repo.lock:  # DVC's stage checks take its read/write locks, which need the repository lock
            return stage.changed(allow_missing=True, upstream=upstream)


def persistent_outs(root: str | Path, name: str) -> list[str]:
    """The stage's `persist: true` outs (training checkpoints): DVC keeps them across runs of one workspace, and
    its run cache never covers such a stage."""
    with Repo(str(root)) as repo:
        return [str(_rel(repo, out.fs_path)) for out in _find(repo, name).outs if out.persist]


def stage_key(root: str | Path, name: str) -> str:
    """What the stage's result depends on, hashed: its command, the hashes of its deps and its params values, as
    dvc.lock would record them (the key of DVC's run cache, which DVC does not compute for a stage with
    persistent outs). Equal keys: the same job. The deps must be present (pulled)."""
    from dvc.stage.serialize import to_single_stage_lockfile
    from dvc.utils import dict_sha256

    with Repo(str(root)) as repo, repo.lock:
        stage = _find(repo, name)
        stage.save_deps()
        entry = to_single_stage_lockfile(stage)
    return dict_sha256({key: entry.get(key) for key in ("cmd", "deps", "params")}, exclude=["size", "nfiles"])


def uncached_outs(root: str | Path, name: str) -> list[str]:
    """The stage's `cache: false` outs (metrics, plots, reports): they travel through git, not the DVC remote."""
    with Repo(str(root)) as repo:
        return [str(_rel(repo, out.fs_path)) for out in _find(repo, name).outs if not out.use_cache]


def remote_url(root: str | Path) -> str:
    """The URL of the repository's default DVC remote (config.local included); a folder is made absolute, and
    typed RelPath when the config gives it relative to .dvc/."""
    with Repo(str(root)) as repo:
        name = repo.config["core"].get("remote")
        if not name:
            raise ValueError(f"{root} has no default DVC remote: pass dvc_remote (s3://bucket/prefix or a folder)")
        return repo.config["remote"][name]["url"]


def use_remote(root: str | Path, url: str | None) -> str:
    """Make `url` the clone's default DVC remote (in .dvc/config.local), or keep the committed default; either must
    be reachable from every machine, so a path relative to the clone (the committed `../dvc-storage`) is refused.
    An S3 endpoint other than AWS comes from AWS_ENDPOINT_URL, which dvc-s3 (botocore) reads itself."""
    if url is None:
        committed = remote_url(root)
        if isinstance(committed, RelPath):
            raise ValueError("the committed default DVC remote is a folder inside each clone, which other machines "
                             "cannot see: pass dvc_remote (s3://bucket/prefix, or an absolute folder every worker "
                             f"mounts) or set {REMOTE_ENV}")
        return str(committed)
    if "://" not in url and not Path(url).is_absolute():
        raise ValueError(f"dvc_remote {url!r} is relative: give a URL (s3://bucket/prefix) or an absolute folder")
    with Repo(str(root)) as repo, repo.config.edit("local") as local:
        local["remote"][RUN_REMOTE] = {"url": url}
        local["core"]["remote"] = RUN_REMOTE
    return url


def use_cache(root: str | Path, cache_dir: Path) -> None:
    """Point the clone at a DVC cache outside it (`dvc cache dir --local`), shared by the clones on one worker."""
    with Repo(str(root)) as repo, repo.config.edit("local") as local:
        local["cache"]["dir"] = str(cache_dir)


def lock_outs(root: str | Path) -> list[dict]:
    """Every output dvc.lock records: stage, path, md5, size, nfiles (the run's lineage)."""
    lock = yaml.safe_load((Path(root) / "dvc.lock").read_text()) or {}
    return [{"stage": stage, "out": out["path"], "md5": out.get("md5"), "size": out.get("size"),
             "nfiles": out.get("nfiles")}
            for stage, entry in lock.get("stages", {}).items() for out in entry.get("outs", [])]


def dvc(root: str | Path, *args: str) -> str:
    """Run `dvc <args>` in root. While another dvc process holds the repository lock, DVC itself waits for it
    (`--wait-for-lock`) instead of failing: no polling, no lost turn."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "dvc", "--wait-for-lock", *args], cwd=root, env=env,
                          capture_output=True, text=True)
    if proc.returncode == 0:
        return proc.stdout + proc.stderr
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
    raise StageFailed(f"dvc {' '.join(args)} failed (exit {proc.returncode}):\n{tail}")


def run_stage(root: str | Path, stage: str, force: bool = False, run_cache: bool = False) -> str:
    """`dvc repro` of one stage. `run_cache`: first fetch DVC's run cache from the remote (`--pull`), so a stage
    that ran before with the same code, params and deps, on any machine, is restored instead of run again."""
    return dvc(root, "repro", "--single-item", *(["--force"] if force else []), *(["--pull"] if run_cache else []),
               stage)


RESTORED = "is cached - skipping run"  # what `dvc repro` prints when it restores a stage from the run cache


def restored(output: str) -> bool:
    return RESTORED in output


class ParamsDiverged(RuntimeError):
    """params.yaml is not the composition of conf/: someone edited it by hand."""


def apply_overrides(root: str | Path, overrides: Sequence[str]) -> dict:
    """Compose conf/ with Hydra `overrides` (e.g. pretrain.steps=3) on top of those the checked-out params.yaml
    records, and write params.yaml. Refuses when params.yaml is not such a composition: composing again would
    silently drop that hand edit."""
    root = Path(root).resolve()
    recorded = recorded_overrides(root / "params.yaml")
    if diverged := check_params(root / "params.yaml", recorded, root / "conf"):
        raise ParamsDiverged("params.yaml differs from conf/ (conf/ is the source: edit it, then "
                             "`python -m stages.common.params write`):\n  " + "\n  ".join(diverged))
    combined = merged_overrides(recorded, overrides)
    params = compose_params(combined, root / "conf")
    write_params(root / "params.yaml", params, combined)
    return params
