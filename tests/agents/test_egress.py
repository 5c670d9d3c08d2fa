"""An agent profile's egress allow-list, and the policy a run of it gets (`agents.services.egress_policy`)."""

import json
import logging
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from agents.models import AgentProfile
from agents.services import egress_policy, run_agent, update_profile
from conversations.models import Conversation, Run
from mcp_servers import vault
from tenants.models import Tenant

URL = "/api/tenants/acme/agents"
GITHUB = {"api.github.com": {"Authorization": "Bearer ${github_token}", "Accept": "application/vnd.github+json"}}


@pytest.fixture
def open_tenant(tenant: Tenant) -> Tenant:
    """acme, allowed GitHub's API (with a token header), PyPI, and its database network."""
    tenant.egress_allowlist = ["api.github.com", "*.pypi.org", "10.1.0.0/16:5432"]
    tenant.egress_headers = GITHUB
    tenant.save()
    return tenant


# --- Over REST ----------------------------------------------------------------------------------------------


def test_a_profile_narrows_the_tenants_list_as_a_new_version(api_client: APIClient, support: AgentProfile) -> None:
    response = api_client.patch(f"{URL}/support", {"egress_allowlist": ["api.github.com"]}, format="json")

    assert response.status_code == 200, response.content
    assert (response.json()["egress_allowlist"], response.json()["current_version"]) == (["api.github.com"], 2)
    assert support.versions.get(number=1).egress_allowlist is None


def test_a_new_profile_follows_the_tenants_list(api_client: APIClient, tenant: Tenant) -> None:
    response = api_client.post(URL, {"name": "plain"}, format="json")

    assert response.json()["egress_allowlist"] is None


