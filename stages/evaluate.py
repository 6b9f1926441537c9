"""Stage `evaluate`: teacher, student and student-int8 on the test split -> metrics/eval/<variant>.json,
metrics/eval/plots/scores.csv and reports/report.md (a side-by-side table with chance baselines and the
distillation / quantization targets).

Per variant:
    captioning   perplexity (teacher-forced, exp of the mean token cross-entropy), BLEU (sacrebleu), ROUGE-L F
                 (rouge-score), CIDEr (pycocoevalcap) of greedy captions
    vqa          exact-match accuracy of the generated answer
    cls          accuracy and macro-F1 (torchmetrics)
    retrieval    R@1/5/10 both ways for image-text, audio-text, image-audio over the records holding both
                 (torchmetrics retrieval_hit_rate on cosine similarities of the contrastive embeddings; a hit is
                 any record with the same caption)
    robustness   vqa / cls accuracy with Gaussian noise on pixels, then on log-Mel features
    latency      median ms of one inference (encoder, classifier, greedy caption of exactly max_new_tokens
                 tokens, so every variant does the same work) at each batch size, measured side by side
    size         parameters and bytes of the weights file
"""
from __future__ import annotations

import csv
import io
import json
import math
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from pycocoevalcap.cider.cider import Cider
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score
from torchmetrics.functional.retrieval import retrieval_hit_rate
from transformers import AutoTokenizer

from model.modeling import TrimodalForConditionalGeneration
from model.quantization import WEIGHTS as INT8_WEIGHTS
from model.quantization import load_int8
from stages.common.atomic import atomic_open, write_json
from stages.common.loader import make_loader, read_index
from stages.common.params import EvaluateParams, load_params
from stages.common.trainer import model_inputs
from stages.finetune import decoder_labels, with_question

VARIANTS = {"teacher": Path("models/teacher"), "student": Path("models/student"),
            "student-int8": Path("models/student-int8")}
METRICS_DIR = Path("metrics/eval")
REPORT = Path("reports/report.md")
PAIRS = {"image_text": ("image", "text"), "audio_text": ("audio", "text"), "image_audio": ("image", "audio")}
TOP_K = (1, 5, 10)


def load_variant(path: Path):
    if (path / INT8_WEIGHTS).exists():
        return load_int8(path)
    return TrimodalForConditionalGeneration.from_pretrained(path).eval()


def weights_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def parameter_count(path: Path) -> int:
    """Parameters of the architecture (an INT8 model holds the same ones, packed)."""
    config = TrimodalForConditionalGeneration.config_class.from_pretrained(path)
    with torch.device("meta"):
        return sum(p.numel() for p in TrimodalForConditionalGeneration(config).parameters())


def add_noise(batch: dict, image_std: float, audio_std: float, generator: torch.Generator) -> dict:
    batch = dict(batch)
    if image_std:
        noise = torch.randn(batch["image"].shape, generator=generator) * image_std
        batch["image"] = (batch["image"] + noise).clamp(0, 1)
    if audio_std:
        batch["mel"] = batch["mel"] + torch.randn(batch["mel"].shape, generator=generator) * audio_std
    return batch


def decode(tokenizer, ids: torch.Tensor) -> list[str]:
    return [s.strip() for s in tokenizer.batch_decode(ids, skip_special_tokens=True)]


