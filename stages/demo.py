"""Stage `demo`: a deterministic, learnable demo scrape -> data/sources/demo/.

Every record is one coloured shape. Each input modality carries the whole content on its own, so any
non-empty subset of {image, audio, text} is enough to answer the record's question:
  image  the shape drawn in its colour on a light grey background (jittered position and size)
  audio  colour -> tone pitch, shape -> number of tone pulses (circle 1, square 2, triangle 3)
The default has 3 shapes and 4 colours; `demo.n_shapes` / `demo.n_colors` (up to 8 each) and `demo.noise` make
the harder, fine-grained variant of conf/demo/hard.yaml (orange next to red, pitches 0.43 octave apart, up to 8
tone pulses, noisy pixels and audio).
  text   a templated sentence naming colour and shape
Fusion records (`demo.n_fusion`, group "fusion") need two modalities for one answer: a pair of inputs showing
the same shape, the second in the first's colour or (half the time) another one, and the question whether the
colours match ("does the tone match the color of the shape?" -> yes / no). A model that ignores either input
can only guess (50%). They carry no caption or label: those would be ambiguous when the two inputs disagree.

Held-out records (`demo.n_ood_questions`, `demo.n_ood_renders`) pin the test split (`"split": "test"`): the
training never sees them in their form, so their report rows (`group:ood-question`, `group:ood-render`) measure
generalisation. ood-question records ask in phrasings no other record uses (OOD_QUESTIONS: "what color is it?",
"name the shape."), over every input subset; ood-render records are image-only records drawn in renderings no other
record has (RENDERS: other canvas sizes and aspect ratios, white or dark backgrounds, JPEG encoding), asking the
usual questions.

Only when `data.sources` names a table in data/sources/demo/: otherwise the stage writes nothing but UNUSED.txt
there (its output must exist for DVC), in no time and with the same bytes whatever `demo` holds, so ingest, which
hashes all of data/sources/, does not rerun when the demo's params change.

Outputs (byte-identical for identical params; nothing depends on the clock):
  data/sources/demo/records.jsonl   multimodal records with caption / question / answer / label targets
  data/sources/demo/corpus.jsonl    text-only sentences about coloured shapes
  data/sources/demo/images/NNNNNN.png, data/sources/demo/audio/NNNNNN.wav
"""
from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw
from tqdm import tqdm

from trimodal.atomic import atomic_dir, write_jsonl
from trimodal.config_errors import run_main
from trimodal.data.sources import local_table
from trimodal.params import DemoParams, Params, load_params

# demo.n_shapes / demo.n_colors take the first n of these; the defaults (3, 4) are the easy demo, 8 and 8 the
# fine-grained one (conf/demo/hard.yaml: similar hues such as orange/red, close pitches, more tone pulses)
ALL_SHAPES = ("circle", "square", "triangle", "diamond", "pentagon", "hexagon", "star", "cross")
ALL_COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30),
              "orange": (240, 130, 30), "purple": (140, 60, 190), "cyan": (40, 180, 200), "pink": (230, 120, 170)}


def palette(n_shapes: int, n_colors: int) -> tuple[tuple[str, ...], dict, dict, dict]:
    """(shapes, colour -> RGB, colour -> tone pitch, shape -> tone pulses) of a demo with that many of each.
    Pitches span 300-2400 Hz evenly on a log scale (4 colours: octaves apart, unmistakable)."""
    if not 1 <= n_shapes <= len(ALL_SHAPES) or not 1 <= n_colors <= len(ALL_COLORS):
        raise ValueError(f"demo.n_shapes must be in 1..{len(ALL_SHAPES)} and demo.n_colors in 1..{len(ALL_COLORS)}, "
                         f"got {n_shapes} and {n_colors}")
    shapes, colors = ALL_SHAPES[:n_shapes], dict(list(ALL_COLORS.items())[:n_colors])
    pitch = {c: 300.0 * 2 ** (3 * i / max(1, n_colors - 1)) for i, c in enumerate(colors)}
    return shapes, colors, pitch, {s: i + 1 for i, s in enumerate(shapes)}


