"""The demo scrape: deterministic bytes, every subset present, media that decode and carry the named content."""
from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from stages import demo
from tests.stage_runner import make_project, run_stage
from trimodal.atomic import read_jsonl
from trimodal.params import Params, defaults


def demo_params(seed: int, **demo) -> Params:
    """conf/'s parameters with a smaller demo (dataclasses.replace keeps the rest of conf/demo), held-out records
    only where asked for."""
    params = defaults()
    params.seed, params.demo = seed, replace(params.demo, **{"n_ood_questions": 0, "n_ood_renders": 0, **demo})
    return params


PARAMS = demo_params(3, n_records=70, n_fusion=12, n_corpus=10, image_size=64, sample_rate=16000, audio_seconds=1.0,
                     n_ood_questions=14, n_ood_renders=12)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("demo") / "demo"
    demo.generate(PARAMS, out_dir)
    return out_dir


@pytest.fixture(scope="module")
def records(out):
    return [r for r in read_jsonl(out / "records.jsonl") if not r.get("group")]


@pytest.fixture(scope="module")
def fusion(out):
    return [r for r in read_jsonl(out / "records.jsonl") if r.get("group") == "fusion"]


def tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_identical_params_give_identical_bytes(out, tmp_path):
    demo.generate(PARAMS, tmp_path / "again")
    assert tree_bytes(tmp_path / "again") == tree_bytes(out)


def test_counts_ids_and_subsets(out, records):
    corpus = read_jsonl(out / "corpus.jsonl")
    assert len(records) == 70 and len(corpus) == 10
    ids = [r["id"] for r in records + corpus]
    assert len(set(ids)) == len(ids) and ids[0] == "demo-000000" and corpus[0]["id"] == "corpus-000000"
    subsets = Counter(tuple(m for m in demo.MODALITIES if f"{m}_url" in r or m in r) for r in records)
    assert set(subsets) == set(demo.SUBSETS) and set(subsets.values()) == {10}
    assert all(row["text"].strip() for row in corpus)


def test_targets_are_consistent(records):
    for r in records:
        color, shape = r["caption"].removeprefix("a ").split()
        assert color in demo.COLORS and shape in demo.SHAPES and r["label"] == shape
        asks = dict((q.format(s=shape), kind) for q, kind in demo.QUESTIONS)[r["question"]]
        assert r["answer"] == (color if asks == "color" else shape)
        if "text" in r:
            assert color in r["text"] and shape in r["text"]


def test_images_show_the_named_colour_and_shape(out, records):
    for r in (r for r in records if "image_url" in r):
        assert r["image_url"] == f"images/{r['id'][-6:]}.png"
        image = Image.open(out / r["image_url"])
        assert image.mode == "RGB" and image.size == (64, 64)
        pixels = np.asarray(image).reshape(-1, 3).astype(int)
        shape_mask = (pixels != pixels[0]).any(axis=1)  # the corner is always background
        values, counts = np.unique(pixels[shape_mask], axis=0, return_counts=True)
        dominant = values[counts.argmax()]
        nearest = min(demo.COLORS, key=lambda c: np.sum((np.array(demo.COLORS[c]) - dominant) ** 2))
        color, shape = r["caption"].split()[1:]
        assert nearest == color
        ys, xs = np.nonzero(shape_mask.reshape(64, 64))
        height, width = np.ptp(ys) + 1, np.ptp(xs) + 1
        assert min(height, width) >= 0.3 * 64
        fill = shape_mask.sum() / (height * width)  # square ~1, circle ~pi/4, triangle ~1/2
        assert {"square": fill > 0.9, "circle": 0.7 < fill < 0.9, "triangle": fill < 0.65}[shape]


