"""The operator admin of MCP servers and secrets: every setting checked as the API checks it, header values
and secret values written but never on a page, an empty field keeping what is stored.

No URL is ever dialed here: saving checks addresses without resolving or connecting (`no_dialing`)."""

from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import Settings

from mcp_servers import vault
from mcp_servers.models import McpServer, Secret
from tenants.models import Tenant
from tests.factories import McpServerFactory

pytestmark = pytest.mark.django_db

HEADER_VALUE = "literal-header-value"
SECRET_VALUE = "sk-admin-9d2e-secret"
CHECKBOXES = {"enabled", "all_tenants"}


@pytest.fixture(autouse=True)
def mcp_settings(settings: Settings) -> None:
    settings.MCP_STDIO_COMMANDS = {"time": "/usr/bin/true"}
    settings.EGRESS_ALLOWED_NETWORKS = []
    settings.SECRETS_KEYS = []


def url(name: str, *args: object) -> str:
    return reverse(f"admin:{name}", args=args)


def page(client: Client, name: str, *args: object) -> str:
    response = client.get(url(name, *args))
    assert response.status_code == 200
    return response.content.decode()


def viewer(django_user_model: type[User], permission: str) -> User:
    """Staff who may only view: Django shows such a user every field of the change form read-only."""
    user = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename=permission))
    return user


def form_errors(response: Any) -> dict[str, list[str]]:
    return response.context["adminform"].form.errors


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def posted(data: dict[str, Any]) -> dict[str, Any]:
    """What a browser posts: every text field, empty or not, and only the ticked checkboxes."""
    return {name: value for name, value in data.items() if not (name in CHECKBOXES and value == "")}


def add_server(client: Client, tenant: Tenant | None, **fields: Any) -> Any:
    text_fields = ["description", "allowed_tools", "url", "headers", "command", "args", "openapi_document", "base_url"]
    data = {**dict.fromkeys(text_fields, ""), "tenant": tenant.pk if tenant else "", "enabled": "on", **fields}
    return client.post(url("mcp_mcpserver_add"), posted(data))


def added_server(client: Client, tenant: Tenant | None, **fields: Any) -> McpServer:
    response = add_server(client, tenant, **fields)
    assert response.status_code == 302, form_errors(response)
    return McpServer.objects.get(tenant=tenant, name=fields["name"])


def http_server(client: Client, tenant: Tenant | None, **fields: Any) -> McpServer:
    return added_server(
        client,
        tenant,
        **{
            "name": "tools",
            "kind": "http",
            "url": "https://mcp.example.com/mcp",
            "headers": f"Authorization: Bearer {HEADER_VALUE}\nX-Token: ${{api_token}}",
            **fields,
        },
    )


def change_server(client: Client, server: McpServer, **fields: Any) -> Any:
    """Posts the change form as the operator leaves it (headers empty: kept), but `fields`."""
    data: dict[str, Any] = {
        "description": server.description,
        "enabled": "on" if server.enabled else "",
        "allowed_tools": "\n".join(server.allowed_tools),
        "url": server.url,
        "command": server.command,
        "args": "\n".join(server.args),
        "base_url": server.base_url,
        "headers": "",
    }
    if server.is_platform:
        data["all_tenants"] = "on" if server.all_tenants else ""
        data["granted_to"] = [tenant.pk for tenant in server.granted_to.all()]
    return client.post(
        url("mcp_mcpserver_change", server.pk),
        posted({**data, **fields}),
    )


# --- Pages ----------------------------------------------------------------------------------------


def test_changelists_add_and_change_pages_render(admin_client: Client, tenant: Tenant) -> None:
    server = http_server(admin_client, tenant)
    platform = added_server(admin_client, None, name="files", kind="builtin")
    secret = vault.store(tenant, "api_token", SECRET_VALUE)

    for address in (
        url("mcp_mcpserver_changelist"),
        url("mcp_mcpserver_changelist") + "?platform=yes&kind=builtin&enabled=1",
        url("mcp_mcpserver_changelist") + f"?tenant__id__exact={tenant.pk}&q=example",
        url("mcp_mcpserver_add"),
        url("mcp_mcpserver_change", server.pk),
        url("mcp_mcpserver_change", platform.pk),
        url("mcp_secret_changelist"),
        url("mcp_secret_changelist") + f"?tenant__id__exact={tenant.pk}&q=api",
        url("mcp_secret_add"),
        url("mcp_secret_change", secret.pk),
    ):
        assert admin_client.get(address).status_code == 200, address


