"""A tenant whose conversations use its agent profiles is deleted with all of them: a profile's hold on its
conversations (it cannot be deleted while they use it) does not outlive the tenant that owns both."""

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from agents.models import AgentProfile, AgentVersion
from agents.services import choose_agent
from conversations.events import finish_run
from conversations.models import Conversation, Run
from runs.services import RunOptions, create_conversation, start_run
from tenants.models import Tenant
from tenants.services import delete_tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def used_agents(support: AgentProfile, their_agent: AgentProfile) -> None:
    """acme's conversations on its default agent, on support, and pinned to support@1, each with a finished run."""
    tenant = support.tenant
    for agent in (None, "support", "support@1"):
        run = start_run(create_conversation(tenant, agent=agent), RunOptions("Hello"))
        finish_run(run.pk, Run.Status.COMPLETED)


def globex_rows() -> tuple[int, int, int]:
    return (
        AgentProfile.objects.filter(tenant_id="globex").count(),
        AgentVersion.objects.filter(profile__tenant_id="globex").count(),
        Conversation.objects.filter(tenant_id="globex").count(),
    )


def test_deleting_a_tenant_deletes_its_agents_and_the_conversations_that_use_them(used_agents: None) -> None:
    globex = globex_rows()

    delete_tenant(Tenant.objects.get(pk="acme"))

    assert not Tenant.objects.filter(pk="acme").exists()
    assert not AgentProfile.objects.filter(tenant_id="acme").exists()
    assert not Conversation.objects.filter(tenant_id="acme").exists()
    assert globex_rows() == globex


def test_an_admin_key_deletes_such_a_tenant_over_rest(used_agents: None, admin_api_client: APIClient) -> None:
    response = admin_api_client.delete("/api/tenants/acme")

    assert response.status_code == 204, response.content
    assert not Tenant.objects.filter(pk="acme").exists()


def test_an_operator_deletes_such_a_tenant_in_the_admin(used_agents: None, admin_client: Client) -> None:
    confirm = admin_client.get(reverse("admin:tenants_tenant_delete", args=["acme"]))
    response = admin_client.post(reverse("admin:tenants_tenant_delete", args=["acme"]), {"post": "yes"})

    assert "protected" not in confirm.content.decode().lower()
    assert response.status_code == 302
    assert not Tenant.objects.filter(pk="acme").exists()


def test_a_profile_a_conversation_uses_is_still_not_deleted_alone(support: AgentProfile) -> None:
    choice = choose_agent(support.tenant, "support@1")
    Conversation.objects.create(tenant=support.tenant, agent=choice.profile, agent_version=choice.pinned)

    with pytest.raises(Exception) as refusal:
        support.delete()

    assert type(refusal.value).__name__ == "RestrictedError"
    assert AgentProfile.objects.filter(pk=support.pk).exists()
