import os

# One torch thread per process, inherited by every stage, dvc and worker process a test starts: pytest-xdist runs
# a worker per core, and a second intra-op thread per process only contends for the same cores (an OpenMP region
# waits for its slowest thread, so a 2-thread process beside another busy one runs several times slower). A
# thread count set by the caller is kept.
for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")

# gto (DVC's model-registry library, trimodal/registry.py) runs logging.config.dictConfig when first imported, and
# dictConfig closes every logging handler made before it. Under pytest one of those is absl's (rouge-score, which
# trimodal/evaluation/scoring.py imports when it scores), whose close() closes its stream when that is not
# sys.stderr itself: here DVC's colorama wrapper around pytest's capture, so pytest loses stderr mid-run. Importing
# gto first, before any such handler exists, makes its dictConfig harmless.
import gto.log  # noqa: E402, F401  (first: see above)
import pytest  # noqa: E402
from _pytest.mark import deselect_by_mark  # noqa: E402  parses and checks `-m` (pytest is pinned)

from tests.s3_server import moto_s3  # noqa: E402

# pytest-xdist (`-n auto --dist loadfile --no-loadscope-reorder`, pyproject.toml) hands whole modules to the
# workers in collection order, a worker taking its next one when two of its tests are left. Without an order it
# would hand out the modules with the most tests first and the full-DAG ones late, so the run waited ~20 minutes
# on test_deployment alone at the end. The longest modules go first, longest first (`--durations` on 2 cores).
LONGEST_FIRST = (
    "tests/flows/test_deployment.py",  # train/full and a single-machine repro on a deployment of its own
    "tests/flows/test_deployment_recovery.py",  # the gate, a killed worker and ingest, on another, side by side
    "tests/stages/test_post_training.py",
    "tests/stages/test_train.py",
    "tests/stages/test_deepseek_vl_stages.py",  # every stage of the family, four of them on 2 processes
    "tests/stages/test_quantize.py",
    "tests/stages/test_incremental.py",
    "tests/model/test_quantization.py",
    "tests/test_readme.py",  # the whole DAG at small sizes, then README's blocks: 3-5 min
    "tests/stages/test_alignment_stages.py",
    "tests/flows/test_dvc_stages.py",
    "tests/trimodal/test_wheel.py",  # the `models` fixture, then a build, an install and three processes: ~2 min
    "tests/test_pipeline_e2e.py",
    "tests/benchmarks/test_gpu_check.py",
    "tests/stages/test_dedup.py",
    "tests/stages/test_ingest.py",
    "tests/trimodal/serving/test_server.py",
    "tests/trimodal/test_cli.py",
)


def pytest_configure(config: pytest.Config) -> None:
    # --strict-markers makes pytest refuse an unregistered name in `-m`, but under xdist only the workers collect
    # and apply `-m`: each one died of that usage error and the controller reported an INTERNALERROR naming a
    # test. Checked here, in the controller, a typo in `-m` is pytest's one-line usage error (exit 4) instead.
    if not hasattr(config, "workerinput"):
        deselect_by_mark([], config)


@pytest.hookimpl(tryfirst=True)  # before pytest's own hook applies `-m`, so that `-m "not slow"` sees the mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.slow)
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest as collected


@pytest.fixture(scope="session")
def s3_server():
    """A local S3 endpoint (moto) for the whole session; AWS_ENDPOINT_URL points boto3/s3fs at it."""
    with moto_s3() as endpoint:
        yield endpoint
