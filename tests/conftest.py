"""Actors and data shared by the whole suite: tenants, their keys, API clients that use them, conversations and runs."""

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from agents.services import default_profile, update_profile
from conversations.models import Conversation, Event, Run
from tenants.models import ApiKey, LanguageModel, Tenant
from tenants.services import ensure_offline_model
from tests.factories import LanguageModelFactory

# The running platform (real Daphne, Celery, PostgreSQL and Redis) for the end-to-end tests of every app.
pytest_plugins = ["tests.e2e.fixtures"]


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """On SQLite the test database is a file, not Django's shared memory: the running platform's Daphne
    (tests marked `sqlite`) opens it too."""
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        database.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("sqlite") / "test.sqlite3")


@pytest.fixture(autouse=True)
def no_reaper_thread_in_the_test_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a broker the ASGI application starts a reaper thread in its process. In the test
    process it would outlive its test, touch the database between tests, and reap or dispatch the
    runs of the end-to-end platforms, which have reapers of their own."""
    monkeypatch.setattr("runs.dispatch.start_reaper_thread", lambda: None)
    monkeypatch.setattr("config.asgi.start_reaper_thread", lambda: None)


@pytest.fixture(autouse=True)
def quick_password_hashing(request: pytest.FixtureRequest) -> Iterator[None]:
    """A password hashed at its real cost (about 0.3 s) was most of an admin test's time. Not for tests on
    the running platform: its processes check the passwords these tests make with the real hashers."""
    if "platform" in request.fixturenames:
        yield
        return
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture
def offline_model(db: None) -> LanguageModel:
    return ensure_offline_model()


@pytest.fixture
def sonnet(db: None) -> LanguageModel:
    """Claude Sonnet 4.5 at its list prices, read back so prices are the Decimals the database returns."""
    LanguageModelFactory(id="sonnet", display_name="Claude Sonnet 4.5")
    return LanguageModel.objects.get(pk="sonnet")


@pytest.fixture
def make_tenant(offline_model: LanguageModel) -> Callable[..., Tenant]:
    def make(tenant_id: str, instructions: str = "", **fields: object) -> Tenant:
        """A tenant; `instructions` are its default agent's."""
        tenant = Tenant.objects.create(id=tenant_id, name=tenant_id.title(), default_model=offline_model, **fields)
        if instructions:
            update_profile(default_profile(tenant), {"instructions": instructions})
        return tenant

    return make


@pytest.fixture
def tenant(make_tenant: Callable[..., Tenant]) -> Tenant:
    return make_tenant("acme", instructions="You help Acme's customers.")


@pytest.fixture
def other_tenant(make_tenant: Callable[..., Tenant]) -> Tenant:
    return make_tenant("globex")


def client_with_key(raw_key: str, user_id: str = "") -> APIClient:
    client = APIClient()
    headers = {"HTTP_X_API_KEY": raw_key}
    if user_id:
        headers["HTTP_X_USER_ID"] = user_id
    client.credentials(**headers)
    return client


@pytest.fixture
def tenant_key(tenant: Tenant) -> str:
    return ApiKey.issue("acme key", tenant=tenant)[1]


@pytest.fixture
def other_tenant_key(other_tenant: Tenant) -> str:
    return ApiKey.issue("globex key", tenant=other_tenant)[1]


@pytest.fixture
def admin_key(db: None) -> str:
    return ApiKey.issue("platform admin")[1]


@pytest.fixture
def api_client(tenant_key: str) -> APIClient:
    """A client application of tenant `acme`."""
    return client_with_key(tenant_key)


@pytest.fixture
def other_api_client(other_tenant_key: str) -> APIClient:
    """A client application of tenant `globex`."""
    return client_with_key(other_tenant_key)


@pytest.fixture
def admin_api_client(admin_key: str) -> APIClient:
    return client_with_key(admin_key)


@pytest.fixture
def conversation(tenant: Tenant) -> Conversation:
    return Conversation.objects.create(tenant=tenant, model=tenant.default_model, user_id="alice", title="Hello")


@pytest.fixture
def other_conversation(other_tenant: Tenant) -> Conversation:
    return Conversation.objects.create(tenant=other_tenant, model=other_tenant.default_model, user_id="bob")


def add_events(run: Run, items: list[tuple[str, dict[str, Any]]]) -> list[Event]:
    """Store events with the conversation's next seqs, straight through the ORM (no broadcast)."""
    conversation = run.conversation
    now = timezone.now()
    events = [
        Event(conversation=conversation, run=run, seq=conversation.last_seq + i, type=kind, data=data, created_at=now)
        for i, (kind, data) in enumerate(items, start=1)
    ]
    Event.objects.bulk_create(events)
    conversation.last_seq += len(events)
    conversation.save(update_fields=["last_seq"])
    return events


@pytest.fixture
def finished_run(conversation: Conversation) -> Run:
    """A completed run whose events cover every transcript line."""
    started = timezone.now() - timedelta(seconds=12)
    run = Run.objects.create(
        conversation=conversation,
        model=conversation.model,
        user_id="alice",
        input="List the files, please.",
        status=Run.Status.COMPLETED,
        started_at=started,
        finished_at=started + timedelta(seconds=9.5),
        worker="web-1:4242",
    )
    add_events(
        run,
        [
            ("run.queued", {"input": "List the files, please.", "user_id": "alice", "model": "offline"}),
            (
                "run.started",
                {"model": "offline", "model_display_name": "Offline model (not Claude)", "offline_model": True},
            ),
            ("message.delta", {"kind": "text", "text": "DELTA-ONLY-TOKEN"}),
            ("message", {"role": "assistant", "block": {"type": "thinking", "thinking": "The user wants a listing."}}),
            ("message", {"role": "assistant", "block": {"type": "text", "text": "Let me look at the workspace."}}),
            (
                "message",
                {
                    "role": "assistant",
                    "block": {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls -la"}},
                },
            ),
            ("tool.result", {"tool_use_id": "toolu_1", "content": "notes.txt", "is_error": False, "truncated": False}),
            ("usage", {"input_tokens": 120, "output_tokens": 30, "cache_read_tokens": 0, "cost_usd": "0.000000"}),
            ("run.completed", {"result": "done", "duration_ms": 9500}),
        ],
    )
    return run


@pytest.fixture
def running_run(conversation: Conversation) -> Run:
    """A queued run holding the conversation's lease, as `services.start_run` leaves it."""
    run = Run.objects.create(conversation=conversation, model=conversation.model, input="Still going?")
    conversation.active_run = run
    conversation.save(update_fields=["active_run"])
    add_events(run, [("run.queued", {"input": "Still going?", "user_id": "", "model": run.model_id})])
    return run
