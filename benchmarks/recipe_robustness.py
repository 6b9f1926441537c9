"""The default recipe's whole DAG over several seeds and torch thread counts: how robustly it meets the targets.

Usage: python benchmarks/recipe_robustness.py [--seeds 0 1 2] [--threads 1 2] [--parallel 1] [--rev HEAD]
           [--set KEY=VALUE ...] [--reuse-cache] [--keep DIR] [--out benchmarks/results/recipe_robustness.json]

Each run (one seed, one thread count) clones the committed revision `--rev` into a scratch folder, writes its
params.yaml with `python -m stages.common.params write seed=<seed> [--set overrides]` and times `dvc repro` there
with OMP_NUM_THREADS = MKL_NUM_THREADS = <threads> (torch sizes its intra-op pool from OMP_NUM_THREADS; no stage
sets it, except `evaluate.threads` when non-zero and shard's feature pass, which pins 1). It then reads the clone's
metrics/details/eval/{teacher,student,student-int8}.json and judges them with the clone's own
`stages.evaluate.targets()` (against its params.yaml's `evaluate.targets`) plus the teacher target TEACHER_TARGET
(>= 0.95 on every modality subset and group row).

`--parallel N` runs N at once (two 1-thread runs share 2 cores; timings then include the neighbour).
`--reuse-cache` gives every clone one DVC cache: the data stages (up to DATA_STAGE) are restored from its run cache
when a run with the same seed already made them, and every later stage runs with `--no-run-cache`, because its
numbers depend on the thread count, which DVC does not see. A restored stage is listed in the run's `restored`.

Writes {"config", "runs", "summary"} as JSON (a failed run keeps its return code and output tail), prints the
summary and a markdown table of it, and exits non-zero if any run failed. Each run also records the host's fp32
matmul rate before it starts (`machine_gflops`): this machine's speed has moved by 2x between days, and wall times
only compare through it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trimodal.evaluation.scoring import held_out_row  # noqa: E402

VARIANTS = ("teacher", "student", "student-int8")
METRICS = ("vqa_accuracy", "cls_accuracy", "caption_exact")
TEACHER_FLOOR = 0.95
TEACHER_TARGET = "teacher {key} >= 0.95 on every modality subset and group"
TEACHER_TARGET_ALL = "teacher >= 0.95 on every modality subset and group (vqa, cls, caption)"
# issue 31's alignment goals, judged on the instruct and align stages' own metrics (val split)
ALIGNMENT_TARGETS = ("align: held-out preference accuracy >= 0.85",
                     "instruct: held-out instruction templates mean >= 0.80",
                     "align: no task's held-out templates fall (per task, as reports/alignment.md)",
                     "align: no single held-out template falls",
                     "align: val task scores fall <= 1 point",
                     "align: no held-out template falls beyond chance (exact McNemar, one-sided p < 0.05)")
MCNEMAR_ALPHA = 0.05
DATA_STAGE = "shard"  # the last stage whose outputs do not depend on torch's thread count
TAIL_LINES = 60
STAGE_EVENT = re.compile(r"^(?:Running stage|Stage) '([^']+)'")
RUNNING = re.compile(r"^Running stage '([^']+)'")
RESTORED = re.compile(r"^Stage '([^']+)' is cached")

# Runs in the clone, so the targets are those of the revision under test, whatever the working tree holds now.
# Its goals are the clone's params.yaml `evaluate.targets` (--set overrides included); a revision from before
# they moved to conf/ has none and judges by its own.
TARGETS_SCRIPT = """
import json, sys
from pathlib import Path
from trimodal.params import load_params
from stages.evaluate import targets
details = Path(sys.argv[1])
results = {name: json.loads((details / f"{name}.json").read_text()) for name in sys.argv[2:]}
goals = getattr(load_params("params.yaml").evaluate, "targets", None)
judged = targets(results) if goals is None else targets(results, goals)
print(json.dumps([{"name": what, "value": value, "met": bool(met)} for what, value, met in judged]))
"""


# ---------------------------------------------------------------- arguments

def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def override(text: str) -> str:
    key, sep, _ = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if key.lstrip("+~") == "seed":
        raise argparse.ArgumentTypeError("the seed comes from --seeds")
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", nargs="+", type=positive_int, default=[1, 2],
                        help="torch threads per run (OMP_NUM_THREADS, MKL_NUM_THREADS)")
    parser.add_argument("--parallel", type=positive_int, default=1, help="runs at once")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/recipe_robustness.json"))
    parser.add_argument("--keep", metavar="DIR", help="make the run folders (and the shared cache) here and keep them")
    parser.add_argument("--rev", default="HEAD", help="git revision to clone (committed, not the working tree)")
    parser.add_argument("--set", dest="overrides", action="append", type=override, default=[], metavar="KEY=VALUE",
                        help="extra params override for `python -m stages.common.params write` (repeatable)")
    parser.add_argument("--reuse-cache", action="store_true",
                        help="one DVC cache for all runs: the data stages of a seed are made once")
    return parser.parse_args(argv)


def run_specs(seeds: list[int], threads: list[int]) -> list[dict]:
    """Seed-major, so the runs of one seed follow each other (with --reuse-cache the second restores its data)."""
    return [{"index": i, "seed": s, "threads": t}
            for i, (s, t) in enumerate((s, t) for s in seeds for t in threads)]


# ---------------------------------------------------------------- one run

def venv_bin() -> Path:
    """The bin folder of the virtualenv running this script (else the repository's), for the stages' `python`."""
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / "bin"
    return REPO / ".venv" / "bin"


def run_env(clone: Path, threads: int) -> dict[str, str]:
    bin_dir = venv_bin()
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(bin_dir.parent), "PYTHONPATH": str(clone), "PYTHONUNBUFFERED": "1",
            "GX_ANALYTICS_ENABLED": "false", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def resolve_commit(rev: str) -> str:
    """Pinned once, so every run clones the same commit even if the branch moves meanwhile."""
    return subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.strip()


def prepare_clone(clone: Path, commit: str, seed: int, overrides: list[str], env: dict,
                  cache: Path | None) -> None:
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", commit], cwd=clone, check=True)
    subprocess.run([sys.executable, "-m", "stages.common.params", "write", f"seed={seed}", *overrides], cwd=clone,
                   env=env, check=True, capture_output=True, text=True)
    if cache is not None:
        subprocess.run([sys.executable, "-m", "dvc", "cache", "dir", "--local", str(cache)], cwd=clone, env=env,
                       check=True, capture_output=True, text=True)


def terminal_view(line: str) -> str:
    """What a terminal shows of an output line: progress bars redraw it after each carriage return."""
    segments = [part for part in line.rstrip("\n").split("\r") if part.strip()]
    return segments[-1] if segments else ""


def stream(cmd: list[str], cwd: Path, env: dict, log) -> tuple[int, list[tuple[float, str]]]:
    """Run `cmd`, stdout and stderr merged; each line with its seconds since the start (and copied to `log`)."""
    start = time.perf_counter()
    lines = []
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as proc:
        for line in proc.stdout:
            log.write(line)
            lines.append((time.perf_counter() - start, terminal_view(line)))
        returncode = proc.wait()
    lines.append((time.perf_counter() - start, ""))  # the end, which closes the last stage
    return returncode, lines


def stage_seconds(lines: list[tuple[float, str]]) -> tuple[dict[str, float], list[str]]:
    """From `dvc repro`'s timestamped output: seconds of each stage that ran (its "Running stage" line to the next
    stage's line or the end, so DVC's caching of its outputs included) and the stages restored from the run cache."""
    seconds, restored, current = {}, [], None
    for i, (at, line) in enumerate(lines):
        if current and (STAGE_EVENT.match(line) or i == len(lines) - 1):  # the last line is the end
            seconds[current[0]] = round(at - current[1], 2)
            current = None
        if running := RUNNING.match(line):
            current = (running[1], at)
        elif cached := RESTORED.match(line):
            restored.append(cached[1])
    return seconds, restored


def repro(clone: Path, env: dict, reuse_cache: bool) -> tuple[int, float, dict, list, list[str]]:
    """`dvc repro` in the clone -> (return code, wall seconds, stage seconds, restored stages, all output lines)."""
    dvc = [sys.executable, "-m", "dvc", "repro"]
    commands = [[*dvc, DATA_STAGE], [*dvc, "--no-run-cache"]] if reuse_cache else [dvc]
    wall, seconds, restored, output = 0.0, {}, [], []
    with open(clone / "repro.log", "w", buffering=1) as log:  # line-buffered: `tail -f` follows a run
        for cmd in commands:
            returncode, lines = stream(cmd, clone, env, log)
            wall += lines[-1][0]
            ran, cached = stage_seconds(lines)
            seconds.update(ran)
            restored += cached
            output += [line for _, line in lines[:-1]]
            if returncode != 0:
                break
    return returncode, round(wall, 2), seconds, restored, output


def clone_paths(clone: Path) -> dict:
    return yaml.safe_load((Path(clone) / "params.yaml").read_text())["paths"]


def eval_details(clone: Path) -> Path:
    """The clone's metrics/details/eval, as its params.yaml places it."""
    return Path(clone) / clone_paths(clone)["details"] / "eval"


