"""A tenant's MCP servers over REST: each kind saved with what it needs, every bad setting a 400 naming its
field, header values never shown, other tenants' servers out of sight, platform servers read-only; and a
conversation or message may only choose enabled servers it can see.

No URL is ever dialed here: saving checks addresses without resolving or connecting (`no_dialing`)."""

from typing import Any

import pytest
from django.test import Client
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from conversations.models import Conversation, Run
from mcp_servers import services, vault
from mcp_servers.models import McpServer
from tenants.models import Tenant
from tests.api.assertions import error_of, nothing_created
from tests.factories import McpServerFactory

pytestmark = pytest.mark.django_db

URL = "/api/tenants/acme/mcp-servers"
CONVERSATIONS = "/api/tenants/acme/conversations"
SECRET_HEADERS = {"Authorization": "Bearer ${api_token}", "X-Static": "literal-secret-value"}
RESOLVED_SECRET = "vault-held-token-value"
PING_API = {
    "openapi": "3.0.3",
    "info": {"title": "Ping", "version": "1.0"},
    "paths": {"/ping": {"get": {"operationId": "ping", "summary": "Answers pong"}}},
}


@pytest.fixture(autouse=True)
def stdio_commands(settings: Settings) -> None:
    settings.MCP_STDIO_COMMANDS = {"time": "/usr/bin/true"}
    settings.EGRESS_ALLOWED_NETWORKS = []


@pytest.fixture(autouse=True)
def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A message's run is handed to a worker once committed; here it only has to be stored."""
    monkeypatch.setattr("runs.services.dispatch_run", lambda run_id: None)


def create(client: APIClient, **body: object) -> Any:
    return client.post(URL, body, format="json")


def created(client: APIClient, **body: object) -> dict[str, Any]:
    response = create(client, **body)
    assert response.status_code == 201, response.content
    return response.json()


def http_server(client: APIClient, name: str = "tools", **fields: object) -> dict[str, Any]:
    return created(client, name=name, kind="http", url="https://mcp.example.com/mcp", **fields)


def platform_server(name: str, *, all_tenants: bool = False, granted_to: Tenant | None = None) -> McpServer:
    server = McpServerFactory(tenant=None, name=name, all_tenants=all_tenants)
    if granted_to is not None:
        server.granted_to.add(granted_to)
    return server


def names(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return [server["name"] for server in response.json()]


# --- Creating each kind ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "stored"),
    [
        (
            {"kind": "http", "url": "https://mcp.example.com/mcp", "allowed_tools": ["search"]},
            {"url": "https://mcp.example.com/mcp", "allowed_tools": ["search"]},
        ),
        ({"kind": "sse", "url": "https://mcp.example.com/sse"}, {"url": "https://mcp.example.com/sse"}),
        ({"kind": "stdio", "command": "time", "args": ["--utc"]}, {"command": "time", "args": ["--utc"]}),
        ({"kind": "builtin", "allowed_tools": ["list_files"]}, {"allowed_tools": ["list_files"]}),
        ({"kind": "builtin"}, {"allowed_tools": []}),
        (
            {"kind": "openapi", "openapi_document": PING_API, "base_url": "https://api.example.com/v1"},
            {"openapi_document": PING_API, "base_url": "https://api.example.com/v1"},
        ),
    ],
    # The ids avoid the word "openapi", which the usual `-k "not openapi"` run leaves out.
    ids=["http", "sse", "stdio", "builtin-narrowed", "builtin", "api-document"],
)
def test_each_kind_is_created_with_what_it_needs_without_dialing_anything(
    api_client: APIClient, tenant: Tenant, no_dialing: list[object], body: dict[str, Any], stored: dict[str, Any]
) -> None:
    server = created(api_client, name="tools", description="Our tools.", **body)

    assert {key: server[key] for key in stored} == stored
    assert (server["name"], server["kind"], server["enabled"], server["platform"]) == (
        "tools",
        body["kind"],
        True,
        False,
    )
    saved = McpServer.objects.get()
    assert (saved.tenant_id, saved.name, saved.kind, saved.description) == ("acme", "tools", body["kind"], "Our tools.")
    assert no_dialing == []


