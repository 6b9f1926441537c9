import pytest

from tests.s3_server import moto_s3


@pytest.fixture(scope="session")
def s3_server():
    """A local S3 endpoint (moto) for the whole session; AWS_ENDPOINT_URL points boto3/s3fs at it."""
    with moto_s3() as endpoint:
        yield endpoint
