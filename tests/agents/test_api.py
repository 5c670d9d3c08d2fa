"""Agent profiles over REST: made, changed version by version, rolled back and deleted by the tenant's
backend; read by its end users when choosable; refused with 400 naming the field when they could not run;
and another tenant's answering exactly like a missing one."""

from pathlib import Path
from typing import Any

import pytest
import yaml
from django.test import Client
from pytest_django.fixtures import DjangoAssertNumQueries, Settings
from rest_framework.test import APIClient

from agents.models import AgentProfile, AgentVersion
from agents.services import create_profile, default_profile, update_profile
from agents.spec import AgentSpec
from conversations.models import Conversation
from skills.archive import from_files
from skills.services import create_skill
from tenants.models import LanguageModel, Tenant
from tests.agents.conftest import agent_rows, agents_untouched
from tests.api.assertions import error_of
from tests.conftest import client_with_key
from tests.factories import LanguageModelFactory, McpServerFactory

pytestmark = pytest.mark.django_db

URL = "/api/tenants/acme/agents"

EVERY_FIELD: dict[str, Any] = {
    "name": "analyst",
    "description": "Reads the data and reports.",
    "choosable": True,
    "is_default": False,
    "kind": "agent",
    "instructions": "Report in JSON.",
    "prompt_scope": "new_conversations",
    "model": "sonnet",
    "fallback_model": "haiku",
    "effort": "high",
    "thinking_budget": 4000,
    "max_turns": 12,
    "run_budget_usd": "0.500000",
    "run_budget_calls": 40,
    "allowed_tools": ["Read", "Bash(python3 *)", "mcp__warehouse"],
    "disallowed_tools": ["WebFetch"],
    "permission_rules": [
        {"pattern": "Bash(rm *)", "action": "deny"},
        {"pattern": "Write(reports/**)", "action": "ask"},
    ],
    "approval_timeout_seconds": 600,
    "busy_policy": "queue",
    "skills": ["csv-report"],
    "mcp_servers": ["warehouse"],
    "egress_allowlist": ["api.github.com", "*.pypi.org:443", "10.1.0.0/16:5432"],
    "subagents": [
        {"name": "checker", "description": "Checks the figures.", "prompt": "Recompute each figure.", "tools": ["Read"]}
    ],
    "output_schema": {"type": "object", "properties": {"total": {"type": "number"}}, "required": ["total"]},
}


@pytest.fixture
def catalog(tenant: Tenant, sonnet: LanguageModel, settings: Settings, tmp_path: Path) -> None:
    """What EVERY_FIELD names: the sonnet model and its haiku fallback, a skill and an MCP server of acme's."""
    LanguageModelFactory(id="haiku", display_name="Claude Haiku 4.5", provider_model_id="claude-haiku-4-5")
    settings.MEDIA_ROOT = tmp_path / "media"
    skill_md = b"---\nname: csv-report\ndescription: Summarises CSV files.\n---\nBe brief.\n"
    create_skill(tenant, from_files([("SKILL.md", skill_md)]), "test")
    McpServerFactory(tenant=tenant, name="warehouse")


def end_user(tenant_key: str) -> APIClient:
    return client_with_key(tenant_key, user_id="alice")


# --- Creating and reading ---------------------------------------------------------------------------


def test_a_new_profile_takes_every_field_as_its_version_1(api_client: APIClient, catalog: None) -> None:
    response = api_client.post(URL, EVERY_FIELD, format="json")

    assert response.status_code == 201, response.content
    assert response.json() == {
        **EVERY_FIELD,
        "current_version": 1,
        "created_at": response.json()["created_at"],
        "updated_at": response.json()["updated_at"],
    }
    version = AgentVersion.objects.get(profile__name="analyst")
    assert (version.number, version.created_by, version.model_id) == (1, "api-key:acme key", "sonnet")
    assert version.subagents == EVERY_FIELD["subagents"]


def test_a_profile_given_only_a_name_takes_the_defaults(api_client: APIClient, tenant: Tenant) -> None:
    response = api_client.post(URL, {"name": "plain"}, format="json")

    body = response.json()
    assert response.status_code == 201
    assert (body["kind"], body["model"], body["allowed_tools"], body["skills"]) == ("agent", None, [], None)
    assert (body["is_default"], body["choosable"]) == (False, False)