def test_audio_pitch_and_pulses_carry_colour_and_shape(out, records):
    for r in (r for r in records if "audio_url" in r):
        audio, rate = sf.read(out / r["audio_url"])
        assert rate == 16000 and audio.ndim == 1 and len(audio) == 16000
        assert sf.info(out / r["audio_url"]).subtype == "PCM_16"
        color, shape = r["caption"].split()[1:]
        spectrum = np.abs(np.fft.rfft(audio))
        peak = np.fft.rfftfreq(len(audio), 1 / rate)[spectrum.argmax()]
        assert abs(peak - demo.PITCH_HZ[color]) < 0.05 * demo.PITCH_HZ[color]
        loud = np.abs(audio).reshape(-1, 160).max(axis=1) > 0.15  # 10 ms frames above the noise floor
        assert np.count_nonzero(np.diff(loud.astype(int)) == 1) + loud[0] == demo.PULSES[shape]


def test_fusion_records_need_both_inputs(out, fusion):
    assert len(fusion) == 12 and all(r["id"].startswith("demo-fusion-") for r in fusion)
    assert Counter(tuple(m for m in demo.MODALITIES if f"{m}_url" in r or m in r) for r in fusion) == {
        pair: 4 for pair in demo.FUSION_PAIRS}
    assert {r["answer"] for r in fusion} == {"yes", "no"}
    for r in fusion:
        assert r["question"] == demo.FUSION_QUESTIONS[tuple(m for m in demo.MODALITIES if f"{m}_url" in r or m in r)]
        assert "caption" not in r and "label" not in r  # ambiguous when the inputs disagree
        colours = []
        if "image_url" in r:
            pixels = np.asarray(Image.open(out / r["image_url"])).reshape(-1, 3).astype(int)
            values, counts = np.unique(pixels[(pixels != pixels[0]).any(axis=1)], axis=0, return_counts=True)
            dominant = values[counts.argmax()]
            colours.append(min(demo.COLORS, key=lambda c: np.sum((np.array(demo.COLORS[c]) - dominant) ** 2)))
        if "audio_url" in r:
            audio, rate = sf.read(out / r["audio_url"])
            peak = np.fft.rfftfreq(len(audio), 1 / rate)[np.abs(np.fft.rfft(audio)).argmax()]
            colours.append(min(demo.PITCH_HZ, key=lambda c: abs(demo.PITCH_HZ[c] - peak)))
        if "text" in r:
            colours.append(next(c for c in demo.COLORS if c in r["text"]))
        assert len(colours) == 2 and r["answer"] == ("yes" if colours[0] == colours[1] else "no"), r


def dominant_colour(image: Image.Image) -> str:
    """The palette colour nearest the most frequent pixel away from the background (the most frequent colour: the
    shape covers under half the canvas). Colours are binned by 16 per channel: JPEG smears them a little."""
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int) // 16 * 16
    values, counts = np.unique(pixels, axis=0, return_counts=True)
    away = np.abs(values - values[counts.argmax()]).sum(axis=1) > 60
    dominant = values[away][counts[away].argmax()] + 8
    return min(demo.COLORS, key=lambda c: np.sum((np.array(demo.COLORS[c]) - dominant) ** 2))


def test_held_out_phrasings_are_test_records_no_other_record_asks(out, records):
    held = [r for r in read_jsonl(out / "records.jsonl") if r.get("group") == "ood-question"]
    assert len(held) == 14 and all(r["split"] == "test" for r in held)
    trained = {r["question"] for r in records}
    phrasings = {q.format(s=s) for q, _ in demo.OOD_QUESTIONS for s in demo.SHAPES}
    assert {r["question"] for r in held} <= phrasings and not trained & phrasings
    assert len({tuple(m for m in demo.MODALITIES if f"{m}_url" in r or m in r) for r in held}) == 7
    for r in held:
        color, shape = r["caption"].removeprefix("a ").split()
        asks = dict((q.format(s=shape), kind) for q, kind in demo.OOD_QUESTIONS)[r["question"]]
        assert r["answer"] == (color if asks == "color" else shape) and r["label"] == shape


