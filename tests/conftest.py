# gto (DVC's model-registry library, trimodal/registry.py) runs logging.config.dictConfig when first imported, and
# dictConfig closes every logging handler made before it. Under pytest one of those is absl's (rouge-score, via
# stages/common/scoring.py), whose close() closes its stream when that is not sys.stderr itself: here DVC's
# colorama wrapper around pytest's capture, so pytest loses stderr mid-run. Importing gto first, before any such
# handler exists, makes its dictConfig harmless.
import gto.log  # noqa: F401  (first: see above)
import pytest

from tests.s3_server import moto_s3


@pytest.fixture(scope="session")
def s3_server():
    """A local S3 endpoint (moto) for the whole session; AWS_ENDPOINT_URL points boto3/s3fs at it."""
    with moto_s3() as endpoint:
        yield endpoint
