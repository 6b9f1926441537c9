"""Does the vision path learn from few images? The model's image-only classification against a plain linear
classifier (multinomial logistic regression) on the same normalised pixels of the same records.

Usage: python benchmarks/few_images.py [--per-class 20] [--seeds 0 1 2] [--threads 2] [--set KEY=VALUE ...]
           [--keep DIR] [--out benchmarks/results/few_images.json]

Per seed (the demo's draw and the training's), in a scratch project (`--keep DIR`: DIR/seed<k>, kept) it writes
params.yaml from conf/ with the fine-grained demo (`demo=hard`: 8 shapes, 8 colours with similar hues, pixel
noise) sized so that the train split holds about `--per-class` image-bearing records per class (and no fusion or
held-out records), a test split five times its size, then runs the DAG's own stages demo -> ingest -> validate ->
tokenizer -> shard -> pretrain -> finetune with the default recipe (`--set` overrides it, e.g.
finetune.steps=600). Both classifiers see the image alone:

  model                the fine-tuned model's class head, each record's image as its only input
  logistic regression  torch, full-batch L-BFGS on the flattened images exactly as the loader yields them
                       (the normalised pixels the vision tower reads), features standardised on the train
                       records; its L2 weight from LAMBDAS, picked on the val split

The verdict is on test: the linear classifier's L2 weight was chosen on val, so its val accuracy is the best of
several fits there, while the model's recipe is fixed. Writes {"runs": [{"config", "train_per_class", "records",
"model", "logistic_regression", "seconds"} per seed], "summary"} as JSON and prints a markdown table (val and test
accuracy per seed, records per split) and the summary (test: mean of each, seeds where the model reaches the
linear classifier).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from trimodal.atomic import write_json  # noqa: E402
from trimodal.data.loader import make_loader, read_meta  # noqa: E402

STAGES = ("demo", "ingest", "validate", "tokenizer", "shard", "pretrain", "finetune")
IMAGE_SUBSETS = 4 / 7  # the demo spreads records evenly over the 7 subsets; 4 of them carry an image
TRAIN, TEST = 0.2, 0.5  # split fractions (val: the rest); the train split is the small one
LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def scratch_params(root: Path, per_class: int, seed: int, overrides: list[str]) -> list[str]:
    """The overrides that size the demo for `per_class` train image records per class; writes params.yaml."""
    classes = 8  # demo=hard
    records = round(per_class * classes / (TRAIN * IMAGE_SUBSETS))
    sized = ["demo=hard", f"demo.n_records={records}", "demo.n_fusion=0", "demo.n_corpus=40",
             "demo.n_ood_questions=0", "demo.n_ood_renders=0", f"split.test_fraction={TEST}",
             f"split.val_fraction={1 - TRAIN - TEST:.2f}", f"seed={seed}", *overrides]
    run(root, ["-m", "stages.common.params", "write", *sized], {})
    return sized


def run(root: Path, args: list[str], env: dict) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), "GX_ANALYTICS_ENABLED": "false", **env})
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc.stdout


def images(shards: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [N, 3, S, S], class indices [N]) of the split's labelled records that carry an image."""
    xs, ys = [], []
    for batch in make_loader(shards, split, 64):
        rows = (batch["image_present"] & (batch["label"] >= 0)).nonzero().flatten()
        xs.append(batch["image"][rows])
        ys.append(batch["label"][rows])
    return torch.cat(xs), torch.cat(ys)


@torch.no_grad()
def model_accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    logits = torch.cat([model(pixel_values=chunk, image_present=torch.ones(len(chunk), dtype=torch.bool)).class_logits
                        for chunk in x.split(64)])
    return (logits.argmax(-1) == y).float().mean().item()