def template_falls(held_out: dict, per_template: bool = True) -> dict[str, float]:
    """"task: template" (or "task", over its held-out templates) -> accuracy before align minus after (positive: it
    fell), from the align stage's details."""
    before, after = held_out["before"], held_out["after"]
    tasks = {task: per for task, per in before.items() if isinstance(per, dict)}
    if not per_template:
        return {task: per["accuracy"] - after[task]["accuracy"] for task, per in tasks.items()}
    return {f"{task}: {template}": scores["accuracy"] - after[task]["templates"][template]["accuracy"]
            for task, per in tasks.items()
            for template, scores in per["templates"].items() if scores["accuracy"] is not None}


def worst_fall(falls: dict[str, float]) -> tuple[str, float]:
    worst = max(falls, key=falls.get)
    return worst, falls[worst]


def alignment(clone: Path) -> tuple[dict, list[dict]]:
    """The alignment stages' scores ({"instruct": ..., "align": ...}) and ALIGNMENT_TARGETS on them; ({}, []) when
    the revision's DAG has no align stage."""
    paths = clone_paths(clone)
    metrics, details = Path(clone) / paths["metrics"], Path(clone) / paths["details"]
    if not (metrics / "align.json").exists() or not (metrics / "instruct.json").exists():
        return {}, []
    instruct, align = (json.loads((metrics / f"{n}.json").read_text()) for n in ("instruct", "align"))
    held_out = json.loads((details / "align.json").read_text())["held_out_templates"]
    task, task_fall = worst_fall(template_falls(held_out, per_template=False))
    template, template_fall = worst_fall(template_falls(held_out))
    scores = {"instruct": {k: v for k, v in instruct.items()
                           if k.startswith("held_out_") and k != "held_out_mean_before"},
              "align": {"preference_accuracy": align["preference_accuracy"],
                        "preference_accuracy_before": align["preference_accuracy_before"],
                        "held_out_templates": align["held_out_templates"],
                        "largest_task_templates_fall": task_fall, "largest_template_fall": template_fall,
                        "max_task_drop": align["max_task_drop"]}}
    targets = [
        {"name": ALIGNMENT_TARGETS[0], "value": f"{align['preference_accuracy']:.3f}",
         "met": align["preference_accuracy"] >= 0.85},
        {"name": ALIGNMENT_TARGETS[1], "value": f"{instruct['held_out_mean']:.3f}",
         "met": instruct["held_out_mean"] >= 0.80},
        {"name": ALIGNMENT_TARGETS[2], "value": f"largest fall {task_fall:+.3f} ({task})", "met": task_fall <= 0},
        {"name": ALIGNMENT_TARGETS[3], "value": f"largest fall {template_fall:+.3f} ({template})",
         "met": template_fall <= 0},
        {"name": ALIGNMENT_TARGETS[4], "value": f"{align['max_task_drop']:.2f} points",  # align's unit: points
         "met": align["max_task_drop"] <= 1.0},
    ]
    changes = [(f"{task}: {template}", c) for task, per in held_out.get("changes", {}).items()
               for template, c in per.items()]
    if changes:  # a revision whose align records each template's missed records (older ones do not)
        name, worst = min(changes, key=lambda item: item[1]["p"])
        scores["align"]["smallest_template_fall_p"] = worst["p"]
        value = f"smallest p {worst['p']:.3f} ({name}: {worst['lost']} lost, {worst['gained']} gained)"
        targets.append({"name": ALIGNMENT_TARGETS[5], "value": value, "met": worst["p"] >= MCNEMAR_ALPHA})
    return scores, targets


