"""The running platform for end-to-end tests, wherever they live (a pytest plugin: see tests/conftest.py)."""

from collections.abc import Iterator

import pytest
from django.conf import settings
from django.db import connection

from tests.e2e.harness import Client, Platform, database_url, serving, tenant_client


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests of tests/e2e/ and every test on a running platform are end-to-end (`-m "not e2e"` leaves them out)."""
    for item in items:
        if "tests/e2e/" in str(item.path) or "platform" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def platform(
    django_db_setup: None, django_db_blocker: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """Real Daphne and a real Celery worker on the test database, PostgreSQL and Redis."""
    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        pytest.skip("end-to-end tests need DATABASE_URL (PostgreSQL) and REDIS_URL; `make test` sets both")
    with serving(
        database_url(connection.settings_dict), settings.REDIS_URL, tmp_path_factory.mktemp("e2e")
    ) as platform:
        yield platform


@pytest.fixture
def acme(platform: Platform, transactional_db: None) -> Client:
    """Tenant acme's client application, talking to the running platform."""
    return tenant_client(platform.base_url, "acme")


@pytest.fixture
def globex(platform: Platform, transactional_db: None) -> Client:
    return tenant_client(platform.base_url, "globex")