def test_a_profile_reads_back_with_its_current_version_inline(api_client: APIClient, support: AgentProfile) -> None:
    update_profile(support, {"instructions": "Answer from the docs, briefly."})

    body = api_client.get(f"{URL}/support").json()

    assert (body["name"], body["current_version"]) == ("support", 2)
    assert body["instructions"] == "Answer from the docs, briefly."
    assert body["allowed_tools"] == ["Read", "Grep", "Bash(git *)"]


def test_the_list_shows_every_profile_by_name(api_client: APIClient, support: AgentProfile) -> None:
    response = api_client.get(URL)

    assert [(agent["name"], agent["is_default"]) for agent in response.json()] == [
        ("default", True),
        ("support", False),
    ]


def test_the_list_costs_the_same_queries_for_many_profiles(
    api_client: APIClient, tenant: Tenant, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    api_client.get(URL)  # the first request records the key's use
    # The key, the tenant, its default profile (made on first use), the profiles with their current versions.
    with django_assert_num_queries(4):
        few = api_client.get(URL)
    for n in range(10):
        create_profile(tenant, f"agent-{n}", AgentSpec(instructions=f"Agent {n}."))

    with django_assert_num_queries(4):
        many = api_client.get(URL)

    assert (len(few.json()), len(many.json())) == (1, 11)


def test_a_tenant_made_without_profiles_lists_its_default(admin_api_client: APIClient, offline_model: object) -> None:
    admin_api_client.post(
        "/api/tenants", {"id": "initech", "name": "Initech", "default_model": "offline"}, format="json"
    )

    listed = admin_api_client.get("/api/tenants/initech/agents").json()

    assert [(agent["name"], agent["is_default"], agent["current_version"]) for agent in listed] == [
        ("default", True, 1)
    ]


def test_a_name_the_tenant_uses_is_409_and_keeps_the_first(api_client: APIClient, support: AgentProfile) -> None:
    with agents_untouched():
        response = api_client.post(URL, {"name": "support", "instructions": "Another."}, format="json")

    assert error_of(response, 409)["code"] == "agent_exists"


# --- Changing: a new version ------------------------------------------------------------------------


def test_changing_a_version_field_makes_the_next_version_current_and_keeps_the_first(
    api_client: APIClient, support: AgentProfile
) -> None:
    first = AgentVersion.objects.values().get(profile=support, number=1)

    response = api_client.patch(f"{URL}/support", {"max_turns": 20, "disallowed_tools": ["Write"]}, format="json")

    assert response.status_code == 200
    assert (response.json()["current_version"], response.json()["max_turns"]) == (2, 20)
    assert AgentVersion.objects.values().get(profile=support, number=1) == first
    second = AgentVersion.objects.get(profile=support, number=2)
    assert (second.max_turns, second.disallowed_tools, second.instructions) == (20, ["Write"], "Answer from the docs.")
    assert second.created_by == "api-key:acme key"


def test_the_approval_timeout_and_busy_policy_are_version_fields(api_client: APIClient, support: AgentProfile) -> None:
    response = api_client.patch(
        f"{URL}/support", {"approval_timeout_seconds": 120, "busy_policy": "steer"}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["current_version"], body["approval_timeout_seconds"], body["busy_policy"]) == (2, 120, "steer")
    first, second = AgentVersion.objects.filter(profile=support).order_by("number")
    assert (first.approval_timeout_seconds, first.busy_policy) == (3600, "reject")
    assert (second.approval_timeout_seconds, second.busy_policy) == (120, "steer")


def test_changing_only_the_profiles_own_fields_makes_no_version(api_client: APIClient, support: AgentProfile) -> None:
    response = api_client.patch(f"{URL}/support", {"description": "Helps.", "choosable": True}, format="json")

    assert response.json()["current_version"] == 1
    assert support.versions.count() == 1
    support.refresh_from_db()
    assert (support.description, support.choosable) == ("Helps.", True)


def test_sending_the_current_values_again_makes_no_version(api_client: APIClient, support: AgentProfile) -> None:
    current = api_client.get(f"{URL}/support").json()
    unchanged = {name: current[name] for name in ("instructions", "allowed_tools", "max_turns", "skills", "kind")}

    response = api_client.patch(f"{URL}/support", unchanged, format="json")

    assert response.json()["current_version"] == 1
    assert support.versions.count() == 1


def test_a_profiles_name_cannot_change(api_client: APIClient, support: AgentProfile) -> None:
    with agents_untouched():
        response = api_client.patch(f"{URL}/support", {"name": "helpdesk"}, format="json")

    assert "name" in error_of(response, 400)["fields"]


def test_making_a_profile_the_default_unmakes_the_other(api_client: APIClient, support: AgentProfile) -> None:
    response = api_client.patch(f"{URL}/support", {"is_default": True}, format="json")

    assert response.json()["is_default"] is True
    assert list(AgentProfile.objects.filter(tenant_id="acme", is_default=True).values_list("name", flat=True)) == [
        "support"
    ]


def test_the_default_cannot_be_unmade_only_replaced(api_client: APIClient, support: AgentProfile) -> None:
    with agents_untouched():
        response = api_client.patch(f"{URL}/default", {"is_default": False}, format="json")

    assert error_of(response, 409)["code"] == "default_agent"


# --- Versions and rolling back ------------------------------------------------------------------------


def test_versions_list_newest_first_and_each_reads_as_it_was_made(api_client: APIClient, support: AgentProfile) -> None:
    update_profile(support, {"max_turns": 20}, created_by="operator:ops")

    listing = api_client.get(f"{URL}/support/versions").json()
    first = api_client.get(f"{URL}/support/versions/1").json()

    assert [(v["number"], v["current"], v["max_turns"], v["created_by"]) for v in listing] == [
        (2, True, 20, "operator:ops"),
        (1, False, 8, "test"),
    ]
    assert first == listing[1]


def test_make_current_rolls_back_and_forward(api_client: APIClient, support: AgentProfile) -> None:
    update_profile(support, {"max_turns": 20})

    back = api_client.post(f"{URL}/support/versions/1/make-current")
    forward = api_client.post(f"{URL}/support/versions/2/make-current")

    assert (back.json()["current_version"], back.json()["max_turns"]) == (1, 8)
    assert (forward.json()["current_version"], forward.json()["max_turns"]) == (2, 20)
    assert support.versions.count() == 2


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/support/versions/3"), ("post", "/support/versions/3/make-current"), ("get", "/nobody/versions")],
)
def test_a_missing_version_or_profile_is_404(
    api_client: APIClient, support: AgentProfile, method: str, path: str
) -> None:
    with agents_untouched():
        response = getattr(api_client, method)(f"{URL}{path}")

    assert error_of(response, 404)["code"] == "not_found"