def test_list_retrieve_patch_and_delete(api_client: APIClient, tenant: Tenant) -> None:
    http_server(api_client, "web")
    created(api_client, name="files", kind="builtin")

    listed = names(api_client.get(URL))
    one = api_client.get(f"{URL}/web")
    changed = api_client.patch(
        f"{URL}/web",
        {"enabled": False, "url": "https://other.example.com/mcp", "allowed_tools": ["a", "b"]},
        format="json",
    )
    deleted = api_client.delete(f"{URL}/files")

    assert listed == ["files", "web"]
    assert one.status_code == 200 and one.json()["url"] == "https://mcp.example.com/mcp"
    assert changed.status_code == 200, changed.content
    assert (changed.json()["enabled"], changed.json()["url"], changed.json()["allowed_tools"]) == (
        False,
        "https://other.example.com/mcp",
        ["a", "b"],
    )
    assert deleted.status_code == 204
    assert names(api_client.get(URL)) == ["web"]
    assert api_client.get(f"{URL}/files").status_code == 404
    saved = McpServer.objects.get()
    assert (saved.enabled, saved.url) == (False, "https://other.example.com/mcp")


def test_header_values_are_never_shown_but_their_names_and_secrets_are(api_client: APIClient, tenant: Tenant) -> None:
    vault.store(tenant, "api_token", RESOLVED_SECRET)

    responses = [
        create(api_client, name="tools", kind="http", url="https://mcp.example.com/mcp", headers=SECRET_HEADERS)
    ]
    responses += [api_client.get(f"{URL}/tools"), api_client.get(URL)]
    responses.append(
        api_client.patch(
            f"{URL}/tools",
            {"headers": {**SECRET_HEADERS, "X-Other": "literal-secret-value, again"}},
            format="json",
        )
    )
    responses.append(api_client.patch(f"{URL}/tools", {"description": "Only the description."}, format="json"))

    assert [r.status_code for r in responses] == [201, 200, 200, 200, 200]
    for response in responses:
        assert b"literal-secret-value" not in response.content
        assert RESOLVED_SECRET.encode() not in response.content
        assert b"Bearer" not in response.content
    shown = [responses[0].json(), responses[1].json(), responses[2].json()[0]]
    for server in shown:
        assert "headers" not in server
        assert (server["header_names"], server["secrets"]) == (["Authorization", "X-Static"], ["api_token"])
    assert responses[3].json()["header_names"] == ["Authorization", "X-Other", "X-Static"]
    assert McpServer.objects.get().headers["X-Other"] == "literal-secret-value, again"  # stored, just never shown