def fit_logistic(x: torch.Tensor, y: torch.Tensor, classes: int, weight_decay: float) -> torch.nn.Linear:
    """Multinomial logistic regression, L2 on the weights, to convergence (full-batch L-BFGS)."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(x.shape[1], classes)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=500, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x), y) + weight_decay * linear.weight.pow(2).sum() / 2
        loss.backward()
        return loss

    optimizer.step(closure)
    return linear


def logistic_regression(train: tuple, val: tuple, test: tuple, classes: int) -> dict:
    """Standardised flattened pixels; the L2 weight with the best val accuracy; its val and test accuracy."""
    flat = [x.flatten(1) for x, _ in (train, val, test)]
    mean, std = flat[0].mean(0), flat[0].std(0).clamp_min(1e-6)
    (xt, xv, xs), (yt, yv, ys) = [(f - mean) / std for f in flat], (train[1], val[1], test[1])
    tried = {}
    for weight_decay in LAMBDAS:
        linear = fit_logistic(xt, yt, classes, weight_decay)
        with torch.no_grad():
            tried[weight_decay] = ((linear(xv).argmax(-1) == yv).float().mean().item(),
                                   (linear(xs).argmax(-1) == ys).float().mean().item())
    best = max(LAMBDAS, key=lambda w: (tried[w][0], -w))  # ties: the weaker penalty
    return {"weight_decay": best, "val": tried[best][0], "test": tried[best][1],
            "tried": {str(w): {"val": v, "test": t} for w, (v, t) in tried.items()}}


def measure(root: Path, args: argparse.Namespace, seed: int) -> dict:
    start = time.perf_counter()
    overrides = scratch_params(root, args.per_class, seed, args.overrides)
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    seconds = {}
    for stage in STAGES:
        began = time.perf_counter()
        run(root, ["-m", f"stages.{stage}"], env)
        seconds[stage] = round(time.perf_counter() - began, 1)
        print(f"{stage}: {seconds[stage]} s", flush=True)
    torch.set_num_threads(args.threads)
    from trimodal.model.families import load_pretrained

    shards = str(root / "data/shards")
    train, val, test = (images(shards, split) for split in ("train", "val", "test"))
    names = json.loads((root / "data/shards/index.json").read_text())["labels"]
    per_class = Counter(names[i] for i in train[1].tolist())
    model = load_pretrained(str(root / "models/finetune")).eval()
    return {"config": {"per_class": args.per_class, "seed": seed, "threads": args.threads,
                       "overrides": overrides, "train_records": len(read_meta(shards, "train"))},
            "train_per_class": dict(sorted(per_class.items())),
            "records": {"train": len(train[1]), "val": len(val[1]), "test": len(test[1])},
            "model": {"val": model_accuracy(model, *val), "test": model_accuracy(model, *test)},
            "logistic_regression": logistic_regression(train, val, test, len(names)),
            "seconds": {**seconds, "total": round(time.perf_counter() - start, 1)}}


def summary(runs: list[dict]) -> dict:
    """Test accuracy over the seeds: each classifier's mean and min, and in how many seeds the model reaches the
    linear classifier."""
    model, linear = ([run[name]["test"] for run in runs] for name in ("model", "logistic_regression"))
    return {"seeds": len(runs), "model_test_mean": sum(model) / len(model), "model_test_min": min(model),
            "linear_test_mean": sum(linear) / len(linear), "linear_test_min": min(linear),
            "model_reaches_linear": sum(m >= x for m, x in zip(model, linear, strict=True))}


def markdown(result: dict) -> str:
    rows = []
    for run in result["runs"]:
        n, lr, model, seed = run["records"], run["logistic_regression"], run["model"], run["config"]["seed"]
        counts = run["train_per_class"].values()
        rows += [f"| {seed} | trimodal (finetune, image alone) | {model['val']:.3f} | {model['test']:.3f} | "
                 f"{n['train']} ({min(counts)}-{max(counts)} per class) / {n['val']} / {n['test']} |",
                 f"| {seed} | logistic regression on the pixels (L2 {lr['weight_decay']:g}) | {lr['val']:.3f} | "
                 f"{lr['test']:.3f} | |"]
    s = result["summary"]
    return "\n".join([
        "Image-only classification, demo=hard:", "",
        "| seed | classifier | val | test | train images / val / test |", "| --- | --- | ---: | ---: | --- |", *rows,
        "", f"Test, over {s['seeds']} seed(s): the model {s['model_test_mean']:.3f} mean "
            f"(min {s['model_test_min']:.3f}), the linear classifier {s['linear_test_mean']:.3f} "
            f"(min {s['linear_test_min']:.3f}); the model reaches it in {s['model_reaches_linear']} of {s['seeds']}."])


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=20, help="train image records per class (about)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--keep", metavar="DIR", help="build the scratch project here and keep it")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/few_images.json"))
    args = parser.parse_args(argv)
    if args.per_class < 1 or args.threads < 1:
        parser.error("--per-class and --threads must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    runs = []
    for seed in args.seeds:
        if args.keep:
            root = Path(args.keep).resolve() / f"seed{seed}"
            root.mkdir(parents=True, exist_ok=False)
            runs.append(measure(root, args, seed))
        else:
            with tempfile.TemporaryDirectory(prefix="trimodal-few-images-") as tmp:
                runs.append(measure(Path(tmp), args, seed))
    result = {"runs": runs, "summary": summary(runs)}
    write_json(Path(args.out), result)
    print(markdown(result))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
