"""What the workspace tests share: a real S3 protocol server (moto), one per test module."""

from collections.abc import Iterator

import pytest

from tests.e2e.harness import S3Server


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    yield server
    server.stop()