SHAPES, COLORS, PITCH_HZ, PULSES = palette(3, 4)  # the default demo
MODALITIES = ("image", "audio", "text")
SUBSETS = tuple(  # all 7 non-empty subsets of MODALITIES
    tuple(m for j, m in enumerate(MODALITIES) if mask >> j & 1) for mask in range(1, 2 ** len(MODALITIES))
)
TEXT_TEMPLATES = ("there is a {c} {s}", "a {s}, colored {c}", "the picture shows a {c} {s}",
                  "a {c} {s} on a grey background", "i can see one {c} {s}", "this {s} is {c}")
# Eight phrasings per question kind, some naming the shape while asking its colour ("what is the color of this
# shape?"): the word that says what is asked varies in place and spelling, so a model cannot answer by template
QUESTIONS = (("what color is the shape?", "color"), ("what color is the {s}?", "color"),
             ("which color does the {s} have?", "color"), ("what is the color of this shape?", "color"),
             ("tell me its color.", "color"), ("what colour is the {s}?", "color"),
             ("the shape has which color?", "color"), ("name the color of the shape.", "color"),
             ("what shape is it?", "shape"), ("which shape is shown?", "shape"), ("what is the shape?", "shape"),
             ("what kind of shape is shown?", "shape"), ("name the shape shown.", "shape"),
             ("which shape is this?", "shape"), ("what shape do you see?", "shape"), ("tell me the shape.", "shape"))
CORPUS_TEMPLATES = ("the {c} {s} is next to a {c2} {s2}", "a {c} {s} and a {c2} {s2}", "the {s} is {c}",
                    "there are {n} {c} {s}s", "a {c} {s} sits above a {c2} {s2}", "{c} is the color of the {s}")
NUMBERS = ("two", "three", "four", "five")
# Held-out phrasings: only ood-question records (test split) use them
OOD_QUESTIONS = (("what color is it?", "color"), ("which colour is this shape?", "color"),
                 ("tell me the color of the {s}.", "color"), ("name the shape.", "shape"),
                 ("what is this shape called?", "shape"), ("which shape do you see here?", "shape"))
# Held-out renderings: (what changes, canvas (width, height) or None for image_size square, background RGB or None
# for the usual light grey, JPEG quality or None for PNG). Only ood-render records (test split) look like this.
RENDERS = (("a larger canvas", (128, 128), None, None), ("a smaller canvas", (40, 40), None, None),
           ("a wide canvas", (200, 150), None, None), ("a white background", None, (255, 255, 255), None),
           ("a dark background", None, (40, 40, 48), None), ("JPEG, quality 60", None, None, 60))
# The described demo (`demo.captions: described`, conf/demo/described.yaml): each record also has a size and a
# place, which every modality carries (image: the shape's size and where its centre lies across; audio: loudness
# and when the tones start; text: the words), a caption of 10 words naming all four, and answers that are phrases.
SIZES = {"small": ((0.25, 0.32), 0.12), "medium": ((0.38, 0.45), 0.3), "large": ((0.5, 0.57), 0.7)}  # side, loudness
PLACES = {"left": ("on the left", (0.0, 0.38), (0.02, 0.06)), "middle": ("in the middle", (0.45, 0.55), (0.12, 0.16)),
          "right": ("on the right", (0.62, 1.0), (0.22, 0.26))}  # words, centre x, onset
DESCRIBED_TEXT = ("there is a {z} {c} {s} {p} of the picture", "a {c} {s}, {z}, {p}", "i can see one {z} {c} {s} {p}",
                  "the picture shows a {z} {c} {s} {p}", "this {s} is {z} and {c}, {p}")
DESCRIBED_QUESTIONS = (("what color is the shape?", "color"), ("which color does the {s} have?", "color"),
                       ("what shape is it?", "shape"), ("which shape is shown?", "shape"),
                       ("how big is the shape?", "size"), ("what size is the {s}?", "size"),
                       ("where is the shape?", "place"), ("where is the {s} drawn?", "place"))
FUSION_PAIRS = (("image", "audio"), ("image", "text"), ("audio", "text"))
FUSION_QUESTIONS = {("image", "audio"): "does the tone match the color of the shape?",
                    ("image", "text"): "does the sentence match the color of the shape?",
                    ("audio", "text"): "does the sentence match the color of the tone?"}


