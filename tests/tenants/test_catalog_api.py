"""Admin keys manage models and tenants; the API refuses changes that would break either."""

import pytest
from rest_framework.test import APIClient

from tenants.models import LanguageModel, Tenant
from tests.api.assertions import error_of


@pytest.fixture
def deprecated_model(db: None) -> LanguageModel:
    return LanguageModel.objects.create(
        id="claude-2", display_name="Claude 2", provider="anthropic", provider_model_id="claude-2", status="deprecated"
    )


def test_a_models_id_cannot_change(admin_api_client: APIClient, offline_model: LanguageModel) -> None:
    response = admin_api_client.patch("/api/models/offline", {"id": "renamed"}, format="json")

    assert "id" in error_of(response, 400)["fields"]
    assert LanguageModel.objects.filter(pk="offline").exists()


def test_a_model_needs_a_slug_id_and_a_known_provider(admin_api_client: APIClient, db: None) -> None:
    response = admin_api_client.post(
        "/api/models",
        {"id": "Not A Slug", "display_name": "X", "provider": "openai", "provider_model_id": "x"},
        format="json",
    )

    assert {"id", "provider"} <= set(error_of(response, 400)["fields"])
    assert not LanguageModel.objects.exists()


def test_a_negative_price_is_refused(admin_api_client: APIClient, offline_model: LanguageModel) -> None:
    response = admin_api_client.patch("/api/models/offline", {"input_price": "-1"}, format="json")

    assert "input_price" in error_of(response, 400)["fields"]


def test_a_tenants_id_cannot_change(admin_api_client: APIClient, tenant: Tenant) -> None:
    response = admin_api_client.patch("/api/tenants/acme", {"id": "acme-2"}, format="json")

    assert "id" in error_of(response, 400)["fields"]


def test_a_new_tenant_cannot_default_to_a_deprecated_model(
    admin_api_client: APIClient, deprecated_model: LanguageModel
) -> None:
    response = admin_api_client.post(
        "/api/tenants", {"id": "initech", "name": "Initech", "default_model": "claude-2"}, format="json"
    )

    assert "choose an active model" in error_of(response, 400)["message"]
    assert not Tenant.objects.filter(pk="initech").exists()


def test_a_tenant_keeps_its_default_model_after_that_model_is_deprecated(
    admin_api_client: APIClient, tenant: Tenant
) -> None:
    LanguageModel.objects.filter(pk="offline").update(status="deprecated")

    response = admin_api_client.patch(
        "/api/tenants/acme", {"default_model": "offline", "name": "Acme Inc."}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["name"] == "Acme Inc."


def test_an_unknown_default_model_is_refused(admin_api_client: APIClient, tenant: Tenant) -> None:
    response = admin_api_client.patch("/api/tenants/acme", {"default_model": "gpt-4"}, format="json")

    assert "default_model" in error_of(response, 400)["fields"]


def test_the_catalog_filters_by_provider_and_status(
    admin_api_client: APIClient, offline_model: LanguageModel, deprecated_model: LanguageModel
) -> None:
    by_provider = admin_api_client.get("/api/models?provider=anthropic").json()["results"]
    by_status = admin_api_client.get("/api/models?status=active").json()["results"]

    assert [model["id"] for model in by_provider] == ["claude-2"]
    assert [model["id"] for model in by_status] == ["offline"]