# --- Refusals ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"kind": "http"}, "url", "A http server needs `url`."),
        ({"kind": "sse", "url": ""}, "url", "A sse server needs `url`."),
        (
            {"kind": "stdio", "command": "time", "url": "https://mcp.example.com/mcp"},
            "url",
            "A stdio server takes no `url`.",
        ),
        ({"kind": "builtin", "headers": {"X-A": "b"}}, "headers", "A builtin server takes no `headers`."),
        ({"kind": "http", "url": "http://169.254.169.254/"}, "url", "the link-local cloud metadata address"),
        ({"kind": "http", "url": "http://10.0.0.1/mcp"}, "url", "10.0.0.1 is a private address"),
        ({"kind": "http", "url": "http://127.0.0.1:9/mcp"}, "url", "127.0.0.1 is a loopback address"),
        ({"kind": "sse", "url": "http://2130706433/sse"}, "url", ""),  # the URLField refuses it first
        ({"kind": "http", "url": "ftp://mcp.example.com/mcp"}, "url", "not an http or https URL"),
        ({"kind": "http", "url": "https://user:pw@mcp.example.com/mcp"}, "url", "must not carry a user name"),
        ({"kind": "stdio", "command": "bash"}, "command", "'bash' is not an allowed program. Allowed: time."),
        ({"kind": "stdio"}, "command", "A stdio server needs `command`."),
        (
            {"kind": "builtin", "allowed_tools": ["list_files", "rm_rf"]},
            "allowed_tools",
            "No builtin tool is named 'rm_rf': list_files, present_files.",
        ),
        ({"kind": "api"}, "kind", ""),
        ({"kind": "openapi", "base_url": "https://api.example.com"}, "openapi_document", "needs `openapi_document`"),
        ({"kind": "openapi", "openapi_document": PING_API}, "base_url", "needs `base_url`"),
        (
            {"kind": "openapi", "openapi_document": PING_API, "base_url": "http://192.168.1.10/api"},
            "base_url",
            "192.168.1.10 is a private address",
        ),
    ],
    ids=[
        "http without url",
        "sse with empty url",
        "url for stdio",
        "headers for builtin",
        "cloud metadata",
        "private",
        "loopback",
        "numeric loopback",
        "ftp",
        "credentials in url",
        "command not allowed",
        "stdio without command",
        "unknown builtin tool",
        "unknown kind",
        "api-document without document",
        "api-document without base url",
        "api-document private base url",
    ],
)
def test_bad_settings_are_refused_naming_the_field_and_nothing_is_dialed(
    api_client: APIClient, tenant: Tenant, no_dialing: list[object], body: dict[str, Any], field: str, words: str
) -> None:
    response = create(api_client, name="tools", **body)

    error = error_of(response, 400)
    assert list(error["fields"]) == [field], error
    assert words in error["fields"][field][0], error
    assert not McpServer.objects.exists()
    assert no_dialing == []


def test_with_no_command_allowed_the_refusal_says_so(api_client: APIClient, settings: Settings, tenant: Tenant) -> None:
    settings.MCP_STDIO_COMMANDS = {}

    error = error_of(create(api_client, name="tools", kind="stdio", command="time"), 400)

    assert "Allowed: none (the operator sets MCP_STDIO_COMMANDS)" in error["fields"]["command"][0]


def test_an_operator_allowed_network_may_be_saved(api_client: APIClient, settings: Settings, tenant: Tenant) -> None:
    settings.EGRESS_ALLOWED_NETWORKS = ["10.0.0.0/8"]

    assert created(api_client, name="internal", kind="http", url="http://10.0.0.1/mcp")["url"] == "http://10.0.0.1/mcp"


@pytest.mark.parametrize("name", ["Bad Name", "UPPER", "-dash-first", "a" * 41, "dots.in.it", ""])
def test_a_bad_name_is_refused(api_client: APIClient, tenant: Tenant, name: str) -> None:
    error = error_of(create(api_client, name=name, kind="builtin"), 400)

    assert "name" in error["fields"]
    assert not McpServer.objects.exists()


def test_a_duplicate_name_is_refused_with_a_400(api_client: APIClient, tenant: Tenant) -> None:
    http_server(api_client, "tools")

    error = error_of(create(api_client, name="tools", kind="builtin"), 400)

    assert error["fields"] == {"name": ["The tenant already has an MCP server named 'tools'."]}
    assert McpServer.objects.get().kind == "http"