def test_the_changelist_names_platform_servers_and_filters_them(admin_client: Client, tenant: Tenant) -> None:
    http_server(admin_client, tenant)
    added_server(admin_client, None, name="files", kind="builtin")

    everything = admin_client.get(url("mcp_mcpserver_changelist"))
    platform = admin_client.get(url("mcp_mcpserver_changelist") + "?platform=yes")

    admin = everything.context["cl"].model_admin
    assert sorted((s.name, admin.owner(s)) for s in everything.context["cl"].result_list) == [
        ("files", "platform"),
        ("tools", "Acme (acme)"),
    ]
    assert [s.name for s in platform.context["cl"].result_list] == ["files"]


# --- Servers: headers are written, never shown ----------------------------------------------------


def test_operator_adds_a_tenant_http_server_with_headers(admin_client: Client, tenant: Tenant) -> None:
    server = http_server(admin_client, tenant, allowed_tools="search\n\n  fetch  \n")

    assert (server.tenant_id, server.kind, server.url) == ("acme", "http", "https://mcp.example.com/mcp")
    assert server.headers == {"Authorization": f"Bearer {HEADER_VALUE}", "X-Token": "${api_token}"}
    assert server.allowed_tools == ["search", "fetch"]
    assert server.secret_names() == {"api_token"}


def test_header_values_are_on_neither_the_change_page_nor_the_changelist(admin_client: Client, tenant: Tenant) -> None:
    server = http_server(admin_client, tenant)

    change_page = page(admin_client, "mcp_mcpserver_change", server.pk)
    changelist = page(admin_client, "mcp_mcpserver_changelist")

    assert HEADER_VALUE not in change_page and HEADER_VALUE not in changelist
    assert "${api_token}" not in change_page
    assert "Set: Authorization, X-Token." in change_page


def test_saving_the_change_form_with_empty_headers_keeps_them(admin_client: Client, tenant: Tenant) -> None:
    server = http_server(admin_client, tenant)

    response = change_server(admin_client, server, description="Search tools", enabled="")

    assert response.status_code == 302, form_errors(response)
    server.refresh_from_db()
    assert (server.description, server.enabled) == ("Search tools", False)
    assert server.headers == {"Authorization": f"Bearer {HEADER_VALUE}", "X-Token": "${api_token}"}
    assert LogEntry.objects.latest("pk").get_change_message() == "Changed Description and Enabled."


def test_a_dash_removes_every_header(admin_client: Client, tenant: Tenant) -> None:
    server = http_server(admin_client, tenant)

    response = change_server(admin_client, server, headers=" - ")

    assert response.status_code == 302, form_errors(response)
    server.refresh_from_db()
    assert server.headers == {}


def test_header_lines_replace_every_stored_header(admin_client: Client, tenant: Tenant) -> None:
    server = http_server(admin_client, tenant)

    response = change_server(admin_client, server, headers="X-Api-Key: ${other_token}\r\n")

    assert response.status_code == 302, form_errors(response)
    server.refresh_from_db()
    assert server.headers == {"X-Api-Key": "${other_token}"}


def test_a_header_line_without_a_name_is_an_error_that_does_not_repeat_the_value(
    admin_client: Client, tenant: Tenant
) -> None:
    response = add_server(
        admin_client, tenant, name="tools", kind="http", url="https://mcp.example.com/mcp", headers=HEADER_VALUE
    )

    assert response.status_code == 200
    assert form_errors(response)["headers"] == ["Line 1: write `Name: value`, the name without spaces."]
    assert HEADER_VALUE not in response.content.decode()
    assert not McpServer.objects.exists()


def test_an_error_elsewhere_asks_for_the_headers_again_without_showing_them(
    admin_client: Client, tenant: Tenant
) -> None:
    response = add_server(admin_client, tenant, name="tools", kind="http", headers=f"Authorization: {HEADER_VALUE}")

    assert response.status_code == 200
    errors = form_errors(response)
    assert errors["url"] == ["A http server needs `url`."]
    assert errors["headers"] == ["Headers are never shown back: enter them again."]
    assert HEADER_VALUE not in response.content.decode()


def test_staff_who_may_only_view_servers_see_header_names_but_no_values(
    client: Client, admin_client: Client, django_user_model: type[User], tenant: Tenant
) -> None:
    server = http_server(admin_client, tenant)
    client.force_login(viewer(django_user_model, "view_mcpserver"))

    change_page = page(client, "mcp_mcpserver_change", server.pk)

    assert HEADER_VALUE not in change_page and "${api_token}" not in change_page
    assert "Authorization, X-Token" in change_page


# --- Servers: settings checked as the API checks them ---------------------------------------------


def test_a_metadata_address_is_a_form_error_and_nothing_is_stored_or_dialed(
    admin_client: Client, tenant: Tenant, no_dialing: list[object]
) -> None:
    response = add_server(admin_client, tenant, name="tools", kind="http", url="http://169.254.169.254/")

    assert response.status_code == 200
    assert "the link-local cloud metadata address" in form_errors(response)["url"][0]
    assert not McpServer.objects.exists()
    assert no_dialing == []


