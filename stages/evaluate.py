"""Stage `evaluate`: teacher, student and student-int8 on the test split, overall and per modality subset, beside
baselines learnt from the train split -> metrics/details/eval/<variant>.json and baselines.json (everything),
metrics/eval/<name>.json (the headline `dvc metrics show` lists: one file per variant and baseline, the same
columns), metrics/eval/plots/scores.csv, reports/report.md, and each model's card models/<variant>/README.md
(trimodal/cards.py).

Per variant (metrics: trimodal/evaluation/scoring.py; what they mean: docs/evaluation.md):
    tasks        vqa_accuracy, cls_accuracy, cls_macro_f1, caption_exact, bleu4 (+ bleu<k>), rouge_l, cider,
                 perplexity: for "overall", each of the 7 modality subsets present and each record group
                 (e.g. fusion records), every row with its record count and a flag below 20 records
    retrieval    R@1/5/10 both ways for image-text, audio-text, image-audio over the records holding both
    robustness   vqa / cls accuracy with Gaussian noise on pixels, then on log-Mel features, per row as well
    latency      median ms of one inference at each batch size, the variants interleaved
                 (trimodal/evaluation/latency.py), and the quartiles of the per-round ratio to the variant it is
                 compared with (LATENCY_VS)
    size         parameters and bytes of the weights file
Baselines (trimodal/evaluation/baselines.py): the train split's majority answer / label / caption, a question-type
prior for VQA, and a random ranking for retrieval, scored by the same functions on the same test records.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer

from trimodal.atomic import atomic_open, write_json
from trimodal.cards import card_text, provenance, write_card
from trimodal.config_errors import run_main
from trimodal.data.loader import read_index, read_meta
from trimodal.evaluation.baselines import majority_baseline, question_prior_baseline
from trimodal.evaluation.latency import latency_rounds, paired_ratio, timing_batches
from trimodal.evaluation.predict import predict
from trimodal.evaluation.scoring import (
    HELD_OUT_PREFIX,
    MIN_RECORDS,
    PAIRS,
    TOP_K,
    answer_scores,
    bleu_signature,
    by_subset,
    fill_cider,
    group_subsets,
    headline,
    held_out_row,
    record_of,
    references,
    retrieval_by_row,
    task_scores,
)
from trimodal.model.families import CLASSES, family_named, model_class, saved_family
from trimodal.model.family import Family
from trimodal.model.quantization import SENSITIVITY, load_saved
from trimodal.params import EvaluateParams, Params, PathsParams, TargetsParams, load_params

BASELINES = ("majority", "question_prior")
MEASURED = ("speed", "slower_in_int8", "latency")
LATENCY_VS = {"student": "teacher", "student-int8": "student"}  # variant -> the one its latency ratio is taken to
NOISE_KEYS = ("vqa_accuracy", "cls_accuracy")


def weights_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def parameter_count(path: Path) -> int:
    """Parameters of the architecture (an INT8 model holds the same ones, packed), of either family."""
    config = CLASSES[saved_family(path)][0].from_pretrained(path)
    with torch.device("meta"):
        return sum(p.numel() for p in model_class(config)(config).parameters())


def score_variant(model, tokenizer, shards: str, p: EvaluateParams, seed: int) -> dict:
    """One model on the split: {"rows": {row: task + retrieval + noise scores}, "records": its clean predicted
    records, "random_ranking": {row: random-ranking recall@k over the same retrieval galleries}, "references":
    {group: the scores of the records like it}, "group_subsets": {group: {subset: its records' scores}}}."""
    clean = predict(model, tokenizer, shards, p.split, p.batch_size, p.max_new_tokens, seed=seed)
    rows = by_subset(clean["records"], lambda rs: task_scores(rs, p.extra_bleu_order))
    retrieval, random_ranking = retrieval_by_row(clean["records"], clean["embeddings"], clean["present"])
    for name, scores in retrieval.items():
        rows[name].update(scores)
    for kind, noise in (("image_noise", (p.image_noise_std, 0.0)), ("audio_noise", (0.0, p.audio_noise_std))):
        noisy = predict(model, tokenizer, shards, p.split, p.batch_size, p.max_new_tokens, *noise, seed=seed,
                        captions=False)
        for name, scores in by_subset(noisy["records"], answer_scores).items():
            rows[name].update({f"{kind}_{k}": scores[k] for k in NOISE_KEYS if k in scores})
    like = {group: answer_scores(members) for group, members in references(clean["records"]).items()}
    split = {group: {name: answer_scores(members) for name, members in subsets.items()}
             for group, subsets in group_subsets(clean["records"]).items()}
    return {"rows": rows, "records": clean["records"], "random_ranking": random_ranking, "references": like,
            "group_subsets": split}


def score_baselines(shards: str, p: EvaluateParams, scored: dict) -> dict:
    """The baselines' rows: train-split targets applied to the test records of a variant's `score_variant`."""
    train = [record_of(meta) for meta in read_meta(shards, "train")]
    out = {}
    for name, predicted in (("majority", majority_baseline(train, scored["records"])),
                            ("question_prior", question_prior_baseline(train, scored["records"],
                                                                       p.question_type_words))):
        fill_cider(predicted)
        out[name] = {"rows": by_subset(predicted, lambda rs: task_scores(rs, p.extra_bleu_order)),
                     "train_records": len(train)}
    out["random_ranking"] = {"rows": scored["random_ranking"]}
    return out


def latencies(models: dict, shards: str, p: EvaluateParams, family: Family, tokenizer=None) -> dict[str, dict]:
    """variant -> {latency_ms_batch<n>: median ms, latency_ratio_batch<n>: {q1, median, q3} of its per-round ratio
    to LATENCY_VS[variant]}, all variants (of one family, sharing `tokenizer`) interleaved at each batch size."""
    rounds = latency_rounds(models, timing_batches(shards, p.split, p.latency_batch_sizes, family, tokenizer),
                            p.max_new_tokens, p.latency_repeats)
    out: dict[str, dict] = {name: {} for name in rounds}
    for name, row in rounds.items():
        for label, ms in row.items():
            out[name][f"latency_ms_{label}"] = statistics.median(ms)
            if LATENCY_VS.get(name) in rounds:
                out[name][f"latency_ratio_{label}"] = paired_ratio(ms, rounds[LATENCY_VS[name]][label])
    return out


def variant_paths(paths: PathsParams) -> dict[str, Path]:
    return {"teacher": Path(paths.teacher), "student": Path(paths.student), "student-int8": Path(paths.student_int8)}


def evaluate_variants(shards: str, p: EvaluateParams, seed: int, variants: dict[str, Path],
                      quantize_metrics: Path) -> dict:
    """`quantize_metrics`: the quantize stage's speed measurements (its details file), for the report."""
    index = read_index(shards)
    if p.split not in index["splits"]:
        raise ValueError(f"evaluate.split {p.split!r} not in {shards}/index.json ({sorted(index['splits'])})")
    if "train" not in index["splits"]:
        raise ValueError(f"evaluate: the baselines learn from the train split, which {shards}/index.json lacks")
    if p.threads:
        torch.set_num_threads(p.threads)
    for path in variants.values():
        if not path.exists():
            raise FileNotFoundError(f"evaluate: {path} not found (run the stage that writes it first)")
    models = {name: load_saved(path) for name, path in variants.items()}
    results, first = {}, None
    for name, path in variants.items():
        scored = score_variant(models[name], AutoTokenizer.from_pretrained(path), shards, p, seed)
        first = first or scored  # the test targets, and so the baselines, are the same for every variant
        results[name] = {"rows": scored["rows"], "references": scored["references"],
                         "group_subsets": scored["group_subsets"], "family": saved_family(path),
                         "parameters": parameter_count(path), "size_bytes": weights_bytes(path)}
        if (path / SENSITIVITY).exists():  # the quantize stage's sweeps and speed measurements, in the report
            measured = json.loads(quantize_metrics.read_text()) if quantize_metrics.exists() else {}
            results[name]["quantization"] = {**json.loads((path / SENSITIVITY).read_text()),
                                             **{k: measured[k] for k in MEASURED if k in measured}}
        print(f"evaluate: {name}: " + json.dumps({k: round(v, 4) for k, v in scored["rows"]["overall"].items()
                                                  if isinstance(v, float)}))
    first_path = next(iter(variants.values()))
    family = family_named(saved_family(first_path))
    for name, timed in latencies(models, shards, p, family, AutoTokenizer.from_pretrained(first_path)).items():
        results[name].update(timed)
    results["baselines"] = score_baselines(shards, p, first)
    return results


MAIN_ROWS = ["vqa_accuracy", "cls_accuracy", "cls_macro_f1", "caption_exact", "bleu4", "rouge_l", "cider",
             "perplexity"]
RETRIEVAL_ROWS = [f"{pair}_r@{k}" for pair in PAIRS for k in TOP_K]
NOISE_ROWS = [f"{kind}_{k}" for kind in ("image_noise", "audio_noise") for k in NOISE_KEYS]
SUBSET_TABLES = ["vqa_accuracy", "cls_accuracy", "caption_exact", "bleu4", "cider"]
COUNT_OF = {"vqa_accuracy": "n_vqa", "cls_accuracy": "n_cls", "caption_exact": "n_caption", "bleu4": "n_caption",
            "cider": "n_caption"}  # the records a metric is computed over
FORMATS = {"perplexity": "{:.2f}", "cider": "{:.3f}", "parameters": "{:,}", "size_bytes": "{:,}"}


def _fmt(key: str, value) -> str:
    if value is None:
        return ""
    if key.startswith("bleu"):
        return f"{value:.1f}"
    return FORMATS.get(key, "{:.3f}").format(value)


def _variants(results: dict) -> list[str]:
    return [n for n in results if n != "baselines"]


def batch_size_of(key: str) -> int:
    """The batch size a latency key was timed at: "latency_ms_batch32" -> 32 (the labels of
    trimodal/evaluation/latency.py)."""
    return int(key.rpartition("_batch")[2])


def _share(value: float) -> str:
    return f"{value * 100:g}%"


def _points(value: float) -> str:
    return f"{value:g} point" + ("" if value == 1 else "s")


def targets(results: dict, goals: TargetsParams) -> list[tuple[str, str, bool]]:
    """The distillation and quantization targets of the project (evaluate.targets), measured: (what, value, met).
    Accuracy targets hold on every row (overall, each subset, each group but the held-out ones), so the worst row is
    what is shown. A held-out group (ood-...) has its own: the teacher within `held_out_gap_points` of the records
    like it."""
    t, s, q = results["teacher"], results["student"], results["student-int8"]
    size = goals.student_parameters
    rows = [(f"student parameters <= {size:g}x teacher", f"{s['parameters'] / t['parameters']:.3f}x",
             s["parameters"] <= size * t["parameters"])]
    share = goals.student_accuracy
    for key in ("vqa_accuracy", "cls_accuracy", "caption_exact"):
        scored = [row for row in t["rows"] if key in t["rows"][row] and not held_out_row(row)]
        worst = min(scored, key=lambda row: s["rows"][row][key] - share * t["rows"][row][key])
        student, teacher = s["rows"][worst][key], t["rows"][worst][key]
        shown = f"{student / teacher:.1%} ({worst})" if teacher else f"{student:.3f} vs teacher 0 ({worst})"
        rows.append((f"student {key} >= {_share(share)} of teacher on every row", shown, student >= share * teacher))
        drops = {row: (s["rows"][row][key] - q["rows"][row][key]) * 100 for row in scored}
        worst = max(drops, key=drops.get)
        rows.append((f"INT8 {key} drop <= {_points(goals.int8_drop_points)} on every row",
                     f"{drops[worst]:+.1f} points ({worst})", drops[worst] <= goals.int8_drop_points))
    gaps = {group: (t["rows"][f"group:{group}"]["vqa_accuracy"] - like["vqa_accuracy"]) * 100
            for group, like in t.get("references", {}).items()
            if group.startswith(HELD_OUT_PREFIX) and "vqa_accuracy" in like
            and "vqa_accuracy" in t["rows"].get(f"group:{group}", {})}
    if gaps:
        worst = min(gaps, key=gaps.get)
        rows.append((f"teacher vqa_accuracy on held-out groups within {_points(goals.held_out_gap_points)} of "
                     "records like them", f"{gaps[worst]:+.1f} points ({worst})",
                     gaps[worst] >= -goals.held_out_gap_points))
    batch = f"batch{goals.speedup_batch_size}"
    if f"latency_ratio_{batch}" in s:  # median of the per-round teacher / student ratios
        speedup = 1 / s[f"latency_ratio_{batch}"]["median"]
        rows.append((f"student >= {goals.student_speedup:g}x faster than teacher ({batch})", f"{speedup:.2f}x",
                     speedup >= goals.student_speedup))
    rows.append((f"INT8 file <= {_share(goals.int8_size)} of FP32", f"{q['size_bytes'] / s['size_bytes']:.1%}",
                 q["size_bytes"] <= goals.int8_size * s["size_bytes"]))
    for key in sorted((k for k in q if k.startswith("latency_ratio_")), key=batch_size_of):
        r = q[key]  # met unless INT8 is slower in more than 3 of 4 rounds (the ratio's lower quartile above 1)
        rows.append((f"INT8 latency not above FP32 student ({key.removeprefix('latency_ratio_')}; per-round "
                     f"ratio, median [quartiles])", f"{r['median']:.2f}x [{r['q1']:.2f}-{r['q3']:.2f}]",
                     r["q1"] <= 1.0))
    return rows


def groups_section(results: dict) -> list[str]:
    """Each record group against the records of no group over the same modality subsets (trimodal/evaluation/scoring.py
    `references`): for a held-out group (ood-question, ood-render), how far the unseen form costs."""
    names = _variants(results)
    found = results[names[0]].get("references", {})
    lines = []
    for key in ("vqa_accuracy", "cls_accuracy"):
        rows = [(group, like) for group, like in found.items()
                if key in like and key in results[names[0]]["rows"].get(f"group:{group}", {})]
        if not rows:
            continue
        if not lines:
            lines += ["## Groups against records like them", "",
                      "Each record group beside the records of no group over the same modality subsets (`like`: for "
                      "`ood-render`, image-only records drawn as in training; for `ood-question`, records asked in "
                      "the training phrasings); gap = group - like, in points.", ""]
        lines += [f"### {key}", "", "| group | n | like n | " + " | ".join(f"{n} | {n} like | gap" for n in names)
                  + " |", "| --- | ---: | ---: |" + " ---: | ---: | ---: |" * len(names)]
        for group, like in rows:
            cells = []
            for name in names:
                ours, theirs = results[name]["rows"][f"group:{group}"][key], results[name]["references"][group][key]
                cells += [f"{ours:.3f}", f"{theirs:.3f}", f"{(ours - theirs) * 100:+.1f}"]
            n = results[names[0]]["rows"][f"group:{group}"][COUNT_OF[key]]
            lines.append(f"| {group} | {n} | {like[COUNT_OF[key]]} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def group_subsets_section(results: dict) -> list[str]:
    """VQA of each group that spans several modality subsets, per subset (scoring.group_subsets), per variant."""
    names = _variants(results)
    found = results[names[0]].get("group_subsets", {})
    rows = [(group, subset, scores) for group, subsets in found.items() for subset, scores in subsets.items()
            if "vqa_accuracy" in scores]
    if not rows:
        return []
    lines = ["## Groups per modality subset", "",
             "VQA accuracy of each group's records by the inputs they carry: a pair of inputs the model cannot "
             "compare shows here, not in the group's row.", "",
             "| group | subset | n | " + " | ".join(names) + " |", "| --- | --- | ---: |" + " ---: |" * len(names)]
    for group, subset, scores in rows:
        cells = [_fmt("vqa_accuracy", results[n].get("group_subsets", {}).get(group, {}).get(subset, {})
                      .get("vqa_accuracy")) for n in names]
        few = " *few*" if scores["n_vqa"] < MIN_RECORDS else ""
        lines.append(f"| {group} | {subset} | {scores['n_vqa']}{few} | " + " | ".join(cells) + " |")
    return lines + [""]


def sweep_section(results: dict, top: int = 10) -> list[str]:
    """The quantize stage's per-Linear sensitivity sweep (models/<int8>/sensitivity.json), most fragile first."""
    lines = []
    for name in _variants(results):
        sweep = results[name].get("quantization")
        if not sweep:
            continue
        acc = sweep["val_accuracy"]
        fragile = sweep.get("kept_fp32_fragile", sweep["kept_fp32"])
        narrow = sweep.get("kept_fp32_narrow", [])
        lines += [f"## INT8 sensitivity sweep ({name})", "",
                  f"Each Linear alone in INT8, KL divergence of the output distributions from the float model's on "
                  f"the calibration (val) batches. Val accuracy (teacher-forced exact match and classes): float "
                  f"{acc['fp32']:.3f}, all Linears INT8 {acc['int8_all']:.3f}, shipped {acc['int8']:.3f} with "
                  f"{len(fragile)} fragile Linear(s) kept in float"
                  + (f" ({', '.join(f'`{k}`' for k in fragile)})" if fragile else "")
                  + (f" and {len(narrow)} narrow ones (below)" if narrow else "")
                  + f". Top {top} of {len(sweep['sensitivity'])}:", "", "| Linear | KL | kept float |",
                  "| --- | ---: | :---: |"]
        lines += [f"| `{r['linear']}` | {r['kl']:.2e} | {'yes' if r['fp32'] else ''} |"
                  for r in sweep["sensitivity"][:top]]
        lines += ["", *speed_lines(sweep), ""]
    return lines


def speed_lines(sweep: dict) -> list[str]:
    """The width rule's outcome and what the quantize stage measured (metrics/quantize.json): the called Linears'
    replayed time per workload (all INT8, all float, as shipped) and whole-model latency."""
    timed = sweep.get("speed") or []
    work = [k.removeprefix("calls_") for k in (timed[0] if timed else {}) if k.startswith("calls_")]
    narrow = sweep.get("kept_fp32_narrow", [])
    lines = [f"Width rule: Linears with fewer than {sweep.get('int8_min_features', 0)} inputs or outputs compute in "
             f"float from their int8 weights ({len(narrow)} Linear(s); INT8 is slower than float there on CPU)."]
    if not work:
        return lines + ["Speed not measured (`quantize.speed_batch_sizes` is empty)."]
    called = [r for r in timed if any(r[f"calls_{w}"] for w in work)]
    doubtful = [n for n in sweep.get("slower_in_int8", []) if n not in sweep.get("kept_fp32", [])]
    lines += ["", f"Measured, not deciding: each Linear's calls in one inference replayed in INT8 and in float, "
              f"interleaved. {sum(not r['fp32'] for r in called)} of the {len(called)} Linears the inference calls "
              f"compute in INT8; {len(doubtful)} of those were slower in INT8 in the replay"
              + (f" ({', '.join(f'`{n}`' for n in doubtful[:5])}{', ...' if len(doubtful) > 5 else ''})"
                 if doubtful else "") + ". Their calls, summed:", "",
              "| workload | all INT8 ms | all float ms | shipped ms |", "| --- | ---: | ---: | ---: |"]
    for w in work:
        int8, flt = (sum(r[f"{kind}_ms_{w}"] for r in called) for kind in ("int8", "float"))
        shipped = sum(r[f"float_ms_{w}"] if r["fp32"] else r[f"int8_ms_{w}"] for r in called)
        lines.append(f"| {w} | {int8:.2f} | {flt:.2f} | {shipped:.2f} |")
    latency = sweep.get("latency", {})
    if latency:
        lines += ["", "Whole model, interleaved, median ms of one inference:", "",
                  "| model | " + " | ".join(work) + " |", "| --- |" + " ---: |" * len(work)]
        lines += [f"| {name} | " + " | ".join(f"{ms[f'ms_{w}']:.2f}" for w in work) + " |"
                  for name, ms in latency.items()]
    return lines


def report(results: dict, p: EvaluateParams) -> str:
    names, base = _variants(results), results["baselines"]
    columns = [*names, "majority", "question prior", "random ranking"]

    def cell(row: str, key: str) -> list[str]:
        values = [results[n]["rows"].get(row, {}).get(key) for n in names]
        values += [base[b]["rows"].get(row, {}).get(key) for b in (*BASELINES, "random_ranking")]
        return [_fmt(key, v) for v in values]

    overall = results[names[0]]["rows"]["overall"]
    lines = ["# trimodal evaluation report", "",
             f"Split `{p.split}`: {overall['n']} records. Baselines learn from the train split "
             f"({base['majority']['train_records']} records): `majority` always answers the most frequent train "
             f"answer / label / caption; `question prior` answers the most frequent train answer of the question's "
             f"type (its first {p.question_type_words} words); `random ranking` is the expected recall of a random "
             "retrieval ranking (a hit = a record with the same caption). BLEU-4 is sacrebleu "
             f"`{bleu_signature(4)}`" + (f"; bleu{p.extra_bleu_order} is the same with n-grams up to "
                                        f"{p.extra_bleu_order}, an extra column" if p.extra_bleu_order else "")
             + "; CIDEr-D takes its IDF from the split's own references. Definitions: docs/evaluation.md. "
             "Written by `python -m stages.evaluate` (dvc stage `evaluate`).", "",
             "## Overall", "", "| metric | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    extra = [f"bleu{p.extra_bleu_order}"] if p.extra_bleu_order and p.extra_bleu_order != 4 else []
    for key in MAIN_ROWS[:5] + extra + MAIN_ROWS[5:] + RETRIEVAL_ROWS + NOISE_ROWS:
        cells = cell("overall", key)
        if any(cells[: len(names)]):
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    for key in sorted((k for k in results[names[0]] if k.startswith("latency_ms")),
                      key=batch_size_of) + ["parameters", "size_bytes"]:
        lines.append(f"| {key} | " + " | ".join(_fmt(key, results[n].get(key)) for n in names)
                     + " |" * (len(columns) - len(names)) + " |")
    lines += ["", "## Per modality subset", "",
              f"Rows: the modalities a test record carries, and record groups (`group:fusion`: the answer needs two "
              f"modalities). n = test records of the row that carry the metric's target; *few* = fewer than "
              f"{MIN_RECORDS}, read as anecdotes.", ""]
    for key in SUBSET_TABLES:
        row_names = [r for r in results[names[0]]["rows"] if key in results[names[0]]["rows"][r]]
        if not row_names:
            continue
        lines += [f"### {key}", "", "| row | n | " + " | ".join(columns[:-1]) + " |",
                  "| --- | ---: |" + " ---: |" * (len(columns) - 1)]
        for row in row_names:
            n = results[names[0]]["rows"][row][COUNT_OF[key]]
            few = " *few*" if n < MIN_RECORDS else ""
            lines.append(f"| {row} | {n}{few} | " + " | ".join(cell(row, key)[:-1]) + " |")
        lines.append("")
    lines += groups_section(results)
    lines += group_subsets_section(results)
    lines += sweep_section(results)
    lines += ["## Targets", "", "| target | measured | met |", "| --- | ---: | :---: |"]
    lines += [f"| {what} | {value} | {'yes' if met else '**no**'} |"
              for what, value, met in targets(results, p.targets)]
    return "\n".join(lines) + "\n"


CSV_KEYS = ("vqa_accuracy", "cls_accuracy", "cls_macro_f1", "caption_exact", "rouge_l", "image_text_r@1",
            "audio_text_r@1", "image_audio_r@1")


def scores_csv(results: dict) -> str:
    """Overall scores of the variants and baselines, long format, for `dvc plots`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["variant", "metric", "value"])
    rows = {n: results[n]["rows"]["overall"] for n in _variants(results)}
    rows.update({n: results["baselines"][n]["rows"]["overall"] for n in (*BASELINES, "random_ranking")})
    for name, scores in rows.items():
        for key in CSV_KEYS:
            if key in scores:
                writer.writerow([name, key, f"{scores[key]:.4f}"])
    return buffer.getvalue()


def headlines(results: dict) -> dict[str, dict]:
    """metrics/eval/<name>.json: per variant and per baseline, the overall HEADLINE scores (plus, for a variant,
    median latency, parameters and bytes), so `dvc metrics show` lists each as a row of the same columns."""
    out = {}
    for name in _variants(results):
        result = results[name]
        out[name] = {**headline(result["rows"]["overall"]),
                     **{k: v for k, v in result.items() if k.startswith("latency_ms_")},
                     "parameters": result["parameters"], "size_bytes": result["size_bytes"]}
    for name in (*BASELINES, "random_ranking"):
        out[name] = headline(results["baselines"][name]["rows"]["overall"])
    return out


def write_cards(results: dict, params: Params) -> None:
    """models/<variant>/README.md for each variant (trimodal/cards.py)."""
    paths, p = params.paths, params.evaluate
    for name, path in variant_paths(paths).items():
        origin = provenance(name, paths.shards)
        write_card(path, card_text(name, path, results[name], results["baselines"], p.split, origin, paths.shards))


def main(argv: Sequence[str] | None = None) -> None:
    params = load_params("params.yaml", sys.argv[1:] if argv is None else list(argv))
    metrics, details = Path(params.paths.metrics), Path(params.paths.details)
    report_path = Path(params.paths.report)
    results = evaluate_variants(params.evaluate.shards, params.evaluate, params.seed, variant_paths(params.paths),
                                details / "quantize.json")
    for name in _variants(results):
        write_json(details / "eval" / f"{name}.json", results[name])
    write_json(details / "eval" / "baselines.json", results["baselines"])
    for name, scores in headlines(results).items():
        write_json(metrics / "eval" / f"{name}.json", scores)
    with atomic_open(metrics / "eval" / "plots/scores.csv", "w") as f:
        f.write(scores_csv(results))
    with atomic_open(report_path, "w") as f:
        f.write(report(results, params.evaluate))
    write_cards(results, params)
    print(report_path.read_text())


if __name__ == "__main__":
    run_main(main)