def test_another_tenant_may_use_the_same_name(
    api_client: APIClient, other_api_client: APIClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    http_server(api_client, "tools")

    response = other_api_client.post(
        "/api/tenants/globex/mcp-servers", {"name": "tools", "kind": "builtin"}, format="json"
    )

    assert response.status_code == 201, response.content
    assert sorted(McpServer.objects.values_list("tenant_id", "kind")) == [("acme", "http"), ("globex", "builtin")]


@pytest.mark.parametrize(
    ("body", "field"),
    [({"name": "renamed"}, "name"), ({"kind": "sse"}, "kind")],
)
def test_name_and_kind_cannot_change(api_client: APIClient, tenant: Tenant, body: dict[str, str], field: str) -> None:
    http_server(api_client, "tools")

    error = error_of(api_client.patch(f"{URL}/tools", body, format="json"), 400)

    assert "cannot change" in error["fields"][field][0]
    assert McpServer.objects.values_list("name", "kind").get() == ("tools", "http")


def test_a_patch_is_checked_against_the_servers_other_settings(
    api_client: APIClient, tenant: Tenant, no_dialing: list[object]
) -> None:
    http_server(api_client, "tools")
    created(api_client, name="clock", kind="stdio", command="time")

    private = api_client.patch(f"{URL}/tools", {"url": "http://10.1.2.3/mcp"}, format="json")
    emptied = api_client.patch(f"{URL}/tools", {"url": ""}, format="json")
    wrong_kind = api_client.patch(f"{URL}/clock", {"url": "https://mcp.example.com/mcp"}, format="json")
    same_name = api_client.patch(f"{URL}/tools", {"name": "tools", "enabled": False}, format="json")

    assert "10.1.2.3 is a private address" in error_of(private, 400)["fields"]["url"][0]
    assert error_of(emptied, 400)["fields"] == {"url": ["A http server needs `url`."]}
    assert error_of(wrong_kind, 400)["fields"] == {"url": ["A stdio server takes no `url`."]}
    assert same_name.status_code == 200 and same_name.json()["enabled"] is False
    assert McpServer.objects.get(name="tools").url == "https://mcp.example.com/mcp"
    assert no_dialing == []


def test_an_unknown_field_is_refused_and_platform_cannot_be_claimed(api_client: APIClient, tenant: Tenant) -> None:
    unknown = create(api_client, name="tools", kind="builtin", tenant="globex")
    claimed = create(api_client, name="tools", kind="builtin", platform=True, all_tenants=True)

    assert "Unknown field" in error_of(unknown, 400)["fields"]["tenant"][0]
    assert "Unknown field" in error_of(claimed, 400)["fields"]["all_tenants"][0]
    assert not McpServer.objects.exists()
    ignored = created(api_client, name="tools", kind="builtin", platform=True)  # read-only: ignored
    assert ignored["platform"] is False
    assert McpServer.objects.values_list("tenant_id", "all_tenants").get() == ("acme", False)


# --- Other tenants -------------------------------------------------------------------------------------


def test_another_tenants_servers_are_out_of_sight(
    api_client: APIClient, other_api_client: APIClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    http_server(api_client, "tools")
    theirs = "/api/tenants/globex/mcp-servers"

    responses = [
        other_api_client.get(f"{URL}/tools"),
        other_api_client.get(URL),
        other_api_client.patch(f"{URL}/tools", {"enabled": False}, format="json"),
        other_api_client.delete(f"{URL}/tools"),
        other_api_client.post(URL, {"name": "mine", "kind": "builtin"}, format="json"),
        other_api_client.get(f"{theirs}/tools"),
        other_api_client.patch(f"{theirs}/tools", {"enabled": False}, format="json"),
        other_api_client.delete(f"{theirs}/tools"),
    ]

    for response in responses:
        error_of(response, 404)
    assert names(other_api_client.get(theirs)) == []
    assert McpServer.objects.values_list("tenant_id", "name", "enabled").get() == ("acme", "tools", True)


# --- Platform servers ------------------------------------------------------------------------------------


def test_platform_servers_reach_the_tenants_they_are_granted_to_read_only(
    api_client: APIClient, other_api_client: APIClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    platform_server("everyone", all_tenants=True)
    platform_server("acme-only", granted_to=tenant)
    platform_server("nobody")
    http_server(api_client, "own")
    theirs = "/api/tenants/globex/mcp-servers"

    listed = api_client.get(URL).json()

    assert [(s["name"], s["platform"]) for s in listed] == [("acme-only", True), ("everyone", True), ("own", False)]
    assert names(other_api_client.get(theirs)) == ["everyone"]
    assert api_client.get(f"{URL}/acme-only").json()["platform"] is True
    error_of(other_api_client.get(f"{theirs}/acme-only"), 404)
    error_of(api_client.get(f"{URL}/nobody"), 404)
    for name in ("everyone", "acme-only"):
        patched = api_client.patch(f"{URL}/{name}", {"enabled": False}, format="json")
        deleted = api_client.delete(f"{URL}/{name}")
        assert "is a platform server" in error_of(patched, 403)["message"]
        assert "is a platform server" in error_of(deleted, 403)["message"]
    error_of(other_api_client.patch(f"{theirs}/acme-only", {"enabled": False}, format="json"), 404)
    error_of(other_api_client.delete(f"{theirs}/acme-only"), 404)
    assert McpServer.objects.filter(tenant=None, enabled=True).count() == 3


def test_a_tenants_own_server_wins_the_name_it_shares_with_a_platform_server(
    api_client: APIClient, other_api_client: APIClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    shared = platform_server("search", all_tenants=True)

    own = http_server(api_client, "search")
    listed = api_client.get(URL).json()
    one = api_client.get(f"{URL}/search").json()
    patched = api_client.patch(f"{URL}/search", {"description": "Ours."}, format="json")

    assert own["platform"] is False
    assert [(s["name"], s["kind"], s["platform"]) for s in listed] == [("search", "http", False)]
    assert (one["kind"], one["platform"]) == ("http", False)
    assert patched.status_code == 200 and patched.json()["description"] == "Ours."
    assert services.enabled_servers(tenant)["search"].tenant_id == "acme"
    assert services.enabled_servers(other_tenant)["search"].pk == shared.pk
    assert other_api_client.get("/api/tenants/globex/mcp-servers/search").json()["platform"] is True
    assert api_client.delete(f"{URL}/search").status_code == 204
    assert api_client.get(f"{URL}/search").json()["platform"] is True  # the platform's shows again
    assert McpServer.objects.filter(pk=shared.pk).exists()


# --- End users ------------------------------------------------------------------------------------------------


def test_an_end_users_chat_session_cannot_reach_servers_or_secrets(api_client: APIClient, tenant: Tenant) -> None:
    http_server(api_client, "tools")
    link = api_client.post("/api/tenants/acme/chat-links", {"user_id": "alice"}, format="json")
    assert link.status_code == 201, link.content
    browser = Client(enforce_csrf_checks=True)
    assert browser.get(link.json()["url"].removeprefix("http://testserver")).status_code == 302
    browser.get("/chat/")
    csrf = {"HTTP_X_CSRFTOKEN": browser.cookies["csrftoken"].value}

    refused = [
        browser.get(URL),
        browser.get(f"{URL}/tools"),
        browser.post(URL, {"name": "x", "kind": "builtin"}, "application/json", **csrf),
        browser.patch(f"{URL}/tools", {"enabled": False}, "application/json", **csrf),
        browser.delete(f"{URL}/tools", **csrf),
        browser.get("/api/tenants/acme/secrets"),
        browser.put("/api/tenants/acme/secrets/api_token", {"value": "x"}, "application/json", **csrf),
    ]

    for response in refused:
        assert "needs an API key" in error_of(response, 403)["message"]
    assert McpServer.objects.values_list("name", "enabled").get() == ("tools", True)
    assert not tenant.secrets.exists()


# --- Choosing servers for a conversation or a message -------------------------------------------------------


@pytest.fixture
def choosable(api_client: APIClient, tenant: Tenant, other_tenant: Tenant) -> None:
    """acme may choose `tools` and `everyone`; not `off` (disabled), `theirs` (globex's) or `nobody` (not granted)."""
    http_server(api_client, "tools")
    created(api_client, name="off", kind="builtin", enabled=False)
    McpServerFactory(tenant=other_tenant, name="theirs")
    platform_server("everyone", all_tenants=True)
    platform_server("nobody")


def messages(conversation: Conversation) -> str:
    return f"{CONVERSATIONS}/{conversation.pk}/messages"


@pytest.mark.parametrize("name", ["nope", "off", "theirs", "nobody"])
def test_a_conversation_choosing_a_server_it_cannot_use_is_refused_naming_the_choices(
    api_client: APIClient, choosable: None, name: str
) -> None:
    with nothing_created():
        response = api_client.post(CONVERSATIONS, {"mcp_servers": [name]}, format="json")

    error = error_of(response, 400)
    assert error["code"] == "unknown_mcp_server"
    assert f"No enabled MCP server is named {name!r}. Choose from: everyone, tools." == error["message"]


def test_a_conversation_keeps_the_servers_it_chose(api_client: APIClient, choosable: None) -> None:
    response = api_client.post(CONVERSATIONS, {"mcp_servers": ["tools", "everyone", "tools"]}, format="json")
    everything = api_client.post(CONVERSATIONS, {}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["mcp_servers"] == ["tools", "everyone"]
    assert Conversation.objects.get(pk=response.json()["id"]).mcp_servers == ["tools", "everyone"]
    assert everything.status_code == 201 and everything.json()["mcp_servers"] is None


def test_a_conversations_servers_change_only_to_usable_ones_and_back_to_all(
    api_client: APIClient, choosable: None, conversation: Conversation
) -> None:
    url = f"{CONVERSATIONS}/{conversation.pk}"

    chosen = api_client.patch(url, {"mcp_servers": ["everyone", "tools", "everyone"]}, format="json")
    refused = api_client.patch(url, {"mcp_servers": ["theirs"]}, format="json")

    assert chosen.status_code == 200, chosen.content
    assert chosen.json()["mcp_servers"] == ["everyone", "tools"]
    assert error_of(refused, 400)["code"] == "unknown_mcp_server"
    conversation.refresh_from_db()
    assert conversation.mcp_servers == ["everyone", "tools"]
    cleared = api_client.patch(url, {"mcp_servers": None}, format="json")
    assert cleared.status_code == 200 and cleared.json()["mcp_servers"] is None
    conversation.refresh_from_db()
    assert conversation.mcp_servers is None


def test_with_no_server_the_choices_are_none(api_client: APIClient, tenant: Tenant) -> None:
    error = error_of(api_client.post(CONVERSATIONS, {"mcp_servers": ["nope"]}, format="json"), 400)

    assert error["message"].endswith("Choose from: none.")


def test_a_message_choosing_an_unknown_server_is_refused_and_starts_no_run(
    api_client: APIClient, choosable: None, conversation: Conversation
) -> None:
    with nothing_created():
        response = api_client.post(messages(conversation), {"text": "hi", "mcp_servers": ["nope"]}, format="json")

    error = error_of(response, 400)
    assert error["code"] == "unknown_mcp_server"
    assert "'nope'" in error["message"] and "Choose from: everyone, tools." in error["message"]
    conversation.refresh_from_db()
    assert conversation.active_run_id is None


def test_a_message_narrows_the_servers_of_its_run(
    api_client: APIClient, choosable: None, conversation: Conversation
) -> None:
    response = api_client.post(messages(conversation), {"text": "hi", "mcp_servers": ["everyone"]}, format="json")

    assert response.status_code == 202, response.content
    run = Run.objects.get()
    assert run.mcp_servers == ["everyone"]
    assert [s.name for s in services.run_servers(conversation.tenant, None, run.mcp_servers)] == ["everyone"]
    assert [s.name for s in services.run_servers(conversation.tenant, None, None)] == ["everyone", "tools"]
    assert [s.name for s in services.run_servers(conversation.tenant, ["tools"], None)] == ["tools"]
    assert services.run_servers(conversation.tenant, ["tools"], []) == []
