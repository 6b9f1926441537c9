"""The batch-level data gate of the `validate` stage: Great Expectations 1.x suites over the feature table.

Two suites, each run on an in-memory pandas batch through a file-mode GX context in a scratch directory:
  batch     the whole feature table (every input row): its size and how many rows were rejected
  records   the accepted rows only: ids, media sizes and lengths within the limits, at least one input
Data Docs (static HTML) are built into the caller's docs directory; everything else GX writes stays in
the context directory. Record-level problems are quarantined before this runs; the gate judges the batch.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

FEATURE_COLUMNS = ("id", "status", "reason", "has_image", "has_audio", "has_text", "image_width", "image_height",
                   "audio_seconds", "text_chars", "caption_chars")
FLAG_COLUMNS = ("has_image", "has_audio", "has_text")
NUMBER_COLUMNS = ("image_width", "image_height", "audio_seconds", "text_chars", "caption_chars")
DATASOURCE = "trimodal_features"
DOCS_SITE = "trimodal_validate"
MAX_EXAMPLES = 5


@dataclass
class GateLimits:
    max_reject_fraction: float
    min_side: int
    max_pixels: int
    max_seconds: float
    max_caption_chars: int


@dataclass
class GateResult:
    success: bool
    summary: str  # one PASS/FAIL line per suite, then expected vs observed for each failed expectation
    suites: dict[str, bool]  # suite name -> success
    docs_index: Path | None  # Data Docs index.html


@dataclass
class _Check:
    """One expectation plus the sentence a person reads when it fails."""

    expectation: Any  # a great_expectations Expectation
    expected: str
    observed: Any = None  # result dict -> str; None: a generic description of the result

    def __post_init__(self):
        self.expectation.meta = {"gate_check": self.expected}  # finds this check again from its result
        self.expectation.notes = f"Gate: {self.expected}"  # shown on the suite's Data Docs page


def features_summary_metrics(features: pd.DataFrame) -> dict:
    """Counts for DVC metrics: rows, accepted/rejected, accepted per modality, rejections by reason category."""
    table, accepted = _frames(features)
    quarantined = table[table["status"] != "accepted"]
    categories = quarantined["reason"].fillna("").astype(str).str.split(":", n=1).str[0].str.strip()
    rejected = int((table["status"] == "rejected").sum())
    return {
        "n_rows": len(table),
        "n_accepted": len(accepted),
        "n_rejected": rejected,
        "n_duplicates": int((table["status"] == "duplicate").sum()),
        "reject_fraction": rejected / len(table) if len(table) else 0.0,
        "accepted_by_modality": {kind: int(accepted[f"has_{kind}"].sum()) for kind in ("image", "audio", "text")},
        "rejected_by_reason": {(k or "unknown"): int(v) for k, v in sorted(categories.value_counts().items())},
    }


def _frames(features: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The whole table with the expected columns and dtypes, and the accepted rows plus derived columns."""
    table = features.copy()
    for column in FEATURE_COLUMNS:
        if column not in table:
            table[column] = pd.Series(dtype=object)
    for column in FLAG_COLUMNS:
        table[column] = table[column].eq(True)  # missing -> False
    for column in NUMBER_COLUMNS:
        table[column] = pd.to_numeric(table[column], errors="coerce").astype(float)
    # Keep the feature-table index so GX's unexpected indexes point at input rows.
    accepted = table[table["status"] == "accepted"].copy()
    accepted["image_pixels"] = accepted["image_width"] * accepted["image_height"]
    accepted["n_inputs"] = accepted[list(FLAG_COLUMNS)].sum(axis=1).astype(int)
    return table, accepted


def _accepted_mostly(max_reject_fraction: float) -> float:
    """GX `mostly` for 'accepted' so that exactly max_reject_fraction rejected still passes.

    mostly must lie in [0, 1]; the tiny slack keeps k/n == 1 - f from failing on float rounding.
    """
    if max_reject_fraction <= 0:
        return 1.0
    return max(0.0, 1.0 - max_reject_fraction - 1e-12)