def rng_for(seed: int, stream: int, index: int) -> np.random.Generator:
    """One independent generator per (stream, item): record i is the same whatever n_records is."""
    return np.random.default_rng([seed, stream, index])


def regular_polygon(cx: float, cy: float, radius: float, corners: int, start: float = -np.pi / 2) -> list:
    angles = start + 2 * np.pi * np.arange(corners) / corners
    return [(cx + radius * np.cos(a), cy + radius * np.sin(a)) for a in angles]


def draw_shape(shape: str, rgb: tuple[int, int, int], size: int | tuple[int, int], rng: np.random.Generator,
               noise: float = 0.0, background: tuple[int, int, int] | None = None,
               layout: tuple[tuple[float, float], tuple[float, float]] | None = None) -> Image.Image:
    """`shape` filled with colour `rgb`, 40-70% of the shorter side, at a random position in the centred square of
    a light grey background (or `background`) of `size` (a square's side, or (width, height)); noise > 0 adds
    Gaussian pixel noise of std noise * 128. `layout` ((side from, to), (centre x from, to)), fractions of the
    shorter side, bounds the shape's size and where its centre lies across (the described demo's attributes)."""
    width, height = (size, size) if isinstance(size, int) else size
    grey = int(rng.integers(200, 236))
    image = Image.new("RGB", (width, height), background or (grey, grey, grey))
    short = min(width, height)
    sides = layout[0] if layout else (0.4, 0.7)
    side = int(rng.integers(int(sides[0] * short), int(sides[1] * short) + 1))
    margin = max(1, short // 16)  # never touches the border: the corners always show the background
    # inside the canvas's centred square: shard crops a non-square image to it (trimodal/data/features.py)
    left, top = (width - short) // 2, (height - short) // 2
    lo, hi = margin, short - side - margin
    if layout:  # the left edges that put the centre inside layout[1] (the nearest one when none does)
        lo = min(hi, max(lo, round(layout[1][0] * short - side / 2)))
        hi = max(lo, min(hi, round(layout[1][1] * short - side / 2)))
    x0 = left + int(rng.integers(lo, hi + 1))
    y0 = top + int(rng.integers(margin, short - side - margin + 1))
    x1, y1 = x0 + side - 1, y0 + side - 1
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (side - 1) / 2
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=rgb)
    elif shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=rgb)
    elif shape == "triangle":
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=rgb)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=rgb)
    elif shape in ("pentagon", "hexagon"):
        draw.polygon(regular_polygon(cx, cy, r, 5 if shape == "pentagon" else 6), fill=rgb)
    elif shape == "star":
        outer, inner = regular_polygon(cx, cy, r, 5), regular_polygon(cx, cy, 0.4 * r, 5, -np.pi / 2 + np.pi / 5)
        draw.polygon([p for pair in zip(outer, inner, strict=True) for p in pair], fill=rgb)
    else:  # cross: two bars a third of the side wide
        w = side / 3
        draw.rectangle((x0, cy - w / 2, x1, cy + w / 2), fill=rgb)
        draw.rectangle((cx - w / 2, y0, cx + w / 2, y1), fill=rgb)
    if noise > 0:
        pixels = np.asarray(image, dtype=np.float64) + rng.normal(0.0, noise * 128, (height, width, 3))
        image = Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))
    return image


