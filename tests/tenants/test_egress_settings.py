"""A tenant's egress allow-list and headers, over REST and in the admin."""

from typing import Any

import pytest
import yaml
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from mcp_servers import vault
from tenants.models import LanguageModel, Tenant

GITHUB = {"api.github.com": {"Authorization": "Bearer ${github_token}", "X-GitHub-Api-Version": "2022-11-28"}}


def patch(client: APIClient, tenant: Tenant, body: dict[str, Any]) -> Any:
    return client.patch(f"/api/tenants/{tenant.pk}", body, format="json")


def test_a_new_tenant_lets_nothing_out(admin_api_client: APIClient, offline_model: LanguageModel) -> None:
    response = admin_api_client.post(
        "/api/tenants", {"id": "initech", "name": "Initech", "default_model": offline_model.pk}, format="json"
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["egress_allowlist"], body["egress_header_names"], body["egress_warnings"]) == ([], {}, [])


def test_an_operator_allows_hosts_and_adds_headers_whose_values_are_never_shown(
    admin_api_client: APIClient, tenant: Tenant
) -> None:
    vault.store(tenant, "github_token", "ghp-not-a-real-token")

    response = patch(
        admin_api_client,
        tenant,
        {"egress_allowlist": ["API.github.com", "*.pypi.org", "10.1.0.0/16:5432"], "egress_headers": GITHUB},
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["egress_allowlist"] == ["API.github.com", "*.pypi.org", "10.1.0.0/16:5432"]
    assert body["egress_header_names"] == {"api.github.com": ["Authorization", "X-GitHub-Api-Version"]}
    assert body["egress_warnings"] == []
    assert "egress_headers" not in body and "Bearer" not in response.content.decode()
    tenant.refresh_from_db()
    assert tenant.egress_headers == GITHUB


def test_a_header_naming_a_secret_not_stored_yet_is_saved_with_a_warning_until_it_is(
    admin_api_client: APIClient, tenant: Tenant
) -> None:
    response = patch(admin_api_client, tenant, {"egress_allowlist": ["api.github.com"], "egress_headers": GITHUB})

    assert response.status_code == 200, response.content
    [warning] = response.json()["egress_warnings"]
    assert "'github_token' is not in the tenant's secrets" in warning
    assert "PUT /api/tenants/acme/secrets/github_token" in warning

    vault.store(tenant, "github_token", "ghp-not-a-real-token")
    assert admin_api_client.get(f"/api/tenants/{tenant.pk}").json()["egress_warnings"] == []


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"egress_allowlist": "api.github.com"}, "egress_allowlist", "must be a list of rules"),
        ({"egress_allowlist": ["github.com:99999"]}, "egress_allowlist", "'github.com:99999' names port"),
        ({"egress_allowlist": ["https://github.com/org"]}, "egress_allowlist", "write its host alone (github.com)"),
        ({"egress_allowlist": ["api.github.com"], "egress_headers": ["x"]}, "egress_headers", "host → header"),
        ({"egress_headers": GITHUB}, "egress_headers", "add 'api.github.com' to egress_allowlist"),
        (
            {"egress_allowlist": ["*.github.com"], "egress_headers": {"*.github.com": {"A": "b"}}},
            "egress_headers",
            "exact host name",
        ),
        (
            {"egress_allowlist": ["api.github.com:*"], "egress_headers": {"api.github.com:443": {"A": "b"}}},
            "egress_headers",
            "without wildcard or port",
        ),
        (
            {"egress_allowlist": ["api.github.com"], "egress_headers": {"api.github.com": {"Host": "evil"}}},
            "egress_headers",
            "the proxy's to set",
        ),
        (
            {
                "egress_allowlist": ["api.github.com"],
                "egress_headers": {"api.github.com": {"Proxy-Authorization": "x"}},
            },
            "egress_headers",
            "the proxy's to set",
        ),
        (
            {"egress_allowlist": ["api.github.com"], "egress_headers": {"api.github.com": {"Bad Name": "x"}}},
            "egress_headers",
            "is not a header name",
        ),
        (
            {"egress_allowlist": ["api.github.com"], "egress_headers": {"api.github.com": {"A": "x\r\nHost: evil"}}},
            "egress_headers",
            "line break",
        ),
        (
            {"egress_allowlist": ["api.github.com"], "egress_headers": {"api.github.com": {"A": "${bad name}"}}},
            "egress_headers",
            "write each secret as ${name}",
        ),
    ],
)
def test_bad_egress_settings_are_a_400_naming_what_to_fix_and_change_nothing(
    admin_api_client: APIClient, tenant: Tenant, body: dict[str, Any], field: str, says: str
) -> None:
    response = patch(admin_api_client, tenant, body)

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert says in error["message"] and list(error["fields"]) == [field]
    tenant.refresh_from_db()
    assert (tenant.egress_allowlist, tenant.egress_headers) == ([], {})


