"""`trimodal report`: the last evaluation side by side in the terminal, one column per model and baseline.

It reads the evaluate stage's headline files, <paths.metrics>/eval/<name>.json (flat: score -> number), the ones
`dvc metrics show` lists; reports/report.md holds the full report (per modality subset, robustness, speed).

`trimodal report --compare REV REV ...` puts evaluations of several git revisions or DVC experiments side by side,
per modality subset: e.g. the two model families, `dvc exp run -n deepseek-vl -S model=deepseek_vl` next to
HEAD's trimodal run. It reads each one's <paths.details>/eval/<variant>.json as committed at that revision
(dvc.api.read: the details are git-tracked), so nothing is re-run.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

ORDER = ("teacher", "student", "student-int8", "majority", "question_prior", "random_ranking")


def read_headlines(eval_dir: Path) -> dict[str, dict]:
    files = sorted(eval_dir.glob("*.json"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 99, p.stem))
    if not files:
        raise FileNotFoundError(f"no evaluation in {eval_dir}: run `dvc repro evaluate` first")
    return {p.stem: json.loads(p.read_text()) for p in files}


def _cell(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def table(headlines: dict[str, dict]) -> str:
    """Rows = scores (in first-seen order), columns = models and baselines; '-' where one has no such score."""
    keys = list(dict.fromkeys(k for scores in headlines.values() for k, v in scores.items()
                              if not isinstance(v, dict | list)))
    rows = [[key, *(_cell(scores.get(key)) for scores in headlines.values())] for key in keys]
    return _grid(["", *headlines], rows)


COMPARED = ("vqa_accuracy", "cls_accuracy", "caption_exact", "cider")
COUNT_OF = {"vqa_accuracy": "n_vqa", "cls_accuracy": "n_cls", "caption_exact": "n_caption", "cider": "n_caption"}


def read_at(path: str, rev: str) -> dict:
    """A JSON file as committed at a git revision or DVC experiment name."""
    import dvc.api

    return json.loads(dvc.api.read(path, rev=rev))


def compare(revs: list[str], details: str, variant: str = "teacher", metrics: tuple[str, ...] = COMPARED,
            read: Callable[[str, str], dict] = read_at) -> str:
    """One table per metric: rows = overall, each modality subset, each record group; columns = the revisions
    (with the family each evaluated); n = the row's records carrying the metric's target at each revision, so a
    family that skips records (DeepSeek-VL: audio only) shows it."""
    results = {rev: read(f"{details}/eval/{variant}.json", rev) for rev in revs}
    heads = [f"{rev} ({results[rev].get('family', 'trimodal')})" for rev in revs]
    out = [f"{variant}, per modality subset; parameters: "
           + ", ".join(f"{h} {results[r]['parameters']:,}" for h, r in zip(heads, revs, strict=True))]
    for metric in metrics:
        rows = sorted({row for r in results.values() for row, scores in r["rows"].items() if metric in scores},
                      key=row_order)
        if not rows:
            continue
        body = []
        for row in rows:
            cells = [results[rev]["rows"].get(row, {}) for rev in revs]
            body.append([row, *(f"{c[metric]:.3f} (n={c[COUNT_OF[metric]]})" if metric in c else "-"
                                for c in cells)])
        out += ["", metric, _grid(["row", *heads], body)]
    return "\n".join(out)


def row_order(row: str) -> tuple:
    """overall, then the modality subsets (fewest modalities first), then the record groups."""
    return (row != "overall", row.startswith("group:"), row.count("+"), row)


def _grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
