"""`trimodal report`: the last evaluation side by side in the terminal, one column per model and baseline.

It reads the evaluate stage's headline files, <paths.metrics>/eval/<name>.json (flat: score -> number), the ones
`dvc metrics show` lists; reports/report.md holds the full report (per modality subset, robustness, speed).
"""
from __future__ import annotations

import json
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
    header = ["", *headlines]
    rows = [[key, *(_cell(scores.get(key)) for scores in headlines.values())] for key in keys]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
