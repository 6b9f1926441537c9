"""What "beats" means, on hand-made scores, and the GTO tags a promotion writes, in a real git repository.
Promotion end to end (real DVC, trained models, scored on shards): tests/stages/test_post_training.py."""
import subprocess

import pytest

from trimodal.registry import beats, production_version, tag_version

RULE = ["vqa_accuracy", "cls_accuracy"]


@pytest.mark.parametrize("candidate, won", [
    ({"vqa_accuracy": 0.6, "cls_accuracy": 0.5}, True),    # better on one, equal on the other
    ({"vqa_accuracy": 0.6, "cls_accuracy": 0.6}, True),    # better on both
    ({"vqa_accuracy": 0.5, "cls_accuracy": 0.5}, False),   # equal: no better, so the production model stays
    ({"vqa_accuracy": 0.9, "cls_accuracy": 0.49}, False),  # much better on one, worse on the other
    ({"vqa_accuracy": 0.4, "cls_accuracy": 0.4}, False),   # worse
    ({"vqa_accuracy": 0.9}, False),                        # a score production has and the candidate lacks
])
def test_beats_means_worse_on_none_and_better_on_one(candidate, won):
    production = {"vqa_accuracy": 0.5, "cls_accuracy": 0.5}
    assert beats(candidate, production, RULE)[0] is won


def test_beats_reads_perplexity_as_lower_is_better_and_names_every_score():
    won, lines = beats({"perplexity": 3.0, "vqa_accuracy": 0.5}, {"perplexity": 4.0, "vqa_accuracy": 0.5},
                       ["perplexity", "vqa_accuracy"])
    assert won
    assert lines == ["  perplexity     HEAD 3.0000 vs production 4.0000: better",
                     "  vqa_accuracy   HEAD 0.5000 vs production 0.5000: equal"]
    assert not beats({"perplexity": 5.0}, {"perplexity": 4.0}, ["perplexity"])[0]


def test_a_score_neither_model_has_is_left_out():
    won, lines = beats({"vqa_accuracy": 0.7}, {"vqa_accuracy": 0.5}, RULE)  # e.g. no labelled test record
    assert won and "cls_accuracy   not scored for either model" in lines[1]


def test_promotions_are_gto_version_and_stage_tags(tmp_path):
    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    git("config", "user.name", "t")
    git("config", "user.email", "t@localhost")
    git("commit", "-q", "--allow-empty", "-m", "first model")
    assert production_version(tmp_path, "student-int8", "prod") is None
    assert tag_version(tmp_path, "student-int8", "prod", None, None, False) == (
        "v0.0.1", ["student-int8@v0.0.1", "student-int8#prod#1"])
    git("commit", "-q", "--allow-empty", "-m", "second model")
    git("tag", "-a", "student-int8@v0.1.0", "-m", "registered before, promoted now")
    assert tag_version(tmp_path, "student-int8", "prod", None, None, False) == ("v0.1.0", ["student-int8#prod#2"])
    found = production_version(tmp_path, "student-int8", "prod")
    assert found.version == "v0.1.0" and found.commit_hexsha == git("rev-parse", "HEAD").strip()
    assert "student-int8#prod#2" in git("tag", "--points-at", "HEAD").split()