def test_a_stdio_command_that_is_not_allowed_is_a_form_error(admin_client: Client, tenant: Tenant) -> None:
    response = add_server(admin_client, tenant, name="shell", kind="stdio", command="bash", args="-c\nid")

    assert response.status_code == 200
    assert form_errors(response)["command"] == ["'bash' is not an allowed program. Allowed: time."]
    assert not McpServer.objects.exists()


def test_an_allowed_stdio_command_is_saved_with_its_arguments_one_a_line(admin_client: Client, tenant: Tenant) -> None:
    server = added_server(admin_client, tenant, name="clock", kind="stdio", command="time", args="--utc\r\n--iso\r\n")

    assert (server.command, server.args) == ("time", ["--utc", "--iso"])
    change_page = page(admin_client, "mcp_mcpserver_change", server.pk)
    assert 'name="url"' not in change_page and 'name="headers"' not in change_page  # a stdio server's fields only


def test_a_setting_the_kind_does_not_take_is_an_error_on_that_field(admin_client: Client, tenant: Tenant) -> None:
    response = add_server(admin_client, tenant, name="files", kind="builtin", url="https://mcp.example.com/mcp")

    assert response.status_code == 200
    assert form_errors(response)["url"] == ["A builtin server takes no `url`."]


def test_a_name_the_tenant_already_has_is_a_form_error(admin_client: Client, tenant: Tenant) -> None:
    http_server(admin_client, tenant)

    response = add_server(admin_client, tenant, name="tools", kind="builtin")

    assert response.status_code == 200
    assert form_errors(response)["name"] == ["Tenant 'acme' already has an MCP server named 'tools'."]
    assert McpServer.objects.count() == 1


def test_name_and_kind_cannot_change(admin_client: Client, tenant: Tenant) -> None:
    server = http_server(admin_client, tenant)

    response = change_server(admin_client, server, name="renamed", kind="sse", tenant="")

    assert response.status_code == 302, form_errors(response)
    server.refresh_from_db()
    assert (server.name, server.kind, server.tenant_id) == ("tools", "http", "acme")


def test_a_changed_url_is_checked_too(admin_client: Client, tenant: Tenant, no_dialing: list[object]) -> None:
    server = http_server(admin_client, tenant)

    response = change_server(admin_client, server, url="http://10.0.0.5/mcp")

    assert response.status_code == 200
    assert "a private address" in form_errors(response)["url"][0]
    assert "headers" not in form_errors(response)  # none entered, none to enter again
    server.refresh_from_db()
    assert server.url == "https://mcp.example.com/mcp"


# --- Servers: platform grants ---------------------------------------------------------------------


def test_operator_grants_a_platform_server_to_chosen_tenants(
    admin_client: Client, tenant: Tenant, other_tenant: Tenant
) -> None:
    server = added_server(admin_client, None, name="files", kind="builtin", granted_to=[tenant.pk])

    assert server.is_platform
    assert list(McpServer.objects.available_to(tenant)) == [server]
    assert not McpServer.objects.available_to(other_tenant).exists()


def test_a_tenants_own_server_is_granted_to_no_one(admin_client: Client, tenant: Tenant, other_tenant: Tenant) -> None:
    response = add_server(admin_client, tenant, name="files", kind="builtin", all_tenants="on")

    assert response.status_code == 200
    assert form_errors(response)["all_tenants"] == ["Only a platform server (Tenant empty) is granted to tenants."]
    assert not McpServer.objects.exists()


def test_only_platform_servers_offer_grants_on_their_change_page(admin_client: Client, tenant: Tenant) -> None:
    own = added_server(admin_client, tenant, name="files", kind="builtin")
    platform = added_server(admin_client, None, name="files", kind="builtin")

    own_form = admin_client.get(url("mcp_mcpserver_change", own.pk)).context["adminform"].form
    platform_form = admin_client.get(url("mcp_mcpserver_change", platform.pk)).context["adminform"].form

    assert not {"granted_to", "all_tenants"} & set(own_form.fields)
    assert {"granted_to", "all_tenants"} <= set(platform_form.fields)


# --- Secrets --------------------------------------------------------------------------------------


def test_operator_adds_a_secret_that_is_stored_encrypted(admin_client: Client, tenant: Tenant) -> None:
    response = admin_client.post(
        url("mcp_secret_add"), {"tenant": tenant.pk, "name": "api_token", "value": SECRET_VALUE}
    )

    assert response.status_code == 302, form_errors(response)
    secret = Secret.objects.get()
    assert (secret.tenant_id, secret.name) == ("acme", "api_token")
    assert SECRET_VALUE.encode() not in bytes(secret.encrypted)
    assert vault.reveal(secret) == SECRET_VALUE
    assert response["Location"] == url("mcp_secret_changelist")


