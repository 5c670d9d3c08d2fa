"""The running platform for end-to-end tests, wherever they live (a pytest plugin: see tests/conftest.py)."""

import os
import shutil
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.db import connection
from playwright.sync_api import Browser, sync_playwright

from tests.e2e.harness import (
    Client,
    Platform,
    database_url,
    serving,
    serving_embedded,
    tenant_client,
    wait_for_quiet_database,
)

NEEDS_POSTGRESQL = "end-to-end tests need DATABASE_URL (PostgreSQL) and REDIS_URL; `make test` sets both"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests of tests/e2e/ and every test on a running platform are end-to-end (`-m "not e2e"` leaves them out)."""
    for item in items:
        if "tests/e2e/" in str(item.path) or "platform" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """On SQLite the running platform is `make run`'s embedded one (no Celery, no Redis): only tests marked
    `sqlite` are written for it."""
    on_platform = "platform" in getattr(item, "fixturenames", ())
    if on_platform and connection.vendor == "sqlite" and item.get_closest_marker("sqlite") is None:
        pytest.skip(NEEDS_POSTGRESQL)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """Before the database is flushed after a test on the running platform, let its writes end."""
    if "platform" in getattr(item, "fixturenames", ()) and connection.vendor == "postgresql":
        wait_for_quiet_database(database_url(connection.settings_dict))
    return (yield)


@pytest.fixture(scope="session")
def platform(
    django_db_setup: None, django_db_blocker: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """Real Daphne and a real Celery worker on the test database, PostgreSQL and Redis; on SQLite, Daphne
    alone on the embedded defaults, as `make run` serves them."""
    if connection.vendor == "sqlite":
        with serving_embedded(database_url(connection.settings_dict), tmp_path_factory.mktemp("embedded")) as embedded:
            yield embedded
        return
    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        pytest.skip(NEEDS_POSTGRESQL)
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


CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
def orm_beside_playwright(monkeypatch: pytest.MonkeyPatch) -> None:
    # Playwright's sync API keeps an event loop running in this thread, which makes Django refuse
    # ORM calls; the test's own ORM calls are plain synchronous ones, so they are safe here.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium, driven by Playwright (per module: its event loop stays in this thread)."""
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian package chromium; .ci/run installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
        )
        yield browser
        browser.close()