def _batch_checks(gxe: Any, limits: GateLimits) -> list[_Check]:
    allowed = limits.max_reject_fraction

    def reject_fraction(result: dict) -> str:
        rejected, total = result.get("unexpected_count") or 0, result.get("element_count") or 0
        fraction = rejected / total if total else 0.0
        return f"reject fraction {fraction:.4g} > allowed {allowed:.4g} ({rejected} of {total} rows rejected)"

    return [
        _Check(gxe.ExpectTableRowCountToBeBetween(min_value=1), "the feature table has at least 1 row",
               lambda r: f"observed {r.get('observed_value')} rows"),
        _Check(gxe.ExpectColumnValuesToNotBeNull(column="status"), "every row has a status"),
        _Check(gxe.ExpectColumnValuesToBeInSet(column="status", value_set=["accepted", "rejected", "duplicate"]),
               "status is 'accepted', 'rejected' or 'duplicate'"),
        _Check(gxe.ExpectColumnDistinctValuesToContainSet(column="status", value_set=["accepted"]),
               "at least one row is accepted",
               lambda r: "no row has status 'accepted'"),
        # duplicates are quarantined but are not bad data: a scrape that repeats itself still passes
        _Check(gxe.ExpectColumnValuesToBeInSet(column="status", value_set=["accepted", "duplicate"],
                                               mostly=_accepted_mostly(allowed)),
               f"at most a fraction {allowed:.4g} of rows rejected", reject_fraction),
    ]


def _records_checks(gxe: Any, limits: GateLimits) -> list[_Check]:
    between = gxe.ExpectColumnValuesToBeBetween
    return [
        _Check(gxe.ExpectColumnValuesToNotBeNull(column="id"), "every accepted row has an id"),
        _Check(gxe.ExpectColumnValuesToBeUnique(column="id"), "accepted ids are unique"),
        _Check(between(column="image_width", min_value=limits.min_side),
               f"image_width >= min_side {limits.min_side}"),
        _Check(between(column="image_height", min_value=limits.min_side),
               f"image_height >= min_side {limits.min_side}"),
        _Check(between(column="image_pixels", max_value=limits.max_pixels),
               f"image_pixels (image_width * image_height) <= max_pixels {limits.max_pixels}"),
        _Check(between(column="audio_seconds", min_value=0, max_value=limits.max_seconds, strict_min=True),
               f"0 < audio_seconds <= max_seconds {limits.max_seconds:g}"),
        _Check(between(column="text_chars", min_value=1), "text_chars >= 1 (no empty text)"),
        _Check(between(column="caption_chars", max_value=limits.max_caption_chars),
               f"caption_chars <= max_caption_chars {limits.max_caption_chars}"),
        _Check(between(column="n_inputs", min_value=1), "n_inputs >= 1 (at least one of image, audio, text)"),
    ]


def _describe(result: Any, check: _Check) -> str:
    """What a failed expectation observed, in words."""
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return f"could not be evaluated: {info.get('exception_message')}"
    details = dict(result.result or {})
    if check.observed is not None:
        return check.observed(details)
    if "unexpected_count" in details:
        considered = (details.get("element_count") or 0) - (details.get("missing_count") or 0)
        column = result.expectation_config.kwargs.get("column")
        rows = [r for r in details.get("partial_unexpected_index_list") or [] if isinstance(r, dict)]
        if column == "id":
            examples = list(dict.fromkeys(repr(r.get("id")) for r in rows))
        else:
            examples = [f"id {r.get('id')!r}: {column} {r.get(column)}" for r in rows]
        text = f"{details['unexpected_count']} of {considered} rows violate it"
        return text + (f", e.g. {', '.join(examples[:MAX_EXAMPLES])}" if examples else "")
    return f"observed {details.get('observed_value')!r}"