def test_narrowing_the_list_under_a_hosts_headers_is_refused(admin_api_client: APIClient, tenant: Tenant) -> None:
    patch(admin_api_client, tenant, {"egress_allowlist": ["api.github.com", "pypi.org"], "egress_headers": GITHUB})

    response = patch(admin_api_client, tenant, {"egress_allowlist": ["pypi.org"]})

    assert response.status_code == 400
    assert "'api.github.com' is not on the tenant's egress allow-list" in response.json()["error"]["message"]
    tenant.refresh_from_db()
    assert tenant.egress_allowlist == ["api.github.com", "pypi.org"]


def test_a_tenant_key_reads_its_own_settings_and_cannot_change_them(
    api_client: APIClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(egress_allowlist=["api.github.com"], egress_headers=GITHUB)

    own = api_client.get(f"/api/tenants/{tenant.pk}")
    changed = patch(api_client, tenant, {"egress_allowlist": ["*.example.com"]})
    theirs = patch(api_client, other_tenant, {"egress_allowlist": ["*.example.com"]})

    assert own.json()["egress_header_names"] == {"api.github.com": ["Authorization", "X-GitHub-Api-Version"]}
    assert changed.status_code == 403
    assert theirs.status_code in (403, 404)
    assert api_client.get(f"/api/tenants/{other_tenant.pk}").status_code == 404


def test_listing_tenants_reads_their_secrets_in_one_query_however_many(
    admin_api_client: APIClient, tenant: Tenant, make_tenant: Any
) -> None:
    Tenant.objects.update(egress_allowlist=["api.github.com"], egress_headers=GITHUB)
    admin_api_client.get("/api/tenants")  # the key's first use records it
    with CaptureQueriesContext(connection) as one:
        admin_api_client.get("/api/tenants")
    for name in ("globex", "initech"):
        make_tenant(name, egress_allowlist=["api.github.com"], egress_headers=GITHUB)

    with CaptureQueriesContext(connection) as three:
        response = admin_api_client.get("/api/tenants")

    assert len(three) == len(one), [q["sql"][:150] for q in three.captured_queries]
    assert [len(row["egress_warnings"]) for row in response.json()["results"]] == [1, 1, 1]


@pytest.mark.django_db
def test_the_schema_documents_the_egress_fields() -> None:
    schema = yaml.safe_load(Client().get("/api/schema/").content)

    schemas = schema["components"]["schemas"]
    read, write = schemas["Tenant"]["properties"], schemas["TenantRequest"]["properties"]
    assert read["egress_allowlist"]["example"][0] == "api.github.com"
    assert "egress_headers" not in read and "egress_header_names" in read and "egress_warnings" in read
    assert write["egress_headers"]["example"] == {"api.github.com": {"Authorization": "Bearer ${github_token}"}}


# --- Admin -------------------------------------------------------------------------------------------


def test_the_tenant_change_page_shows_the_network_fields(admin_client: Client, tenant: Tenant) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(egress_allowlist=["api.github.com"], egress_headers=GITHUB)

    page = admin_client.get(reverse("admin:tenants_tenant_change", args=[tenant.pk]))

    assert page.status_code == 200
    text = page.content.decode()
    assert "Network" in text and "egress_allowlist" in text and "is not in the tenant&#x27;s secrets" in text


def test_the_operator_saves_egress_settings_in_the_admin_and_a_bad_rule_is_a_form_error(
    admin_client: Client, tenant: Tenant
) -> None:
    page = admin_client.get(reverse("admin:tenants_tenant_change", args=[tenant.pk]))
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    data["chat_shows_cost"] = ""

    bad = admin_client.post(
        reverse("admin:tenants_tenant_change", args=[tenant.pk]),
        {**data, "egress_allowlist": '["github.com:99999"]', "egress_headers": "{}"},
    )
    good = admin_client.post(
        reverse("admin:tenants_tenant_change", args=[tenant.pk]),
        {**data, "egress_allowlist": '["api.github.com"]', "egress_headers": '{"API.github.com": {"A": "b"}}'},
    )

    assert "names port" in str(bad.context["adminform"].form.errors["egress_allowlist"])
    assert good.status_code == 302
    tenant.refresh_from_db()
    assert (tenant.egress_allowlist, tenant.egress_headers) == (["api.github.com"], {"api.github.com": {"A": "b"}})
