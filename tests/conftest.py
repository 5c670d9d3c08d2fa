"""Actors and data shared by the whole suite: tenants, their keys, and API clients that use them."""

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from conversations.models import Conversation
from tenants.models import ApiKey, LanguageModel, Tenant
from tenants.services import ensure_offline_model
from tests.factories import SONNET_PRICES


@pytest.fixture(autouse=True)
def no_reaper_thread_in_the_test_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a broker the ASGI application starts a reaper thread in its process. In the test
    process it would outlive its test, touch the database between tests, and reap or dispatch the
    runs of the end-to-end platforms, which have reapers of their own."""
    monkeypatch.setattr("runs.dispatch.start_reaper_thread", lambda: None)
    monkeypatch.setattr("config.asgi.start_reaper_thread", lambda: None)


@pytest.fixture
def offline_model(db: None) -> LanguageModel:
    return ensure_offline_model()


@pytest.fixture
def sonnet(db: None) -> LanguageModel:
    """Claude Sonnet 4.5 at its list prices, read back so prices are the Decimals the database returns."""
    LanguageModel.objects.create(
        id="sonnet",
        display_name="Claude Sonnet 4.5",
        provider=LanguageModel.Provider.ANTHROPIC,
        provider_model_id="claude-sonnet-4-5",
        **SONNET_PRICES,
    )
    return LanguageModel.objects.get(pk="sonnet")


@pytest.fixture
def make_tenant(offline_model: LanguageModel) -> Callable[..., Tenant]:
    def make(tenant_id: str, **fields: object) -> Tenant:
        return Tenant.objects.create(id=tenant_id, name=tenant_id.title(), default_model=offline_model, **fields)

    return make


@pytest.fixture
def tenant(make_tenant: Callable[..., Tenant]) -> Tenant:
    return make_tenant("acme", system_prompt="You help Acme's customers.")


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