def test_a_platform_secret_is_added_by_leaving_the_tenant_empty(admin_client: Client) -> None:
    response = admin_client.post(url("mcp_secret_add"), {"name": "shared", "value": SECRET_VALUE})

    assert response.status_code == 302, form_errors(response)
    secret = Secret.objects.get()
    assert secret.tenant_id is None and vault.reveal(secret) == SECRET_VALUE


def test_the_secret_value_is_on_neither_the_change_page_nor_the_changelist(
    admin_client: Client, tenant: Tenant
) -> None:
    admin_client.post(url("mcp_secret_add"), {"tenant": tenant.pk, "name": "api_token", "value": SECRET_VALUE})
    secret = Secret.objects.get()

    change_page = page(admin_client, "mcp_secret_change", secret.pk)
    changelist = page(admin_client, "mcp_secret_changelist")

    assert SECRET_VALUE not in change_page and SECRET_VALUE not in changelist
    assert 'name="value"' in change_page and "Leave empty to keep the current value." in change_page
    assert 'name="encrypted"' not in change_page and "Encrypted" not in change_page


def test_staff_who_may_only_view_secrets_see_no_value(
    client: Client, django_user_model: type[User], tenant: Tenant
) -> None:
    secret = vault.store(tenant, "api_token", SECRET_VALUE)
    client.force_login(viewer(django_user_model, "view_secret"))

    change_page = page(client, "mcp_secret_change", secret.pk)
    changelist = page(client, "mcp_secret_changelist")

    assert SECRET_VALUE not in change_page and SECRET_VALUE not in changelist
    assert "api_token" in change_page and "Value" not in change_page


def test_changing_a_secret_with_an_empty_value_keeps_it(admin_client: Client, tenant: Tenant) -> None:
    secret = vault.store(tenant, "api_token", SECRET_VALUE)

    response = admin_client.post(url("mcp_secret_change", secret.pk), {"value": ""})

    assert response.status_code == 302, form_errors(response)
    secret.refresh_from_db()
    assert vault.reveal(secret) == SECRET_VALUE


def test_changing_a_secret_with_a_value_replaces_it(admin_client: Client, tenant: Tenant) -> None:
    secret = vault.store(tenant, "api_token", SECRET_VALUE)

    response = admin_client.post(
        url("mcp_secret_change", secret.pk), {"value": "rotated-value", "name": "renamed", "tenant": ""}
    )

    assert response.status_code == 302, form_errors(response)
    stored = Secret.objects.get()
    assert (stored.pk, stored.tenant_id, stored.name) == (secret.pk, "acme", "api_token")
    assert vault.reveal(stored) == "rotated-value"
    assert "rotated-value" not in " ".join(messages_of(response))


def test_a_value_is_required_to_add_a_secret(admin_client: Client, tenant: Tenant) -> None:
    response = admin_client.post(url("mcp_secret_add"), {"tenant": tenant.pk, "name": "api_token"})

    assert response.status_code == 200
    assert "value" in form_errors(response)
    assert not Secret.objects.exists()


def test_a_name_headers_cannot_reference_is_refused(admin_client: Client, tenant: Tenant) -> None:
    response = admin_client.post(
        url("mcp_secret_add"), {"tenant": tenant.pk, "name": "api token", "value": SECRET_VALUE}
    )

    assert response.status_code == 200
    assert "headers name it as ${name}" in form_errors(response)["name"][0]
    assert SECRET_VALUE not in response.content.decode()
    assert not Secret.objects.exists()


def test_a_secret_name_the_tenant_already_has_is_a_form_error(admin_client: Client, tenant: Tenant) -> None:
    secret = vault.store(tenant, "api_token", SECRET_VALUE)

    response = admin_client.post(
        url("mcp_secret_add"), {"tenant": tenant.pk, "name": "api_token", "value": "another-value"}
    )

    assert response.status_code == 200
    assert form_errors(response)["name"] == [
        "Tenant 'acme' already has a secret named 'api_token'; change it to replace its value."
    ]
    secret.refresh_from_db()
    assert vault.reveal(secret) == SECRET_VALUE


def test_the_test_connection_action_lists_tools_or_says_why_not(admin_client: Client, tenant: Tenant) -> None:
    builtin = McpServerFactory(tenant=tenant, name="files", allowed_tools=["present_files"])
    stdio = McpServerFactory(tenant=tenant, name="local", kind="stdio", command="time")

    response = admin_client.post(
        url("mcp_mcpserver_changelist"),
        {"action": "test_connection", "_selected_action": [builtin.pk, stdio.pk]},
        follow=True,
    )

    said = messages_of(response)
    assert "files: connected; tools: present_files." in said
    assert any(
        message.startswith("local: failed: A stdio server starts only inside a run's sandbox") for message in said
    )
