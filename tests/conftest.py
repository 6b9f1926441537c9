# gto (DVC's model-registry library, trimodal/registry.py) runs logging.config.dictConfig when first imported, and
# dictConfig closes every logging handler made before it. Under pytest one of those is absl's (rouge-score, via
# stages/common/scoring.py), whose close() closes its stream when that is not sys.stderr itself: here DVC's
# colorama wrapper around pytest's capture, so pytest loses stderr mid-run. Importing gto first, before any such
# handler exists, makes its dictConfig harmless.
import gto.log  # noqa: F401  (first: see above)
import pytest

from tests.s3_server import moto_s3

# pytest-xdist (pyproject's addopts: `-n auto --dist loadgroup`) hands a worker whole groups: every module is one,
# so a module's fixtures are built once, and modules that share a costly session fixture form one group with it.
SHARED_FIXTURES = {"aligned_project": "aligned-project"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config, items):
    group_of = {}
    for item in items:
        for fixture, group in SHARED_FIXTURES.items():
            if fixture in item.fixturenames:
                group_of[item.module.__name__] = group
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group_of.get(item.module.__name__, item.module.__name__)))


@pytest.fixture(scope="session")
def s3_server():
    """A local S3 endpoint (moto) for the whole session; AWS_ENDPOINT_URL points boto3/s3fs at it."""
    with moto_s3() as endpoint:
        yield endpoint