def _suite_report(name: str, n_rows: int, checks: list[_Check], outcome: Any) -> list[str]:
    lines = [f"{'PASS' if outcome.success else 'FAIL'} {name}: {outcome.statistics['successful_expectations']} of "
             f"{outcome.statistics['evaluated_expectations']} expectations met on {n_rows} rows"]
    by_key = {c.expectation.meta["gate_check"]: c for c in checks}
    for result in outcome.results:
        if not result.success:
            check = by_key[result.expectation_config.meta["gate_check"]]
            lines.append(f"  expected {check.expected}; {_describe(result, check)}")
    return lines


def _open_context(gx: Any, context_dir: Path, docs_dir: Path) -> Any:
    """A file context under context_dir, progress bars off, one Data Docs site writing into docs_dir."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=context_dir)
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    context.variables.save()
    site = {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    sites = context.list_data_docs_sites()
    for other in [s for s in sites if s != DOCS_SITE]:
        context.delete_data_docs_site(other)  # the default local_site would duplicate the docs under context_dir
    if DOCS_SITE in sites:
        context.update_data_docs_site(DOCS_SITE, site)
    else:
        context.add_data_docs_site(DOCS_SITE, site)
    return context


def _run_suite(gx: Any, context: Any, name: str, frame: pd.DataFrame, checks: list[_Check]) -> Any:
    source = context.data_sources.get(DATASOURCE)
    asset = source.add_dataframe_asset(name)
    batch = asset.add_batch_definition_whole_dataframe(f"{name}_all_rows")
    suite = context.suites.add_or_update(gx.ExpectationSuite(name=name, expectations=[c.expectation for c in checks]))
    definition = context.validation_definitions.add_or_update(gx.ValidationDefinition(name=name, data=batch,
                                                                                      suite=suite))
    result_format = {"result_format": "SUMMARY", "unexpected_index_column_names": ["id"],
                     "partial_unexpected_count": MAX_EXAMPLES}
    return definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)


def run_gate(features: pd.DataFrame, limits: GateLimits, docs_dir: Path, context_dir: Path) -> GateResult:
    """Run the `batch` and `records` suites on the feature table and build Data Docs into docs_dir."""
    if not 0.0 <= limits.max_reject_fraction <= 1.0:
        raise ValueError(f"max_reject_fraction must be within [0, 1], got {limits.max_reject_fraction}")
    os.environ["GX_ANALYTICS_ENABLED"] = "false"  # read when great_expectations is imported
    gx_logger = logging.getLogger("great_expectations")
    previous_level = gx_logger.level
    gx_logger.setLevel(logging.ERROR)
    try:
        import great_expectations as gx  # ~5 s: only when the gate actually runs

        docs_dir, context_dir = Path(docs_dir).resolve(), Path(context_dir).resolve()
        docs_dir.mkdir(parents=True, exist_ok=True)
        context = _open_context(gx, context_dir, docs_dir)
        context.data_sources.add_or_update_pandas(DATASOURCE)  # replaces assets left by an earlier run
        table, accepted = _frames(features)
        runs = {"batch": (table, _batch_checks(gx.expectations, limits)),
                "records": (accepted, _records_checks(gx.expectations, limits))}
        suites, lines = {}, []
        for name, (frame, checks) in runs.items():
            outcome = _run_suite(gx, context, name, frame, checks)
            suites[name] = bool(outcome.success)
            lines += _suite_report(name, len(frame), checks, outcome)
        if accepted.empty:
            lines.append("  note: records had no accepted rows to check")
        context.build_data_docs(site_names=[DOCS_SITE])
    finally:
        gx_logger.setLevel(previous_level)
    index = docs_dir / "index.html"
    success = all(suites.values())
    lines.insert(0, f"data gate {'PASSED' if success else 'FAILED'}: {len(table)} rows, {len(accepted)} accepted, "
                    f"{len(table) - len(accepted)} rejected (max_reject_fraction {limits.max_reject_fraction:.4g})")
    return GateResult(success=success, summary="\n".join(lines), suites=suites,
                      docs_index=index if index.exists() else None)
