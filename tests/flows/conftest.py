import pytest

from tests.flows.prefect_cluster import running_cluster


@pytest.fixture(scope="module")
def cluster(request, tmp_path_factory, s3_server):
    """A Prefect deployment of its own for each module that asks (tests/flows/prefect_cluster.py), in a bucket of
    its own: the modules run side by side on pytest-xdist's workers."""
    bucket = request.module.__name__.rsplit(".", 1)[-1].replace("_", "-")  # e.g. test-deployment-recovery
    with running_cluster(tmp_path_factory, s3_server, bucket) as running:
        yield running
