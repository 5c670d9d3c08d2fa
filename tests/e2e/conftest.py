from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tenants.models import ApiKey, Tenant
from tenants.services import ensure_offline_model
from tests.e2e.harness import Client, Platform, database_url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def platform(
    django_db_setup: None, django_db_blocker: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """Real Daphne and a real Celery worker on the test database, PostgreSQL and Redis."""
    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        pytest.skip("end-to-end tests need DATABASE_URL (PostgreSQL) and REDIS_URL; `make test` sets both")
    work_dir: Path = tmp_path_factory.mktemp("e2e")
    platform = Platform(database_url(connection.settings_dict), settings.REDIS_URL, work_dir)
    try:
        platform.start_web()
        platform.start_worker()
        yield platform
    finally:
        platform.stop()


@pytest.fixture
def acme(platform: Platform, transactional_db: None) -> Client:
    """Tenant acme's client application, talking to the running platform."""
    tenant = Tenant.objects.create(id="acme", name="Acme", default_model=ensure_offline_model())
    return Client(platform.base_url, tenant.pk, ApiKey.issue("e2e", tenant=tenant)[1])


@pytest.fixture
def globex(platform: Platform, transactional_db: None) -> Client:
    tenant = Tenant.objects.create(id="globex", name="Globex", default_model=ensure_offline_model())
    return Client(platform.base_url, tenant.pk, ApiKey.issue("e2e", tenant=tenant)[1])