@torch.no_grad()
def predict(model, tokenizer, shards: str, p: EvaluateParams, image_std: float = 0.0, audio_std: float = 0.0,
            seed: int = 0) -> dict:
    """Generated captions / answers, class predictions, caption NLL and contrastive embeddings per record."""
    out = {"records": [], "nll": 0.0, "tokens": 0, "embeddings": {m: [] for m in ("image", "text", "audio")},
           "present": {m: [] for m in ("image", "text", "audio")}}
    generator = torch.Generator().manual_seed(seed)
    for batch in make_loader(shards, p.split, p.batch_size):
        batch = add_noise(batch, image_std, audio_std, generator)
        inputs = model_inputs(batch)
        encoded = model.encoder(**inputs)
        caption = decoder_labels(batch["caption_ids"], batch["caption_mask"])
        forced = model(encoder_outputs=encoded, decoder_input_ids=model.shift_right(caption))
        if caption.ne(-100).any():
            out["nll"] += float(F.cross_entropy(forced.logits.reshape(-1, forced.logits.shape[-1]),
                                                caption.reshape(-1), ignore_index=-100, reduction="sum"))
            out["tokens"] += int(caption.ne(-100).sum())
        captions = decode(tokenizer, model.generate(encoder_outputs=encoded, max_new_tokens=p.max_new_tokens,
                                                    do_sample=False, num_beams=1))
        text_ids, text_mask = with_question(batch, model.config.pad_token_id)
        answers = decode(tokenizer, model.generate(**{**inputs, "text_ids": text_ids, "text_mask": text_mask},
                                                   max_new_tokens=6, do_sample=False, num_beams=1))
        classes = forced.class_logits.argmax(-1).tolist()
        for modality in out["embeddings"]:
            size = len(batch["ids"])
            if modality in encoded.unimodal:
                out["embeddings"][modality].append(F.normalize(model.global_embedding(encoded, modality), dim=-1))
                out["present"][modality].append(encoded.unimodal_masks[modality].any(-1))
            else:
                out["embeddings"][modality].append(torch.zeros(size, model.config.projection_dim))
                out["present"][modality].append(torch.zeros(size, dtype=torch.bool))
        for i, meta in enumerate(batch["meta"]):
            out["records"].append({"id": meta.get("id", batch["ids"][i]), "caption": meta.get("caption"),
                                   "caption_pred": captions[i], "answer": meta.get("answer"),
                                   "answer_pred": answers[i], "label": meta.get("label_index", -1),
                                   "label_pred": classes[i]})
    for key in ("embeddings", "present"):
        out[key] = {m: torch.cat(v) for m, v in out[key].items()}
    return out


def task_scores(pred: dict, num_classes: int) -> dict:
    records = pred["records"]
    scores: dict = {}
    captioned = [r for r in records if r["caption"]]
    if captioned:
        hyps, refs = [r["caption_pred"] for r in captioned], [r["caption"] for r in captioned]
        scorer = rouge_scorer.RougeScorer(["rougeL"])
        scores["perplexity"] = math.exp(pred["nll"] / max(pred["tokens"], 1))
        # BLEU-4 is 0 on captions shorter than 4 words (the demo's are 3): cap the order at the shortest reference
        order = max(1, min(4, min(len(r.split()) for r in refs)))
        scores["bleu"] = BLEU(max_ngram_order=order).corpus_score(hyps, [refs]).score
        scores["bleu_order"] = order
        scores["rouge_l"] = statistics.fmean(scorer.score(r, h)["rougeL"].fmeasure for r, h in zip(refs, hyps,
                                                                                                   strict=True))
        scores["cider"] = float(Cider().compute_score({i: [r] for i, r in enumerate(refs)},
                                                      {i: [h] for i, h in enumerate(hyps)})[0])
        scores["caption_exact"] = statistics.fmean(h == r for h, r in zip(hyps, refs, strict=True))
    answered = [r for r in records if r["answer"]]
    if answered:
        scores["vqa_accuracy"] = statistics.fmean(r["answer_pred"] == r["answer"] for r in answered)
    labelled = [r for r in records if r["label"] >= 0]
    if labelled:
        target = torch.tensor([r["label"] for r in labelled])
        guess = torch.tensor([r["label_pred"] for r in labelled])
        scores["cls_accuracy"] = float(multiclass_accuracy(guess, target, num_classes, average="micro"))
        scores["cls_macro_f1"] = float(multiclass_f1_score(guess, target, num_classes, average="macro"))
    return scores


def same_content(records: list[dict]) -> torch.Tensor:
    """[N, N] relevance: records with the same caption describe the same thing (a demo caption recurs), so
    retrieving any of them is a hit; records without a caption match only themselves."""
    keys = [r["caption"] or f"id:{r['id']}" for r in records]
    return torch.tensor([[a == b for b in keys] for a in keys])