def synthesize_audio(pulses: int, pitch_hz: float, sample_rate: int, seconds: float, rng: np.random.Generator,
                     max_pulses: int = 3, noise: float = 0.0, loudness: float | None = None,
                     onset: tuple[float, float] | None = None) -> np.ndarray:
    """`pulses` tone bursts at pitch_hz, jittered in amplitude and onset, plus a little noise (std 0.01 + 0.3 *
    noise). Bursts and gaps shrink so that max_pulses of them fit in 80% of the clip. `loudness` fixes the bursts'
    amplitude and `onset` (fractions of the clip) bounds where the first starts: the described demo's size and
    position."""
    n = round(sample_rate * seconds)
    k = max(3, max_pulses)
    pulse, gap = round(0.54 / k * n), round(0.24 / k * n)
    fade = max(1, min(pulse // 4, round(0.01 * sample_rate)))  # raised-cosine edges: no clicks smearing the spectrum
    envelope = np.ones(pulse)
    envelope[:fade] = envelope[-fade:][::-1] = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
    tone = np.sin(2 * np.pi * pitch_hz * np.arange(pulse) / sample_rate) * envelope
    span = pulses * pulse + (pulses - 1) * gap
    lo, hi = round(0.02 * n), n - span - round(0.02 * n)
    if onset:
        lo, hi = min(hi, max(lo, round(onset[0] * n))), min(hi, round(onset[1] * n))
    start = int(rng.integers(lo, max(lo, hi) + 1))
    audio = rng.normal(0.0, 0.01 + 0.3 * noise, n)
    for j in range(pulses):
        at = start + j * (pulse + gap)
        audio[at:at + pulse] += (loudness if loudness else rng.uniform(0.3, 0.6)) * tone
    return np.clip(audio, -1.0, 1.0)


def make_record(index: int, subset: Sequence[str], params: DemoParams, seed: int, out_dir: Path, stream: int = 0,
                prefix: str = "") -> dict:
    """Draw record `index`'s content, write its media under out_dir, return its table row. Another `stream` (and
    an id and file name `prefix`) draws another set of records."""
    rng = rng_for(seed, stream, index)
    name = f"{prefix}-{index:06d}" if prefix else f"{index:06d}"
    shapes, colors, pitch, pulses = palette(params.n_shapes, params.n_colors)
    shape, color = shapes[rng.integers(len(shapes))], list(colors)[rng.integers(len(colors))]
    if params.captions == "described":
        return described_record(index, subset, params, seed, out_dir, name, shape, color)
    question, asks = QUESTIONS[rng.integers(len(QUESTIONS))]
    record = {"id": f"demo-{name}", "caption": f"a {color} {shape}", "question": question.format(s=shape),
              "answer": color if asks == "color" else shape, "label": shape}
    image = draw_shape(shape, colors[color], params.image_size, rng, params.noise)
    audio = synthesize_audio(pulses[shape], pitch[color], params.sample_rate, params.audio_seconds, rng,
                             len(shapes), params.noise)
    text = TEXT_TEMPLATES[rng.integers(len(TEXT_TEMPLATES))].format(c=color, s=shape)
    if "image" in subset:  # media are drawn for every record so the RNG stream does not depend on the subset
        record["image_url"] = f"images/{name}.png"
        image.save(out_dir / record["image_url"], format="PNG")
    if "audio" in subset:
        record["audio_url"] = f"audio/{name}.wav"
        sf.write(out_dir / record["audio_url"], audio, params.sample_rate, subtype="PCM_16", format="WAV")
    if "text" in subset:
        record["text"] = text
    return record


def described_record(index: int, subset: Sequence[str], params: DemoParams, seed: int, out_dir: Path, name: str,
                     shape: str, color: str) -> dict:
    """Record `index` of the described demo: `shape` in `color` with a size and a place (SIZES, PLACES), a caption
    naming all four, a question about one of them answered in a phrase; its own random stream."""
    rng = rng_for(seed, 7, index)
    shapes, colors, pitch, pulses = palette(params.n_shapes, params.n_colors)
    size, place = list(SIZES)[rng.integers(len(SIZES))], list(PLACES)[rng.integers(len(PLACES))]
    (sides, loudness), (words, across, onset) = SIZES[size], PLACES[place]
    question, asks = DESCRIBED_QUESTIONS[rng.integers(len(DESCRIBED_QUESTIONS))]
    answer = {"color": f"it is {color}", "shape": f"it is a {shape}", "size": f"it is {size}", "place": words}[asks]
    record = {"id": f"demo-{name}", "caption": f"a {size} {color} {shape} {words} of the picture",
              "question": question.format(s=shape), "answer": answer, "label": shape}
    if "image" in subset:
        record["image_url"] = f"images/{name}.png"
        draw_shape(shape, colors[color], params.image_size, rng, params.noise, layout=(sides, across)).save(
            out_dir / record["image_url"], format="PNG")
    if "audio" in subset:
        record["audio_url"] = f"audio/{name}.wav"
        audio = synthesize_audio(pulses[shape], pitch[color], params.sample_rate, params.audio_seconds, rng,
                                 len(shapes), params.noise, loudness=loudness, onset=onset)
        sf.write(out_dir / record["audio_url"], audio, params.sample_rate, subtype="PCM_16", format="WAV")
    if "text" in subset:
        template = DESCRIBED_TEXT[rng.integers(len(DESCRIBED_TEXT))]
        record["text"] = template.format(z=size, c=color, s=shape, p=words)
    return record


def make_fusion_record(index: int, params: DemoParams, seed: int, out_dir: Path) -> dict:
    """Fusion record `index`: FUSION_PAIRS[index % 3], the first input in the record's colour, the second in the
    same colour (answer "yes") or another one ("no"), both showing the same shape."""
    rng = rng_for(seed, 3, index)
    pair = FUSION_PAIRS[index % len(FUSION_PAIRS)]
    shapes, palette_rgb, pitch, pulses = palette(params.n_shapes, params.n_colors)
    shape, color = shapes[rng.integers(len(shapes))], list(palette_rgb)[rng.integers(len(palette_rgb))]
    same = bool(rng.random() < 0.5) or len(palette_rgb) == 1
    others = [c for c in palette_rgb if c != color]
    second = color if same else others[rng.integers(len(others))]
    colors = dict(zip(pair, (color, second), strict=True))
    record = {"id": f"demo-fusion-{index:06d}", "question": FUSION_QUESTIONS[pair], "answer": "yes" if same else "no",
              "group": "fusion"}
    if "image" in colors:
        record["image_url"] = f"images/fusion-{index:06d}.png"
        draw_shape(shape, palette_rgb[colors["image"]], params.image_size, rng, params.noise).save(
            out_dir / record["image_url"], format="PNG")
    if "audio" in colors:
        record["audio_url"] = f"audio/fusion-{index:06d}.wav"
        audio = synthesize_audio(pulses[shape], pitch[colors["audio"]], params.sample_rate, params.audio_seconds, rng,
                                 len(shapes), params.noise)
        sf.write(out_dir / record["audio_url"], audio, params.sample_rate, subtype="PCM_16", format="WAV")
    if "text" in colors:
        record["text"] = TEXT_TEMPLATES[rng.integers(len(TEXT_TEMPLATES))].format(c=colors["text"], s=shape)
    return record


def make_ood_question_record(index: int, subset: Sequence[str], params: DemoParams, seed: int, out_dir: Path
                             ) -> dict:
    """Held-out phrasing `index`: an ordinary record over `subset` that asks in one of OOD_QUESTIONS."""
    record = make_record(index, subset, params, seed, out_dir, stream=4, prefix="ood-question")
    rng = rng_for(seed, 6, index)
    question, asks = OOD_QUESTIONS[rng.integers(len(OOD_QUESTIONS))]
    shape, color = record["label"], record["caption"].split()[1]
    record.update(question=question.format(s=shape), answer=color if asks == "color" else shape,
                  group="ood-question", split="test")
    return record


def make_ood_render_record(index: int, params: DemoParams, seed: int, out_dir: Path) -> dict:
    """Held-out rendering `index`: an image-only record drawn as RENDERS[index % len(RENDERS)] says."""
    rng = rng_for(seed, 5, index)
    shapes, colors, _, _ = palette(params.n_shapes, params.n_colors)
    shape, color = shapes[rng.integers(len(shapes))], list(colors)[rng.integers(len(colors))]
    question, asks = QUESTIONS[rng.integers(len(QUESTIONS))]
    _, canvas, background, quality = RENDERS[index % len(RENDERS)]
    image = draw_shape(shape, colors[color], canvas or params.image_size, rng, params.noise, background)
    url = f"images/ood-render-{index:06d}.{'jpg' if quality else 'png'}"
    if quality:
        image.save(out_dir / url, format="JPEG", quality=quality)
    else:
        image.save(out_dir / url, format="PNG")
    return {"id": f"demo-ood-render-{index:06d}", "image_url": url, "caption": f"a {color} {shape}",
            "question": question.format(s=shape), "answer": color if asks == "color" else shape, "label": shape,
            "group": "ood-render", "split": "test"}


def make_corpus_line(index: int, seed: int, params: DemoParams) -> dict:
    rng = rng_for(seed, 1, index)
    shapes, colors, _, _ = palette(params.n_shapes, params.n_colors)
    c, c2 = (list(colors)[i] for i in rng.integers(len(colors), size=2))
    s, s2 = (shapes[i] for i in rng.integers(len(shapes), size=2))
    template = CORPUS_TEMPLATES[rng.integers(len(CORPUS_TEMPLATES))]
    text = template.format(c=c, s=s, c2=c2, s2=s2, n=NUMBERS[rng.integers(len(NUMBERS))])
    return {"id": f"corpus-{index:06d}", "text": text}


def assign_subsets(n: int, seed: int) -> list[tuple[str, ...]]:
    """A seeded shuffle of SUBSETS repeated: every subset within one of n / 7 records."""
    order = np.random.default_rng([seed, 2]).permutation(n)
    return [SUBSETS[i % len(SUBSETS)] for i in order]


def generate(params: Params, out_dir: str | Path) -> Counter:
    """Write the whole demo scrape to out_dir atomically; returns record counts per modality subset."""
    demo = params.demo
    if demo.captions not in ("short", "described"):
        raise ValueError(f"demo.captions must be 'short' or 'described', got {demo.captions!r}")
    if demo.captions == "described" and (demo.n_ood_questions or demo.n_ood_renders):
        raise ValueError("demo.captions=described has no held-out records: set demo.n_ood_questions=0 and "
                         "demo.n_ood_renders=0 (conf/demo/described.yaml does)")
    subsets = assign_subsets(demo.n_records, params.seed)
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        (tmp / "audio").mkdir()
        records = [make_record(i, subset, demo, params.seed, tmp)
                   for i, subset in enumerate(tqdm(subsets, desc="demo", unit="record"))]
        records += [make_fusion_record(i, demo, params.seed, tmp)
                    for i in tqdm(range(demo.n_fusion), desc="demo fusion", unit="record")]
        held_out = assign_subsets(demo.n_ood_questions, params.seed + 1)
        records += [make_ood_question_record(i, subset, demo, params.seed, tmp)
                    for i, subset in enumerate(tqdm(held_out, desc="demo held-out questions", unit="record"))]
        records += [make_ood_render_record(i, demo, params.seed, tmp)
                    for i in tqdm(range(demo.n_ood_renders), desc="demo held-out renderings", unit="record")]
        write_jsonl(tmp / "records.jsonl", records)
        write_jsonl(tmp / "corpus.jsonl", (make_corpus_line(i, params.seed, demo) for i in range(demo.n_corpus)))
    counts = Counter("+".join(subset) for subset in subsets)
    print(f"demo: {demo.n_records} records ({', '.join(f'{k} {counts[k]}' for k in map('+'.join, SUBSETS))}), "
          f"{demo.n_fusion} fusion records, {demo.n_ood_questions} held-out phrasings and {demo.n_ood_renders} "
          f"held-out renderings (test split), {demo.n_corpus} corpus lines -> {out_dir}")
    return counts


def named(sources: Sequence[str], folder: Path) -> bool:
    """Does any source table lie in `folder`?"""
    return any((path := local_table(source)) is not None and path.is_relative_to(folder.resolve())
               for source in sources)


def write_unused(out_dir: Path) -> None:
    with atomic_dir(out_dir) as tmp:
        (tmp / "UNUSED.txt").write_text("data.sources names no demo table, so the demo scrape was not generated.\n"
                                        "Generate it: select conf/data/demo.yaml (the default) and `dvc repro`.\n")
    print(f"demo: data.sources names no table in {out_dir}; not generated (wrote {out_dir}/UNUSED.txt)")


def main(argv: Sequence[str] | None = None) -> None:
    params = load_params("params.yaml", sys.argv[1:] if argv is None else argv)
    out_dir = Path(params.paths.demo)
    if named(params.data.sources, out_dir):
        generate(params, out_dir)
    else:
        write_unused(out_dir)


if __name__ == "__main__":
    run_main(main)