def test_held_out_renderings_are_test_images_unlike_the_training_ones(out, records):
    held = [r for r in read_jsonl(out / "records.jsonl") if r.get("group") == "ood-render"]
    assert len(held) == 12 and all(r["split"] == "test" and set(r) >= {"image_url", "caption"} for r in held)
    assert not any("audio_url" in r or "text" in r for r in held)
    looks = set()
    for i, r in enumerate(held):
        name, canvas, background, quality = demo.RENDERS[i % len(demo.RENDERS)]
        image = Image.open(out / r["image_url"])
        assert image.format == ("JPEG" if quality else "PNG") and image.size == (canvas or (64, 64))
        corner = np.asarray(image.convert("RGB"))[0, 0].astype(int)
        if background:
            assert np.abs(corner - background).max() <= 2  # never the training images' grey (200-235)
        assert dominant_colour(image) == r["caption"].split()[1]
        looks.add(name)
    assert looks == {name for name, *_ in demo.RENDERS}


def test_module_run_writes_the_demo_dir(tmp_path):
    root = make_project(tmp_path / "project")
    proc = run_stage("demo", root, "demo.n_records=14", "demo.n_fusion=3", "demo.n_corpus=3",
                     "demo.n_ood_questions=2", "demo.n_ood_renders=2")
    out = root / "data/sources/demo"
    assert len(read_jsonl(out / "records.jsonl")) == 21 and len(read_jsonl(out / "corpus.jsonl")) == 3
    assert "demo: 14 records" in proc.stdout and "3 fusion records" in proc.stdout
    assert not [p for p in out.parent.iterdir() if p.name != "demo"]  # no temp dirs left behind


def test_the_fine_grained_variant_carries_every_shape_and_colour_in_every_modality(tmp_path):
    params = demo_params(1, n_records=160, n_fusion=0, n_corpus=4, n_shapes=8, n_colors=8)
    demo.generate(params, tmp_path / "hard")
    shapes, colors, pitch, pulses = demo.palette(8, 8)
    records = read_jsonl(tmp_path / "hard/records.jsonl")
    assert {r["label"] for r in records} == set(shapes) and {r["caption"].split()[1] for r in records} == set(colors)
    for r in records:
        color, shape = r["caption"].split()[1:]
        if "image_url" in r:
            pixels = np.asarray(Image.open(tmp_path / "hard" / r["image_url"])).reshape(-1, 3).astype(int)
            values, counts = np.unique(pixels[(pixels != pixels[0]).any(axis=1)], axis=0, return_counts=True)
            dominant = values[counts.argmax()]
            assert min(colors, key=lambda c: np.sum((np.array(colors[c]) - dominant) ** 2)) == color
        if "audio_url" in r:
            audio, rate = sf.read(tmp_path / "hard" / r["audio_url"])
            peak = np.fft.rfftfreq(len(audio), 1 / rate)[np.abs(np.fft.rfft(audio)).argmax()]
            assert min(pitch, key=lambda c: abs(pitch[c] - peak)) == color
            loud = np.abs(audio).reshape(-1, 160).max(axis=1) > 0.15
            assert np.count_nonzero(np.diff(loud.astype(int)) == 1) + loud[0] == pulses[shape], r["id"]
    with pytest.raises(ValueError, match="n_shapes"):
        demo.palette(9, 4)


def test_noise_perturbs_the_media_but_not_the_targets(tmp_path):
    clean = demo_params(2, n_records=14, n_fusion=0, n_corpus=2)
    noisy = demo_params(2, n_records=14, n_fusion=0, n_corpus=2, noise=0.1)
    demo.generate(clean, tmp_path / "clean")
    demo.generate(noisy, tmp_path / "noisy")
    a, b = read_jsonl(tmp_path / "clean/records.jsonl"), read_jsonl(tmp_path / "noisy/records.jsonl")
    assert [r["caption"] for r in a] == [r["caption"] for r in b]
    r = next(r for r in a if "image_url" in r)
    x = np.asarray(Image.open(tmp_path / "clean" / r["image_url"])).astype(float)
    y = np.asarray(Image.open(tmp_path / "noisy" / r["image_url"])).astype(float)
    assert 8 < np.std(y - x) < 16  # std 12.8 before clipping


