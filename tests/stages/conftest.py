from pathlib import Path

import pytest

from tests.shard_fixtures import built_once, trained_project

SHORT = ["steps=3", "batch_size=4", "warmup_steps=1", "log_every=1", "checkpoint_every=2", "shuffle=0"]


@pytest.fixture(scope="session")
def aligned_project(tmp_path_factory):
    """A project trained through the DAG's training stages as dvc.yaml chains them (pretrain, finetune, instruct,
    preferences, align) on the 28-record shard fixtures, once for the session's workers: test_post_training goes
    on from its teacher (on a copy), test_alignment_stages reads what the alignment stages wrote (and works on
    copies). Every fixture answer is "red": 20 finetune steps on the questions as they are teach the teacher to
    say so (a VQA score above 0, which the promote test needs; with question noise and background swap, 20 steps
    are too few)."""
    def build(folder: Path) -> None:
        trained_project(folder / "data", folder / "project", SHORT,
                        [*SHORT, "steps=20", "checkpoint_every=10", "question_noise=0.0", "background_swap=0.0"], SHORT)

    return built_once(tmp_path_factory, "aligned", build) / "project"