def retrieval_scores(pred: dict) -> dict:
    scores = {}
    for name, (a, b) in PAIRS.items():
        both = pred["present"][a] & pred["present"][b]
        n = int(both.sum())
        scores[f"{name}_pairs"] = n
        if n < 2:
            continue
        sims = pred["embeddings"][a][both] @ pred["embeddings"][b][both].T
        relevant = same_content([r for r, keep in zip(pred["records"], both.tolist(), strict=True) if keep])
        for k in TOP_K:
            recall = [float(retrieval_hit_rate(s[i], relevant[i], top_k=k)) for s in (sims, sims.T) for i in range(n)]
            scores[f"{name}_r@{k}"] = statistics.fmean(recall)
    return scores


def chance(pred: dict, index: dict) -> dict:
    """Majority baselines for the tasks; for retrieval, the recall of a random ranking (hypergeometric mean over
    queries: 1 - C(N - m, k) / C(N, k) for a query with m relevant of N)."""
    records, base = pred["records"], {}
    for key, field in (("vqa_accuracy", "answer"), ("caption_exact", "caption")):
        values = Counter(r[field] for r in records if r[field])
        if values:
            base[key] = max(values.values()) / sum(values.values())
    labels = Counter(r["label"] for r in records if r["label"] >= 0)
    if labels:
        base["cls_accuracy"] = max(labels.values()) / sum(labels.values())
        # always predicting the majority class: its F1 is 2p / (1 + p) (precision p, recall 1), the others' 0
        p = base["cls_accuracy"]
        base["cls_macro_f1"] = 2 * p / (1 + p) / max(1, len(index["labels"]))
    for name, (a, b) in PAIRS.items():
        both = (pred["present"][a] & pred["present"][b]).tolist()
        relevant = same_content([r for r, keep in zip(records, both, strict=True) if keep])
        n = len(relevant)
        for k in TOP_K:
            if n >= 2:
                base[f"{name}_r@{k}"] = statistics.fmean(
                    1 - math.comb(n - int(m), min(k, n)) / math.comb(n, min(k, n)) for m in relevant.sum(1))
    return base


@torch.no_grad()
def latency_ms(model, batch: dict, p: EvaluateParams) -> float:
    inputs = model_inputs(batch)

    def infer():
        encoded = model.encoder(**inputs)
        model(encoder_outputs=encoded)
        model.generate(encoder_outputs=encoded, max_new_tokens=p.max_new_tokens, min_new_tokens=p.max_new_tokens,
                       do_sample=False, num_beams=1)

    infer()  # warm-up
    times = []
    for _ in range(p.latency_repeats):
        start = time.perf_counter()
        infer()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def first_rows(batch: dict, n: int) -> dict:
    return {k: v[:n] for k, v in batch.items()}


def evaluate_variants(shards: str, p: EvaluateParams, seed: int, variants: dict[str, Path] = VARIANTS) -> dict:
    index = read_index(shards)
    if p.split not in index["splits"]:
        raise ValueError(f"evaluate.split {p.split!r} not in {shards}/index.json ({sorted(index['splits'])})")
    if p.threads:
        torch.set_num_threads(p.threads)
    timing_batch = next(iter(make_loader(shards, p.split, max(p.latency_batch_sizes))))
    results, baseline = {}, {}
    for name, path in variants.items():
        if not path.exists():
            raise FileNotFoundError(f"evaluate: {path} not found (run the stage that writes it first)")
        model, tokenizer = load_variant(path), AutoTokenizer.from_pretrained(path)
        clean = predict(model, tokenizer, shards, p, seed=seed)
        num_classes = model.config.num_classes
        scores = {**task_scores(clean, num_classes), **retrieval_scores(clean)}
        for kind, noise in (("image_noise", (p.image_noise_std, 0.0)), ("audio_noise", (0.0, p.audio_noise_std))):
            noisy = task_scores(predict(model, tokenizer, shards, p, *noise, seed=seed), num_classes)
            for key in ("vqa_accuracy", "cls_accuracy"):
                if key in noisy:
                    scores[f"{kind}_{key}"] = noisy[key]
        for size in p.latency_batch_sizes:
            scores[f"latency_ms_batch{size}"] = latency_ms(model, first_rows(timing_batch, size), p)
        scores["parameters"] = parameter_count(path)
        scores["size_bytes"] = weights_bytes(path)
        scores["n_records"] = len(clean["records"])
        results[name] = scores
        baseline = baseline or chance(clean, index)
        print(f"evaluate: {name}: " + json.dumps({k: round(v, 4) for k, v in scores.items()}))
    results["chance"] = baseline
    return results