# --- Deleting -------------------------------------------------------------------------------------------


def test_deleting_a_profile_deletes_its_versions_and_nothing_else(
    api_client: APIClient, support: AgentProfile, their_agent: AgentProfile
) -> None:
    update_profile(support, {"max_turns": 20})

    response = api_client.delete(f"{URL}/support")

    assert response.status_code == 204
    assert not AgentProfile.objects.filter(pk=support.pk).exists()
    assert not AgentVersion.objects.filter(profile_id=support.pk).exists()
    assert list(AgentProfile.objects.order_by("tenant", "name").values_list("tenant", "name")) == [
        ("acme", "default"),
        ("globex", "support"),
    ]


def test_the_default_profile_cannot_be_deleted(api_client: APIClient, tenant: Tenant) -> None:
    with agents_untouched():
        response = api_client.delete(f"{URL}/default")

    assert error_of(response, 409)["code"] == "default_agent"


def test_a_profile_that_conversations_use_cannot_be_deleted(api_client: APIClient, support: AgentProfile) -> None:
    Conversation.objects.create(tenant=support.tenant, agent=support)

    with agents_untouched():
        response = api_client.delete(f"{URL}/support")

    error = error_of(response, 409)
    assert error["code"] == "agent_in_use"
    assert "1 conversation(s) use agent 'support'" in error["message"]


# --- Bad profiles: 400 naming the field, nothing stored ----------------------------------------------------

