"""README's command blocks run as written, in order, in a clone after command 1.

The blocks are README's ```bash fences, in order. The first holds commands 1 and 2 and is not run: command 2 is
this test suite, and command 1 is `infra/setup.sh` (the environment this test already runs in) then `dvc repro`,
which the fixture runs in a fresh clone, as written, on params.yaml composed from conf/ with smaller sizes
(`python -m stages.common.params write <overrides>`: a tenth of the demo, a tiny image size, a few steps per
training stage). The default DAG takes about 9 minutes on 2 cores and the whole suite has 25; the smaller run goes
through every stage of the same dvc.yaml, so each block meets the files command 1 leaves, only fewer and worse
trained. Every other block runs in that clone with `bash -e -o pipefail`: it must exit 0, and every path under
models/, data/, reports/ or metrics/ that it names must exist afterwards.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_pipeline_e2e import clone_worktree, dvc, dvc_env

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

STEPS = ["steps=3", "batch_size=4", "warmup_steps=1", "log_every=1", "checkpoint_every=2"]
SMALL = ["demo.n_records=56", "demo.n_fusion=12", "demo.n_corpus=14", "demo.n_ood_questions=7",
         "demo.n_ood_renders=6", "tokenizer.vocab_size=300", "shard.samples_per_shard=16",
         "model.image_size=16", "model.patch_size=8", "model.n_mels=20",
         *(f"{stage}.{s}" for stage in ("pretrain", "finetune", "instruct", "align", "distill") for s in STEPS),
         "quantize.speed_batch_sizes=[]", "quantize.calibration_batches=2",
         "evaluate.latency_batch_sizes=[1]", "evaluate.latency_repeats=1"]
FENCE = re.compile(r"^```bash\n(.*?)^```$", re.S | re.M)
PROMISED = re.compile(r"(?<![\w/])((?:models|data|reports|metrics)/[\w./-]*\w)")


def bash_blocks(markdown: str) -> list[str]:
    """The ```bash fences of a markdown text, in order."""
    return FENCE.findall(markdown)


def test_bash_blocks_are_read_in_order():
    text = "a\n```bash\nfirst\n```\n```text\nnot run\n```\n```bash\nsecond\nthird\n```\n"
    assert bash_blocks(text) == ["first\n", "second\nthird\n"]
    assert PROMISED.findall("ls models/teacher data/x.png # in reports/report.md, not mymodels/x") == [
        "models/teacher", "data/x.png", "reports/report.md"]


@pytest.fixture(scope="module")
def after_command_1(tmp_path_factory):
    root = clone_worktree(tmp_path_factory.mktemp("readme"))
    env = dvc_env(root)
    subprocess.run([sys.executable, "-m", "stages.common.params", "write", *SMALL], cwd=root, env=env, check=True,
                   capture_output=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "clone"], cwd=root, check=True)
    first = dvc(root, "repro")
    assert "Running stage 'evaluate'" in first.stdout
    return root


def test_readme_blocks_run_in_order_after_command_1(after_command_1):
    root = after_command_1
    blocks = bash_blocks((REPO / "README.md").read_text())
    assert blocks[0].count("bash infra/setup.sh && . .venv/bin/activate && ") == 2, blocks[0]  # commands 1, 2
    assert "dvc repro" in blocks[0] and "python -m pytest" in blocks[0]
    assert len(blocks) > 1, "README has no block to run after command 1"
    for block in blocks[1:]:
        ran = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=root, env=dvc_env(root),
                             capture_output=True, text=True, timeout=600)
        assert ran.returncode == 0, f"README block failed ({ran.returncode}):\n{block}\n{ran.stdout[-3000:]}" \
                                    f"\n{ran.stderr[-3000:]}"
        missing = [p for p in PROMISED.findall(block) if not (root / p).exists()]
        assert missing == [], f"README block names {missing}, which do not exist after it:\n{block}"
