"""Model cards: models/<variant>/README.md in Hugging Face's model-card format (YAML metadata with a `model-index` of
the test scores, then markdown), written by the evaluate stage beside each model's files.

The format: https://huggingface.co/docs/hub/model-cards (metadata spec:
https://github.com/huggingface/hub-docs/blob/main/modelcard.md). huggingface_hub's ModelCardData writes the YAML and
ModelCard parses the whole card back, offline, so a card that would not load on the Hub fails here first.

Provenance comes from what DVC recorded, not from what params.yaml says now: dvc.lock holds the parameters the stage
that made the model ran with, the md5 of the shards (the data version) and the sources ingest read. dvc.lock is not
a dep of evaluate (evaluate's own entry lands in it: a cycle); the entries read here belong to stages upstream of
evaluate, which DVC writes as each of them finishes, before evaluate starts.
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from trimodal.atomic import atomic_open
from trimodal.model.families import TRIMODAL, family_named

CARD = "README.md"  # the file name the Hub renders as a model's card
LOCK = Path("dvc.lock")  # evaluate runs from the repository root, as every stage
MADE_BY = {"teacher": "align", "student": "distill", "student-int8": "quantize"}  # variant -> its dvc stage
CODE = ("stages", "model", "conf", "params.yaml", "dvc.yaml")  # what decides a model besides its data
# model-index entries: (score key, task type, task name, metric type, metric name); the Hub's task ids where one fits
INDEXED = (
    ("vqa_accuracy", "visual-question-answering", "Question answering", "accuracy", "VQA exact match"),
    ("cls_accuracy", "classification", "Classification", "accuracy", "Classification accuracy"),
    ("cls_macro_f1", "classification", "Classification", "f1", "Classification macro-F1"),
    ("caption_exact", "image-to-text", "Captioning", "exact_match", "Caption exact match"),
    ("bleu4", "image-to-text", "Captioning", "bleu", "BLEU-4 (sacrebleu)"),
    ("cider", "image-to-text", "Captioning", "cider", "CIDEr-D"),
)
SUBSET_COLUMNS = ("vqa_accuracy", "cls_accuracy", "caption_exact", "bleu4", "cider")


@dataclass
class Provenance:
    """Where a model came from: the commit of the code and parameters, whether they had uncommitted edits, the
    md5 DVC recorded for the shards, the sources ingest read (`generated`: all of them written by the demo stage),
    and the parameters of the stage that made it."""
    revision: str | None
    edited: list[str]
    shards_md5: str | None
    sources: list[str] | None
    generated: bool
    stage: str
    params: dict | None


def git_revision(root: Path) -> tuple[str | None, list[str]]:
    """(HEAD's commit, the code and params files edited since) when `root` is the top of a git repository."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root.resolve():
            return None, []
        return git("rev-parse", "HEAD"), git("diff", "--name-only", "HEAD", "--", *CODE).splitlines()
    except (subprocess.CalledProcessError, FileNotFoundError):  # no repository, no commit yet, or no git
        return None, []


def lock_md5s(lock: dict | None) -> dict[str, str | None]:
    """A parsed dvc.lock -> the md5 it records for every output path."""
    stages = (lock or {}).get("stages", {})
    return {out["path"]: out.get("md5") for entry in stages.values() for out in entry.get("outs", [])}


def provenance(variant: str, shards: str, root: Path = Path(".")) -> Provenance:
    """The variant's provenance from git and dvc.lock (fields None where the stages ran outside DVC)."""
    lock = yaml.safe_load((root / LOCK).read_text()) if (root / LOCK).exists() else {}
    stages = (lock or {}).get("stages", {})
    outs = lock_md5s(lock)
    stage = MADE_BY[variant]
    sources = stages.get("ingest", {}).get("params", {}).get("params.yaml", {}).get("data.sources")
    demo = [out["path"].rstrip("/") + "/" for out in stages.get("demo", {}).get("outs", [])]
    generated = bool(sources and demo) and all(source.startswith(demo[0]) for source in sources)
    revision, edited = git_revision(root)
    return Provenance(revision, edited, outs.get(shards), sources, generated, stage,
                      stages.get(stage, {}).get("params", {}).get("params.yaml"))


def model_index(variant: str, overall: dict, split: str, shards_md5: str | None) -> list[EvalResult]:
    """The overall test scores as model-index results (the per-subset rows go to the card's markdown table)."""
    return [EvalResult(task_type=task, task_name=task_name, dataset_type="trimodal-shards",
                       dataset_name=f"trimodal shards ({split} split)", dataset_split=split,
                       dataset_revision=shards_md5, metric_type=metric, metric_name=name,
                       metric_value=round(float(overall[key]), 4))
            for key, task, task_name, metric, name in INDEXED if key in overall]


def _fmt(key: str, value) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if key.startswith("bleu") else f"{value:.3f}"


def scores_table(result: dict, baselines: dict) -> list[str]:
    """Markdown: the variant's rows (overall, each modality subset, each group), then the baselines' overall."""
    columns = [c for c in SUBSET_COLUMNS if c in result["rows"]["overall"]]
    lines = ["| row | n | " + " | ".join(columns) + " |", "| --- | ---: |" + " ---: |" * len(columns)]
    for row, scores in result["rows"].items():
        few = " *few*" if scores.get("few") else ""
        lines.append(f"| {row} | {scores['n']}{few} | " + " | ".join(_fmt(c, scores.get(c)) for c in columns) + " |")
    for name in ("majority", "question_prior"):
        overall = baselines.get(name, {}).get("rows", {}).get("overall", {})
        lines.append(f"| *baseline {name.replace('_', ' ')}* | {overall.get('n', '')} | "
                     + " | ".join(_fmt(c, overall.get(c)) for c in columns) + " |")
    return lines


def data_lines(origin: Provenance, shards: str) -> list[str]:
    code = (f"git commit `{origin.revision}`" + (f", with uncommitted edits to {', '.join(origin.edited)}"
                                                 if origin.edited else "")
            if origin.revision else "not recorded (not run from the top of a git repository)")
    data = (f"`{shards}` with DVC md5 `{origin.shards_md5}` (dvc.lock, stage `shard`)" if origin.shards_md5
            else f"`{shards}`, not recorded by DVC (the stages ran outside `dvc repro`)")
    sources = ", ".join(f"`{s}`" for s in origin.sources) if origin.sources else "not recorded"
    lines = [f"- Code and parameters: {code}.", f"- Training and test data: {data}.", f"- Sources: {sources}."]
    if origin.generated:
        lines.append("- The sources are the generated demo scrape (`stages/demo.py`): coloured shapes, tones and "
                     "templated sentences, not real-world data.")
    return lines


def params_lines(origin: Provenance) -> list[str]:
    if origin.params is None:
        return [f"Not recorded: dvc.lock has no entry for stage `{origin.stage}` (it ran outside `dvc repro`); "
                f"see the `{origin.stage}` section of `params.yaml`."]
    return [f"As dvc.lock records them for stage `{origin.stage}` (`python -m stages.{origin.stage}`):", "",
            "```yaml", yaml.safe_dump(origin.params, sort_keys=False).rstrip(), "```"]


def labels(model_dir: Path) -> list[str]:
    """The class names of a saved model (config.json id2label), in class order."""
    id2label = json.loads((model_dir / "config.json").read_text()).get("id2label") or {}
    return [id2label[k] for k in sorted(id2label, key=int)]


def card_text(variant: str, model_dir: Path, result: dict, baselines: dict, split: str, origin: Provenance,
              shards: str) -> str:
    """The card of one variant: `result` is its evaluate result (rows, parameters, size_bytes), `baselines` the
    evaluate baselines, `split` the split they were scored on."""
    overall = result["rows"]["overall"]
    name, family = f"trimodal-{variant}", family_named(result.get("family", TRIMODAL))
    data = ModelCardData(model_name=name, license="apache-2.0", library_name="transformers",
                         tags=["trimodal", "multimodal", "image", "audio", "text", "dvc", variant, *family.card_tags],
                         eval_results=model_index(variant, overall, split, origin.shards_md5))
    weights = sorted(p.name for p in model_dir.glob("*.safetensors"))
    classes = labels(model_dir)
    few = [row for row, scores in result["rows"].items() if scores.get("few")]
    body = [
        f"# {name}", "", family.card_about[variant], "",
        "## Model", "",
        "| | |", "| --- | --- |",
        f"| parameters | {result['parameters']:,} |",
        f"| weights | {', '.join(f'`{w}`' for w in weights)}, {result['size_bytes']:,} bytes |",
        f"| made by | dvc stage `{origin.stage}`; scored by stage `evaluate` |", "",
        "## Training data and version", "", *data_lines(origin, shards), "",
        "## Training parameters", "", *params_lines(origin), "",
        f"## Evaluation ({split} split, {overall['n']} records)", "",
        "Definitions: docs/evaluation.md; every score of this model and of the baselines: reports/report.md. "
        "Rows: the inputs a record carries, and record groups.", "",
        *scores_table(result, baselines), "",
        "## How to use", "",
        "```bash",
        f'trimodal predict --model models/{variant} --image photo.png --question "what color is the shape?"',
        f"trimodal serve --model models/{variant}",
        f"dvc artifacts get <repository> {variant} --stage prod   # the production version (GTO tag, trimodal promote)",
        "```", "",
        f'In Python: `model.quantization.load_saved("models/{variant}")` gives the model in eval mode (float or INT8), '
        f'`transformers.AutoTokenizer.from_pretrained("models/{variant}")` its tokenizer.', "",
        "## Intended use", "",
        "Answering questions about, classifying and captioning inputs like the training data (an image, a sound, a "
        "text, or any combination); a measured baseline for the pipeline that made it, and a starting point for "
        "training on your own sources (docs/data.md, \"Use your own data\").", "",
        "## Limitations", "",
        f"- It knows only its training data's distribution, answers and {len(classes)} classes "
        f"({', '.join(classes) or 'none'}); its scores say nothing about other data.",
        f"- A small model ({result['parameters']:,} parameters) scored on {overall['n']} {split} records"
        + (f"; rows with fewer than 20 ({', '.join(few)}) are anecdotes" if few else "") + ".",
        "- Captions and answers are greedy and short (evaluate.max_new_tokens); the vocabulary is a byte-level BPE "
        "learnt from the training text only.",
        "- No evaluation of bias or safety: do not use it for decisions about people.",
    ]
    if variant == "student-int8":
        body.append("- The INT8 kernels are torch.ao's CPU ones (fbgemm / x86): it runs on CPU only.")
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n"))


def write_card(model_dir: Path, text: str) -> Path:
    with atomic_open(model_dir / CARD, "w") as f:
        f.write(text)
    return model_dir / CARD