BAD_PROFILES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "a schema that does not compile",
        {"output_schema": {"type": "object", "properties": {"total": {"type": "amount"}}}},
        "output_schema",
        "Does not compile at properties/total/type",
    ),
    ("a schema that is not an object", {"output_schema": {"type": "string"}}, "output_schema", '"type": "object"'),
    ("an unknown tool", {"allowed_tools": ["Read", "Shell"]}, "allowed_tools", "Unknown tool 'Shell'"),
    ("a pattern that does not parse", {"disallowed_tools": ["Bash(rm *"]}, "disallowed_tools", "Tool(specifier)"),
    ("a WebFetch pattern without a host", {"allowed_tools": ["WebFetch(example.com)"]}, "allowed_tools", "domain:"),
    (
        "a rule with an unknown action",
        {"permission_rules": [{"pattern": "Bash(rm *)", "action": "maybe"}]},
        "permission_rules",
        "action must be one of allow, ask, deny",
    ),
    ("a model not in the catalog", {"model": "gpt-4"}, "model", "'gpt-4' is not in the model catalog"),
    ("a deprecated model", {"fallback_model": "retired"}, "fallback_model", "'retired' is deprecated"),
    (
        "a subagent without a prompt",
        {"subagents": [{"name": "checker", "description": "Checks."}]},
        "subagents",
        "subagent 1: prompt is required",
    ),
    (
        "a subagent on an unknown model",
        {"subagents": [{"name": "checker", "description": "Checks.", "prompt": "Check.", "model": "gpt-4"}]},
        "subagents",
        "not in the model catalog",
    ),
    ("oversize instructions", {"instructions": "x" * 100_001}, "instructions", "no more than 100000 characters"),
    ("an unknown skill", {"skills": ["pdf"]}, "skills", "No enabled skill is named 'pdf'"),
    ("an unknown MCP server", {"mcp_servers": ["github"]}, "mcp_servers", "No MCP server is named 'github'"),
    ("a chat with tools", {"kind": "chat", "allowed_tools": ["Read"]}, "allowed_tools", "A chat agent has no tools"),
    (
        "a chat with structured output",
        {"kind": "chat", "allowed_tools": [], "output_schema": {"type": "object"}},
        "output_schema",
        "needs kind 'agent'",
    ),
    ("tools as a string", {"allowed_tools": "Read"}, "allowed_tools", "A list of strings"),
    ("zero turns", {"max_turns": 0}, "max_turns", "greater than or equal to 1"),
    ("a negative budget", {"run_budget_usd": "-1"}, "run_budget_usd", "greater than or equal to 0"),
    ("an unknown field", {"system_prompt": "Be brief."}, "system_prompt", "Unknown field"),
    ("a timeout too short", {"approval_timeout_seconds": 5}, "approval_timeout_seconds", "greater than or equal to 10"),
    ("a timeout past a week", {"approval_timeout_seconds": 604_801}, "approval_timeout_seconds", "less than or equal"),
    ("an unknown busy policy", {"busy_policy": "later"}, "busy_policy", "not a valid choice"),
]
BAD_IDS = [case[0] for case in BAD_PROFILES]


@pytest.mark.parametrize(("what", "fields", "field", "message"), BAD_PROFILES, ids=BAD_IDS)
def test_creating_a_bad_profile_is_400_naming_the_field_and_stores_nothing(
    api_client: APIClient,
    tenant: Tenant,
    retired_model: LanguageModel,
    what: str,
    fields: dict,
    field: str,
    message: str,
) -> None:
    default_profile(tenant)

    with agents_untouched():
        response = api_client.post(URL, {"name": "bad", **fields}, format="json")

    error = error_of(response, 400)
    assert list(error["fields"]) == [field], error
    assert message in str(error["fields"][field]), error


@pytest.mark.parametrize(("what", "fields", "field", "message"), BAD_PROFILES, ids=BAD_IDS)
def test_changing_a_profile_badly_is_400_naming_the_field_and_changes_nothing(
    api_client: APIClient,
    support: AgentProfile,
    retired_model: LanguageModel,
    what: str,
    fields: dict,
    field: str,
    message: str,
) -> None:
    with agents_untouched():
        # The good change in the same body is refused with the bad one.
        response = api_client.patch(f"{URL}/support", {"description": "Changed.", **fields}, format="json")

    error = error_of(response, 400)
    assert list(error["fields"]) == [field], error
    assert message in str(error["fields"][field]), error