def test_demo_is_not_generated_when_no_source_names_it(tmp_path):
    """data.sources names the user's own table: the demo writes one small file, the same bytes whatever its
    params, so ingest (which hashes all of data/sources/) does not rerun when they change."""
    root = make_project(tmp_path / "project")
    written = {}
    for n_records in (14, 21):
        proc = run_stage("demo", root, "data.sources=[data/sources/mine/records.jsonl]", f"demo.n_records={n_records}")
        assert "names no table in data/sources/demo; not generated" in proc.stdout, proc.stdout
        out = root / "data/sources/demo"
        written[n_records] = {p.name: p.read_bytes() for p in out.iterdir()}
    assert list(written[14]) == ["UNUSED.txt"] and written[14] == written[21]
    assert demo.named(["file://" + str(root / "data/sources/demo/records.jsonl")], root / "data/sources/demo")
    assert not demo.named(["s3://bucket/data/sources/demo/records.jsonl"], root / "data/sources/demo")


def test_the_described_variant_carries_size_and_place_in_every_modality_and_in_long_captions(tmp_path):
    params = demo_params(4, n_records=42, n_fusion=3, n_corpus=2, captions="described")
    demo.generate(params, tmp_path / "described")
    records = [r for r in read_jsonl(tmp_path / "described/records.jsonl") if not r.get("group")]
    assert len({r["caption"] for r in records}) > 10
    for r in records:
        words = r["caption"].split()
        size, color, shape = words[1:4]
        place = next(p for p, (phrase, *_) in demo.PLACES.items() if phrase in r["caption"])
        assert len(words) == 10 and r["caption"] == f"a {size} {color} {shape} {demo.PLACES[place][0]} of the picture"
        asks = dict((q.format(s=shape), kind) for q, kind in demo.DESCRIBED_QUESTIONS)[r["question"]]
        assert r["answer"] == {"color": f"it is {color}", "shape": f"it is a {shape}", "size": f"it is {size}",
                               "place": demo.PLACES[place][0]}[asks]
        if "text" in r:
            assert all(w in r["text"] for w in (size, color, shape, demo.PLACES[place][0]))
        if "image_url" in r:
            pixels = np.asarray(Image.open(tmp_path / "described" / r["image_url"])).astype(int)
            ys, xs = np.nonzero((pixels != pixels[0, 0]).any(axis=2))
            side, centre = (np.ptp(xs) + 1) / 64, xs.mean() / 64
            (low, high), _ = demo.SIZES[size]
            assert low - 0.03 <= side <= high + 0.03, (r, side)
            assert {"left": centre < 0.45, "middle": 0.4 < centre < 0.6, "right": centre > 0.55}[place], (r, centre)
        if "audio_url" in r:
            audio, rate = sf.read(tmp_path / "described" / r["audio_url"])
            loud = np.flatnonzero(np.abs(audio) > 0.05)
            _, _, (first, last) = demo.PLACES[place]
            assert first - 0.01 <= loud[0] / len(audio) <= last + 0.01, (r, loud[0] / len(audio))
            assert abs(np.abs(audio).max() - demo.SIZES[size][1]) < 0.05, r  # the bursts' amplitude


def test_the_described_variant_refuses_held_out_records_it_cannot_describe(tmp_path):
    with pytest.raises(ValueError, match="demo.captions=described has no held-out records"):
        demo.generate(demo_params(4, n_records=7, n_fusion=0, n_corpus=1, captions="described", n_ood_renders=2),
                      tmp_path / "x")
    with pytest.raises(ValueError, match="demo.captions must be"):
        demo.generate(demo_params(4, n_records=7, n_fusion=0, n_corpus=1, captions="long"), tmp_path / "y")