@pytest.mark.parametrize(
    ("rules", "says"),
    [
        ("api.github.com", "egress_allowlist must be a list of rules"),
        (["api.github.com:0"], "'api.github.com:0' names port '0'"),
        (["localhost"], "'localhost' is neither a host name"),
        (["http://api.github.com"], "write its host alone (api.github.com)"),
    ],
)
def test_a_bad_rule_is_a_400_naming_it_and_stores_no_version(
    api_client: APIClient, support: AgentProfile, rules: Any, says: str
) -> None:
    response = api_client.patch(f"{URL}/support", {"egress_allowlist": rules}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert says in error["message"] and list(error["fields"]) == ["egress_allowlist"]
    assert support.versions.count() == 1


def test_a_chat_profile_has_no_sandbox_to_connect_from(api_client: APIClient, tenant: Tenant) -> None:
    response = api_client.post(
        URL, {"name": "talk", "kind": "chat", "egress_allowlist": ["x.example.com"]}, format="json"
    )

    assert response.status_code == 400
    assert "no sandbox" in response.json()["error"]["fields"]["egress_allowlist"][0]


def test_another_tenants_profile_is_404_to_change(
    other_api_client: APIClient, support: AgentProfile, their_agent: AgentProfile
) -> None:
    response = other_api_client.patch(
        "/api/tenants/acme/agents/support", {"egress_allowlist": ["api.github.com"]}, format="json"
    )

    assert response.status_code == 404
    assert support.versions.count() == 1


def test_the_version_summary_says_its_narrowing_only_when_it_has_one(support: AgentProfile) -> None:
    assert "egress_allowlist" not in support.current_version.summary()

    update_profile(support, {"egress_allowlist": []})

    assert support.current_version.summary()["egress_allowlist"] == []


# --- A run's policy ------------------------------------------------------------------------------------------


def test_the_policy_reveals_a_stored_secret_into_the_hosts_headers_and_nowhere_else(
    open_tenant: Tenant, support: AgentProfile, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.EGRESS_DENY = ["*.internal.example"]
    vault.store(open_tenant, "github_token", "ghp-not-a-real-token")

    with caplog.at_level(logging.DEBUG):
        policy = egress_policy(open_tenant, support.current_version)

    assert policy.headers_for("api.github.com") == {
        "Authorization": "Bearer ghp-not-a-real-token",
        "Accept": "application/vnd.github+json",
    }
    assert policy.unusable == {}
    assert [rule.text for rule in policy.deny] == ["*.internal.example"]
    assert policy.profile is None
    assert policy.refusal("api.github.com", 443, []) is None
    assert "ghp-not-a-real-token" not in str(policy.summary()) + caplog.text


def test_a_missing_secret_makes_its_host_unusable_saying_who_can_add_it(
    open_tenant: Tenant, support: AgentProfile
) -> None:
    policy = egress_policy(open_tenant, support.current_version)

    reason = policy.refusal("api.github.com", 443, [])
    assert reason is not None and "'github_token'" in reason and "PUT /api/tenants/acme/secrets/github_token" in reason
    assert policy.headers_for("api.github.com") == {}
    assert policy.refusal("files.pypi.org", 443, []) is None  # other hosts are unaffected


def test_another_tenants_secret_of_that_name_is_never_used(
    open_tenant: Tenant, other_tenant: Tenant, support: AgentProfile
) -> None:
    vault.store(other_tenant, "github_token", "globex-token")
    vault.store(None, "github_token", "platform-token")

    policy = egress_policy(open_tenant, support.current_version)

    assert "api.github.com" in policy.unusable
    assert "token" not in str(policy.headers)


def test_the_profile_narrows_the_policy_and_its_hosts_secrets_stay_unrevealed(
    open_tenant: Tenant, support: AgentProfile
) -> None:
    vault.store(open_tenant, "github_token", "ghp-not-a-real-token")
    update_profile(support, {"egress_allowlist": ["*.pypi.org", "evil.example.com"]})

    policy = egress_policy(open_tenant, support.current_version)

    assert policy.headers == {} and policy.unusable == {}
    assert policy.refusal("files.pypi.org", 443, []) is None
    assert "agent profile's" in (policy.refusal("api.github.com", 443, []) or "")
    assert "tenant's" in (policy.refusal("evil.example.com", 443, []) or "")


def test_a_tenant_that_allows_nothing_gets_a_closed_policy(tenant: Tenant, support: AgentProfile) -> None:
    policy = egress_policy(tenant, support.current_version)

    assert policy.closed and policy.headers == {}


def test_a_runs_agent_gives_its_policy(open_tenant: Tenant, support: AgentProfile) -> None:
    update_profile(support, {"egress_allowlist": ["api.github.com"]})
    conversation = Conversation.objects.create(tenant=open_tenant, agent=support)
    run = Run.objects.create(
        conversation=conversation, agent_version=support.current_version, model=open_tenant.default_model
    )

    policy = run_agent(run).egress_policy()

    assert [rule.text for rule in policy.profile or ()] == ["api.github.com"]
    assert "api.github.com" in policy.unusable


# --- Admin ------------------------------------------------------------------------------------------------


def test_the_change_page_edits_the_profiles_network_section(admin_client: Client, support: AgentProfile) -> None:
    change_url = reverse("admin:agents_agentprofile_change", args=[support.pk])
    page = admin_client.get(change_url)
    assert page.status_code == 200 and "Network" in page.content.decode()
    form = page.context["adminform"].form
    data: dict[str, Any] = {
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
        "versions-MIN_NUM_FORMS": "0",
        "versions-MAX_NUM_FORMS": "1000",
    }
    for name in form.fields:
        value = form[name].value()
        if value not in (None, False, ""):
            data[name] = json.dumps(value) if isinstance(value, list | dict) else value

    bad = admin_client.post(change_url, {**data, "egress_allowlist": '["a.example.com:99999"]'})
    good = admin_client.post(change_url, {**data, "egress_allowlist": '["api.github.com"]'})

    assert "names port" in str(bad.context["adminform"].form.errors["egress_allowlist"])
    assert good.status_code == 302
    support.refresh_from_db()
    assert support.current_version.egress_allowlist == ["api.github.com"]