def test_a_bad_name_is_400_naming_it(api_client: APIClient, tenant: Tenant) -> None:
    default_profile(tenant)

    with agents_untouched():
        response = api_client.post(URL, {"name": "Support Bot"}, format="json")

    assert "lowercase letters" in error_of(response, 400)["fields"]["name"][0]


# --- Tenancy: another tenant's profile answers like a missing one --------------------------------------------

PROFILE_ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("get", "", None),
    ("patch", "", {"instructions": "Mine now."}),
    ("delete", "", None),
    ("get", "/versions", None),
    ("get", "/versions/1", None),
    ("post", "/versions/1/make-current", None),
]
ENDPOINT_IDS = [f"{method} {suffix or '/'}" for method, suffix, _ in PROFILE_ENDPOINTS]


def call(client: Client, endpoint: tuple[str, str, dict[str, Any] | None], tenant_id: str, name: str) -> Any:
    method, suffix, body = endpoint
    path = f"/api/tenants/{tenant_id}/agents/{name}{suffix}"
    return client.get(path) if method == "get" else getattr(client, method)(path, body, format="json")


@pytest.mark.parametrize("endpoint", PROFILE_ENDPOINTS, ids=ENDPOINT_IDS)
def test_another_tenants_profile_named_under_my_url_is_the_same_404_as_a_missing_one(
    endpoint: tuple[str, str, dict[str, Any] | None], api_client: APIClient, their_agent: AgentProfile, tenant: Tenant
) -> None:
    default_profile(tenant)
    their_agent.name = "globex-only"
    their_agent.save()
    missing = call(api_client, endpoint, "acme", "nobody")

    with agents_untouched():
        response = call(api_client, endpoint, "acme", "globex-only")

    assert error_of(response, 404) == error_of(missing, 404)


@pytest.mark.parametrize("endpoint", PROFILE_ENDPOINTS, ids=ENDPOINT_IDS)
def test_my_key_on_another_tenants_url_is_404_and_changes_nothing(
    endpoint: tuple[str, str, dict[str, Any] | None], api_client: APIClient, their_agent: AgentProfile
) -> None:
    missing = call(api_client, endpoint, "acme", "nobody")

    with agents_untouched():
        response = call(api_client, endpoint, "globex", "support")

    assert error_of(response, 404) == error_of(missing, 404)


@pytest.mark.parametrize("endpoint", PROFILE_ENDPOINTS, ids=ENDPOINT_IDS)
def test_a_profile_of_the_same_name_in_another_tenant_is_never_the_one_reached(
    endpoint: tuple[str, str, dict[str, Any] | None],
    api_client: APIClient,
    support: AgentProfile,
    their_agent: AgentProfile,
) -> None:
    theirs = [*AgentProfile.objects.filter(pk=their_agent.pk).values(), *their_agent.versions.values()]

    call(api_client, endpoint, "acme", "support")

    assert [*AgentProfile.objects.filter(pk=their_agent.pk).values(), *their_agent.versions.values()] == theirs


def test_another_tenants_profiles_are_absent_from_my_list(
    api_client: APIClient, support: AgentProfile, their_agent: AgentProfile
) -> None:
    listed = api_client.get(URL).json()

    assert [agent["name"] for agent in listed] == ["default", "support"]
    assert "Globex's secret." not in str(listed)


def test_creating_a_profile_under_another_tenant_is_404_and_stores_nothing(
    api_client: APIClient, their_agent: AgentProfile
) -> None:
    with agents_untouched():
        response = api_client.post("/api/tenants/globex/agents", {"name": "mine"}, format="json")

    error_of(response, 404)


def test_an_admin_key_manages_any_tenants_profiles(admin_api_client: APIClient, their_agent: AgentProfile) -> None:
    created = admin_api_client.post("/api/tenants/globex/agents", {"name": "helper"}, format="json")
    changed = admin_api_client.patch("/api/tenants/globex/agents/support", {"max_turns": 3}, format="json")
    listed = admin_api_client.get("/api/tenants/globex/agents").json()

    assert created.status_code == 201
    assert (changed.json()["current_version"], changed.json()["max_turns"]) == (2, 3)
    assert [agent["name"] for agent in listed] == ["default", "helper", "support"]
    assert their_agent.versions.get(number=2).created_by == "api-key:platform admin"