def row_metrics(details: dict) -> dict[str, dict[str, float]]:
    """A variant's details file -> {row: {metric: value}} for METRICS, the rows that have them."""
    return {row: {k: scores[k] for k in METRICS if k in scores} for row, scores in details["rows"].items()}


def teacher_targets(teacher_rows: dict[str, dict]) -> list[dict]:
    """TEACHER_TARGET per metric, over every row but "overall" that has the metric (subsets and groups, but not
    held-out groups: `group:ood-...`, which stages.evaluate.targets judges by their gap), worst row shown; and
    TEACHER_TARGET_ALL, met when each of them is."""
    out = []
    for key in METRICS:
        rows = {row: scores[key] for row, scores in teacher_rows.items()
                if row != "overall" and not held_out_row(row) and key in scores}
        if rows:
            worst = min(rows, key=rows.get)
            out.append({"name": TEACHER_TARGET.format(key=key), "value": f"{rows[worst]:.3f} ({worst})",
                        "met": rows[worst] >= TEACHER_FLOOR})
    if out:
        out.append({"name": TEACHER_TARGET_ALL, "value": f"{sum(t['met'] for t in out)}/{len(out)} metrics",
                    "met": all(t["met"] for t in out)})
    return out


def project_targets(clone: Path, env: dict) -> list[dict]:
    """stages.evaluate.targets() of the clone's revision on its details files."""
    proc = subprocess.run([sys.executable, "-c", TARGETS_SCRIPT, str(eval_details(clone)), *VARIANTS], cwd=clone,
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# the host's fp32 matmul rate at the run's thread count (trimodal/training/mfu.py, what MFU divides by on CPU): wall
# times of runs on other days or machines compare through it
SPEED_SCRIPT = """
import torch
from trimodal.training.mfu import peak_flops
print(peak_flops(torch.device("cpu"))[0] / 1e9)
"""


def machine_gflops(clone: Path, env: dict) -> float:
    proc = subprocess.run([sys.executable, "-c", SPEED_SCRIPT], cwd=clone, env=env, capture_output=True, text=True,
                          check=True)
    return round(float(proc.stdout.strip().splitlines()[-1]), 1)


def judge(clone: Path, env: dict) -> dict:
    """The run's per-row metrics of each variant and every target (the project's, then the teacher's)."""
    details = eval_details(clone)
    loaded = {name: json.loads((details / f"{name}.json").read_text()) for name in VARIANTS}
    metrics = {name: row_metrics(d) for name, d in loaded.items()}
    aligned, aligned_targets = alignment(clone)
    if aligned:
        metrics["alignment"] = aligned
    return {"metrics": metrics,
            "targets": project_targets(clone, env) + teacher_targets(metrics["teacher"]) + aligned_targets}


def one_run(spec: dict, root: Path, commit: str, overrides: list[str], cache: Path | None, keep: bool,
            total: int) -> dict:
    label = f"[run {spec['index'] + 1}/{total}] seed {spec['seed']}, threads {spec['threads']}"
    clone = root / f"run{spec['index']}-seed{spec['seed']}-threads{spec['threads']}"
    env = run_env(clone, spec["threads"])
    run = {"seed": spec["seed"], "threads": spec["threads"]}
    print(f"{label}: started", flush=True)
    try:
        prepare_clone(clone, commit, spec["seed"], overrides, env, cache)
        run["machine_gflops"] = machine_gflops(clone, env)
        returncode, wall, seconds, restored, output = repro(clone, env, cache is not None)
        run.update(returncode=returncode, wall_s=wall, stage_s=seconds, restored=restored)
        if returncode == 0:
            run.update(judge(clone, env))
        else:
            run["output_tail"] = "\n".join(output[-TAIL_LINES:])
    except Exception as error:  # one run's failure is recorded; it must not lose the other runs
        detail = getattr(error, "stderr", None) or ""
        run.update(returncode=run.get("returncode", getattr(error, "returncode", None)),
                   error=f"{type(error).__name__}: {error}", output_tail=detail[-4000:])
    run["ok"] = run.get("returncode") == 0 and "error" not in run
    if keep:
        run["folder"] = str(clone)
    else:
        shutil.rmtree(clone, ignore_errors=True)
    print(f"{label}: {headline(run)}", flush=True)
    return run


def headline(run: dict) -> str:
    if not run["ok"]:
        last = run.get("error") or (run.get("output_tail", "").strip().splitlines() or [""])[-1]
        return f"FAILED (return code {run.get('returncode')}) after {run.get('wall_s', 0):.0f} s: {last[-200:]}"
    vqa = {name: run["metrics"][name]["overall"].get("vqa_accuracy") for name in VARIANTS}
    teacher = {row: s["vqa_accuracy"] for row, s in run["metrics"]["teacher"].items() if "vqa_accuracy" in s}
    worst = min(teacher, key=teacher.get)
    met = sum(t["met"] for t in run["targets"])
    return (f"ok in {run['wall_s']:.0f} s; vqa overall teacher {vqa['teacher']:.3f} (worst {teacher[worst]:.3f} "
            f"{worst}), student {vqa['student']:.3f}, int8 {vqa['student-int8']:.3f}; "
            f"targets met {met}/{len(run['targets'])}")


# ---------------------------------------------------------------- summary (pure)

def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def row_order(row: str) -> tuple[int, str]:
    """overall, then the modality subsets, then the groups."""
    return (0 if row == "overall" else 2 if row.startswith("group:") else 1, row)


def summarise(runs: list[dict]) -> dict:
    """runs -> min / median / max of each variant's row metrics, DAG and stage seconds over the successful runs,
    and per target how many of all runs met it (a failed run meets none)."""
    ok = [r for r in runs if r["ok"]]
    metrics: dict[str, dict[str, dict[str, list[float]]]] = {}
    for run in ok:
        for variant, rows in run["metrics"].items():
            for row, scores in rows.items():
                for key, value in scores.items():
                    metrics.setdefault(variant, {}).setdefault(row, {}).setdefault(key, []).append(value)
    names = list(dict.fromkeys(t["name"] for r in runs for t in r.get("targets", [])))
    met = {name: sum(any(t["name"] == name and t["met"] for t in r.get("targets", [])) for r in ok)
           for name in names}
    stages = list(dict.fromkeys(stage for r in ok for stage in r.get("stage_s", {})))
    return {
        "runs": len(runs),
        "failed": len(runs) - len(ok),
        "dag_wall_s": spread([r["wall_s"] for r in ok]) if ok else None,
        "machine_gflops": spread(speeds) if (speeds := [r["machine_gflops"] for r in ok if "machine_gflops" in r])
        else None,
        "runs_with_restored_stages": sum(bool(r.get("restored")) for r in ok),
        "stage_s": {stage: spread([r["stage_s"][stage] for r in ok if stage in r["stage_s"]]) for stage in stages},
        "metrics": {variant: {row: {key: spread(v) for key, v in rows[row].items()}
                              for row in sorted(rows, key=row_order)} for variant, rows in metrics.items()},
        "targets": {name: {"met": met[name], "of": len(runs), "fraction": f"{met[name]}/{len(runs)}"}
                    for name in names},
    }


def markdown(summary: dict) -> str:
    """The teacher's VQA accuracy per row and the alignment stages' scores (min / median / max over the successful
    runs), the targets as k/N, and the DAG wall time."""
    lines = ["| teacher vqa_accuracy | min | median | max |", "| --- | ---: | ---: | ---: |"]
    for row, scores in summary["metrics"].get("teacher", {}).items():
        if "vqa_accuracy" in scores:
            s = scores["vqa_accuracy"]
            lines.append(f"| {row} | {s['min']:.3f} | {s['median']:.3f} | {s['max']:.3f} |")
    aligned = summary["metrics"].get("alignment", {})
    if aligned:
        lines += ["", "| alignment (val) | min | median | max |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {stage} {key} | {s['min']:.3f} | {s['median']:.3f} | {s['max']:.3f} |"
                  for stage, scores in aligned.items() for key, s in scores.items()]
    lines += ["", "| target | runs met |", "| --- | ---: |"]
    lines += [f"| {name} | {t['fraction']} |" for name, t in summary["targets"].items()]
    wall = summary["dag_wall_s"]
    lines += ["", (f"DAG wall time over {wall['n']} successful run(s): min {wall['min']:.0f} s, median "
                   f"{wall['median']:.0f} s, max {wall['max']:.0f} s" if wall else "No run succeeded")
              + (f"; {summary['failed']} of {summary['runs']} run(s) failed" if summary["failed"] else "")
              + (f"; {summary['runs_with_restored_stages']} run(s) restored stages from the shared cache"
                 if summary["runs_with_restored_stages"] else "")
              + (f"; the host's fp32 matmul {speed['min']:.0f}-{speed['max']:.0f} GFLOP/s before the runs"
                 if (speed := summary.get("machine_gflops")) else "") + "."]
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def scratch_root(keep: str | None) -> Path:
    if keep is None:
        return Path(tempfile.mkdtemp(prefix="trimodal-robustness-"))
    root = Path(keep).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    specs = run_specs(args.seeds, args.threads)
    commit = resolve_commit(args.rev)
    if args.parallel * max(args.threads) > (os.cpu_count() or 1):
        print(f"note: {args.parallel} run(s) at once with up to {max(args.threads)} thread(s) each on "
              f"{os.cpu_count()} cores: the wall times include the contention", file=sys.stderr)
    root = scratch_root(args.keep)
    cache = root / "dvc-cache" if args.reuse_cache else None
    try:
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            runs = list(pool.map(lambda spec: one_run(spec, root, commit, args.overrides, cache,
                                                      args.keep is not None, len(specs)), specs))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    summary = summarise(runs)
    config = {"commit": commit, "seeds": args.seeds, "threads": args.threads, "overrides": args.overrides,
              "parallel": args.parallel, "reuse_cache": args.reuse_cache, "cpu_count": os.cpu_count()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": config, "runs": runs, "summary": summary}, indent=2) + "\n")
    print(json.dumps({"config": config, "summary": summary}, indent=2))
    print(f"\nwrote {out}\n\n{markdown(summary)}")
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