ROWS = ["vqa_accuracy", "cls_accuracy", "cls_macro_f1", "caption_exact", "bleu", "rouge_l", "cider", "perplexity",
        *[f"{pair}_r@{k}" for pair in PAIRS for k in TOP_K],
        "image_noise_vqa_accuracy", "image_noise_cls_accuracy", "audio_noise_vqa_accuracy",
        "audio_noise_cls_accuracy"]


def targets(results: dict) -> list[tuple[str, str, bool]]:
    """The distillation and quantization targets of the project, measured: (what, value, met)."""
    t, s, q = results["teacher"], results["student"], results["student-int8"]
    rows = [("student parameters <= 0.5x teacher", f"{s['parameters'] / t['parameters']:.3f}x",
             s["parameters"] <= 0.5 * t["parameters"])]
    for key in ("vqa_accuracy", "cls_accuracy"):
        ratio = s[key] / t[key] if t[key] else float("inf")
        rows.append((f"student {key} >= 95% of teacher", f"{ratio:.1%}", ratio >= 0.95))
    rows.append(("INT8 file <= 30% of FP32", f"{q['size_bytes'] / s['size_bytes']:.1%}",
                 q["size_bytes"] <= 0.3 * s["size_bytes"]))
    for key in (k for k in q if k.startswith("latency_ms_batch")):
        ratio = q[key] / s[key]
        rows.append((f"INT8 latency <= 70% of FP32 ({key.removeprefix('latency_ms_')})", f"{ratio:.1%}", ratio <= 0.7))
    for key in ("vqa_accuracy", "cls_accuracy"):
        drop = (s[key] - q[key]) * 100
        rows.append((f"INT8 {key} drop <= 1 point", f"{drop:+.1f} points", drop <= 1.0))
    return rows


def report(results: dict, p: EvaluateParams) -> str:
    names = [n for n in results if n != "chance"]
    lines = ["# trimodal evaluation report", "",
             f"Split `{p.split}`: {results[names[0]]['n_records']} records. Chance = majority answer / label / "
             "caption; a random ranking for retrieval (a hit = a record with the same caption). "
             "Written by `python -m stages.evaluate` (dvc stage `evaluate`).", "",
             "| metric | " + " | ".join(names) + " | chance |", "| --- |" + " ---: |" * (len(names) + 1)]
    fmt = {"perplexity": "{:.2f}", "bleu": "{:.1f}", "cider": "{:.3f}"}
    for key in ROWS + [k for k in results[names[0]] if k.startswith("latency")] + ["parameters", "size_bytes"]:
        if all(key not in results[n] for n in names):
            continue
        cells = [fmt.get(key, "{:.3f}" if key not in ("parameters", "size_bytes") else "{:,}").format(
            results[n][key]) if key in results[n] else "" for n in names]
        base = results["chance"].get(key)
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {'' if base is None else f'{base:.3f}'} |")
    lines += ["", "## Targets", "", "| target | measured | met |", "| --- | ---: | :---: |"]
    lines += [f"| {what} | {value} | {'yes' if met else '**no**'} |" for what, value, met in targets(results)]
    return "\n".join(lines) + "\n"


def scores_csv(results: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["variant", "metric", "value"])
    for name, scores in results.items():
        for key in ("vqa_accuracy", "cls_accuracy", "cls_macro_f1", "caption_exact", "rouge_l", "image_text_r@1",
                    "audio_text_r@1", "image_audio_r@1"):
            if key in scores:
                writer.writerow([name, key, f"{scores[key]:.4f}"])
    return buffer.getvalue()


def main(argv: Sequence[str] | None = None) -> None:
    params = load_params("params.yaml", sys.argv[1:] if argv is None else list(argv))
    results = evaluate_variants(params.distill.shards, params.evaluate, params.seed)
    for name, scores in results.items():
        write_json(METRICS_DIR / f"{name}.json", scores)
    with atomic_open(METRICS_DIR / "plots/scores.csv", "w") as f:
        f.write(scores_csv(results))
    with atomic_open(REPORT, "w") as f:
        f.write(report(results, params.evaluate))
    print(REPORT.read_text())


if __name__ == "__main__":
    main()