# --- End users: the choosable profiles, read-only ---------------------------------------------------------


def test_an_end_user_lists_the_default_then_the_choosable_profiles(tenant_key: str, support: AgentProfile) -> None:
    create_profile(support.tenant, "chat", AgentSpec(kind="chat"), choosable=True)
    AgentProfile.objects.filter(name="default").update(choosable=False)  # what naming no agent gives, still

    listed = end_user(tenant_key).get(URL).json()

    assert [agent["name"] for agent in listed] == ["default", "chat"]  # not support


def test_an_end_user_reading_a_profile_they_cannot_choose_gets_the_404_of_a_missing_one(
    tenant_key: str, support: AgentProfile
) -> None:
    alice = end_user(tenant_key)

    hidden = alice.get(f"{URL}/support")
    missing = alice.get(f"{URL}/nobody")
    choosable = alice.get(f"{URL}/default")

    assert error_of(hidden, 404) == error_of(missing, 404)
    assert choosable.status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "", {"name": "mine"}),
        ("patch", "/default", {"instructions": "Obey me."}),
        ("delete", "/support", None),
        ("get", "/default/versions", None),
        ("get", "/default/versions/1", None),
        ("post", "/default/versions/1/make-current", None),
    ],
    ids=["create", "patch", "delete", "versions", "version", "make-current"],
)
def test_an_end_user_changes_nothing_and_sees_no_versions(
    tenant_key: str, support: AgentProfile, method: str, path: str, body: dict[str, Any] | None
) -> None:
    with agents_untouched():
        response = getattr(end_user(tenant_key), method)(f"{URL}{path}", body, format="json")

    assert "without X-User-ID" in error_of(response, 403)["message"]


def test_the_chat_pages_session_lists_the_choosable_profiles_and_changes_none(
    api_client: APIClient, support: AgentProfile
) -> None:
    link = api_client.post("/api/tenants/acme/chat-links", {"user_id": "alice"}, format="json").json()["url"]
    browser = Client()
    browser.get(link.removeprefix("http://testserver"))

    listed = browser.get(URL).json()
    with agents_untouched():
        changed = browser.patch(f"{URL}/default", {"instructions": "Obey me."}, "application/json")

    assert [agent["name"] for agent in listed] == ["default"]
    error_of(changed, 403)


def test_profiles_are_stored_exactly_once_per_request(api_client: APIClient, tenant: Tenant) -> None:
    default_profile(tenant)
    before = len(agent_rows())

    api_client.post(URL, {"name": "once", "instructions": "Hello."}, format="json")

    assert len(agent_rows()) == before + 2  # the profile and its version 1


# --- The OpenAPI schema ---------------------------------------------------------------------------------


def test_the_schema_documents_every_operation_field_and_error() -> None:
    schema = yaml.safe_load(Client().get("/api/schema/").content)
    base = "/api/tenants/{tenant}/agents/"

    operations = {
        f"{method} {path}": operation
        for path, item in schema["paths"].items()
        if path.startswith(base)
        for method, operation in item.items()
        if method in {"get", "post", "patch", "delete", "put"}
    }

    assert sorted(operations) == [
        f"delete {base}{{name}}/",
        f"get {base}",
        f"get {base}{{name}}/",
        f"get {base}{{name}}/versions/",
        f"get {base}{{name}}/versions/{{number}}/",
        f"patch {base}{{name}}/",
        f"post {base}",
        f"post {base}{{name}}/versions/{{number}}/make-current/",
    ]
    for name, operation in operations.items():
        assert operation["tags"] == ["agents"], name
        assert {"400", "401", "403", "404"} <= set(operation["responses"]), name
    assert "409" in operations[f"delete {base}{{name}}/"]["responses"]
    components = schema["components"]["schemas"]
    for component in ("Agent", "AgentWriteRequest", "PatchedAgentWriteRequest", "AgentVersion"):
        undocumented = [
            name for name, field in components[component]["properties"].items() if not field.get("description")
        ]
        assert undocumented == [], component
    assert components["AgentWriteRequest"]["required"] == ["name"]
    assert set(components["Agent"]["required"]) >= {"name", "current_version", "allowed_tools", "output_schema"}
