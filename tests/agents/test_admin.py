"""The operator admin of agent profiles: the current version edited as a form and saved as the next version,
versions read-only with a rollback button, refusals on the field they name, and deletions through the service."""

import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from agents.models import AgentProfile, AgentVersion
from agents.services import default_profile, update_profile
from conversations.models import Conversation
from tenants.models import Tenant
from tests.agents.conftest import agent_rows, agents_untouched

pytestmark = pytest.mark.django_db

# The inline of versions is read-only: the change form posts its management form with no rows.
NO_VERSION_ROWS = {
    "versions-TOTAL_FORMS": "0",
    "versions-INITIAL_FORMS": "0",
    "versions-MIN_NUM_FORMS": "0",
    "versions-MAX_NUM_FORMS": "1000",
}


def url(name: str, *args: object) -> str:
    return reverse(f"admin:{name}", args=args)


def as_posted(form: Any, changes: dict[str, Any]) -> dict[str, Any]:
    """What a browser posts for `form` as rendered, with `changes` typed in (JSON fields as JSON text)."""
    data: dict[str, Any] = dict(NO_VERSION_ROWS)
    for name in form.fields:
        value = changes[name] if name in changes else form[name].value()
        if name in changes and isinstance(value, list | dict):
            value = json.dumps(value)
        if value is True:
            value = "on"
        if value not in (None, False, ""):
            data[name] = value
    return data


def change(client: Client, profile: AgentProfile, **changes: Any) -> Any:
    """Open the profile's change page, change `changes` and save."""
    page = client.get(url("agents_agentprofile_change", profile.pk))
    return client.post(
        url("agents_agentprofile_change", profile.pk), as_posted(page.context["adminform"].form, changes)
    )


def add(client: Client, **fields: Any) -> Any:
    page = client.get(url("agents_agentprofile_add"))
    return client.post(url("agents_agentprofile_add"), as_posted(page.context["adminform"].form, fields))


def form_errors(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 200, response.status_code
    return dict(response.context["adminform"].form.errors)


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


# --- Pages -------------------------------------------------------------------------------------------------


def test_changelist_add_and_change_pages_render(admin_client: Client, support: AgentProfile) -> None:
    update_profile(support, {"max_turns": 20})
    default = default_profile(support.tenant)

    for page in (
        url("agents_agentprofile_changelist"),
        url("agents_agentprofile_changelist") + f"?tenant__id__exact={support.tenant_id}&q=support",
        url("agents_agentprofile_changelist") + "?is_default__exact=1&current_version__kind__exact=agent",
        url("agents_agentprofile_add"),
        url("agents_agentprofile_change", support.pk),
        url("agents_agentprofile_change", default.pk),
        url("agents_agentprofile_delete", support.pk),
    ):
        assert admin_client.get(page).status_code == 200, page


def test_the_changelist_shows_version_kind_model_and_conversations(admin_client: Client, support: AgentProfile) -> None:
    update_profile(support, {"model": "offline"})
    Conversation.objects.create(tenant=support.tenant, agent=support)
    Conversation.objects.create(tenant=support.tenant, agent=support)

    response = admin_client.get(url("agents_agentprofile_changelist") + f"?tenant__id__exact={support.tenant_id}")

    admin = response.context["cl"].model_admin
    rows = {
        profile.name: (
            admin.version(profile),
            admin.version_kind(profile),
            admin.runs_on(profile),
            admin.conversation_count(profile),
        )
        for profile in response.context["cl"].result_list
    }
    assert rows == {
        "default": (2, "Agent (tools in a sandbox)", "tenant's default (offline)", 0),
        "support": (2, "Agent (tools in a sandbox)", "offline", 2),
    }


def test_the_tenant_page_links_to_its_agent_profiles(admin_client: Client, support: AgentProfile) -> None:
    page = admin_client.get(url("tenants_tenant_change", support.tenant_id)).content.decode()

    add_page = admin_client.get(url("tenants_tenant_add")).content.decode()

    link = url("agents_agentprofile_changelist") + f"?tenant__id__exact={support.tenant_id}"
    assert f'<a href="{link}">2 agent profiles</a>' in page
    assert "A new tenant gets its default agent profile on first use" in add_page


def test_the_change_form_shows_the_current_versions_fields(admin_client: Client, support: AgentProfile) -> None:
    form = admin_client.get(url("agents_agentprofile_change", support.pk)).context["adminform"].form

    assert form["instructions"].value() == "Answer from the docs."
    assert json.loads(form["allowed_tools"].value()) == ["Read", "Grep", "Bash(git *)"]
    assert form["max_turns"].value() == 8


# --- Saving: the next version -------------------------------------------------------------------------------


def test_an_operators_edit_makes_the_next_version_and_leaves_the_last_unchanged(
    admin_client: Client, support: AgentProfile
) -> None:
    first = AgentVersion.objects.values().get(profile=support, number=1)

    response = change(admin_client, support, instructions="Answer from the docs, briefly.", disallowed_tools=["Write"])

    assert response.status_code == 302, form_errors(response)
    assert AgentVersion.objects.values().get(profile=support, number=1) == first
    second = AgentVersion.objects.get(profile=support, number=2)
    assert (second.instructions, second.disallowed_tools, second.max_turns) == (
        "Answer from the docs, briefly.",
        ["Write"],
        8,
    )
    assert second.created_by == "operator:admin"
    support.refresh_from_db()
    assert support.current_version_id == second.pk
    assert "Stored version 2; it is now current." in messages_of(response)


def test_an_operator_sets_the_approval_timeout_and_busy_policy_as_the_next_version(
    admin_client: Client, support: AgentProfile
) -> None:
    page = admin_client.get(url("agents_agentprofile_change", support.pk)).content.decode()

    response = change(admin_client, support, approval_timeout_seconds=900, busy_policy="interrupt")

    assert "People in the loop" in page and 'name="approval_timeout_seconds"' in page and 'name="busy_policy"' in page
    assert response.status_code == 302, form_errors(response)
    second = AgentVersion.objects.get(profile=support, number=2)
    assert (second.approval_timeout_seconds, second.busy_policy) == (900, "interrupt")


def test_an_approval_timeout_out_of_bounds_is_an_error_on_its_field(
    admin_client: Client, support: AgentProfile
) -> None:
    rows = agent_rows()

    response = change(admin_client, support, approval_timeout_seconds=3)

    assert "approval_timeout_seconds" in form_errors(response)
    assert agent_rows() == rows


def test_saving_without_changes_makes_no_version_even_with_the_browsers_line_endings(
    admin_client: Client, support: AgentProfile
) -> None:
    update_profile(support, {"instructions": "Line one.\nLine two."})
    rows = agent_rows()

    response = change(admin_client, support, instructions="Line one.\r\nLine two.")

    assert response.status_code == 302, form_errors(response)
    assert agent_rows() == rows


def test_the_profiles_own_fields_change_in_place(admin_client: Client, support: AgentProfile) -> None:
    response = change(admin_client, support, description="Helps customers.", choosable=True)

    assert response.status_code == 302, form_errors(response)
    support.refresh_from_db()
    assert (support.description, support.choosable, support.versions.count()) == ("Helps customers.", True, 1)


def test_emptying_a_list_box_means_an_empty_list_and_emptying_skills_means_all(
    admin_client: Client, support: AgentProfile
) -> None:
    update_profile(support, {"mcp_servers": []})

    change(admin_client, support, allowed_tools="", mcp_servers="")

    version = AgentProfile.objects.get(pk=support.pk).current_version
    assert version is not None and (version.allowed_tools, version.mcp_servers) == ([], None)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("output_schema", {"type": "object", "properties": {"n": {"type": "count"}}}, "Does not compile"),
        ("allowed_tools", ["Read", "Shell"], "Unknown tool 'Shell'"),
        ("subagents", [{"name": "checker", "description": "Checks."}], "subagent 1: prompt is required"),
        ("skills", ["pdf"], "No enabled skill is named 'pdf'"),
        ("max_turns", "0", "greater than or equal to 1"),
        ("output_schema", "{not json", "Enter a valid JSON."),
    ],
)
def test_a_bad_version_is_an_error_on_its_field_and_stores_nothing(
    admin_client: Client, support: AgentProfile, field: str, value: Any, message: str
) -> None:
    with agents_untouched():
        response = change(admin_client, support, description="Changed too.", **{field: value})

    errors = form_errors(response)
    assert list(errors) == [field] and message in errors[field][0], errors


def test_the_default_profile_cannot_be_unmade_on_its_form(admin_client: Client, tenant: Tenant) -> None:
    default = default_profile(tenant)

    with agents_untouched():
        response = change(admin_client, default, is_default=False)

    assert "A tenant always has a default agent" in form_errors(response)["is_default"][0]


def test_making_a_profile_the_default_unmakes_the_other(admin_client: Client, support: AgentProfile) -> None:
    change(admin_client, support, is_default=True)

    assert list(AgentProfile.objects.filter(tenant=support.tenant, is_default=True)) == [support]


# --- Adding -------------------------------------------------------------------------------------------------


def test_adding_a_profile_stores_it_with_its_version_1(admin_client: Client, tenant: Tenant) -> None:
    response = add(
        admin_client,
        tenant=tenant.pk,
        name="analyst",
        kind="agent",
        prompt_scope="next_turn",
        instructions="Report.",
        output_schema={"type": "object"},
    )

    assert response.status_code == 302, form_errors(response)
    profile = AgentProfile.objects.get(tenant=tenant, name="analyst")
    assert profile.current_version is not None
    assert (profile.current_version.number, profile.current_version.output_schema) == (1, {"type": "object"})
    assert profile.current_version.created_by == "operator:admin"


def test_adding_a_bad_schema_is_a_form_error_and_stores_nothing(admin_client: Client, tenant: Tenant) -> None:
    default_profile(tenant)

    with agents_untouched():
        response = add(
            admin_client,
            tenant=tenant.pk,
            name="analyst",
            kind="agent",
            prompt_scope="next_turn",
            output_schema={"type": "object", "required": "total"},
        )

    assert "Does not compile" in form_errors(response)["output_schema"][0]


def test_adding_a_name_the_tenant_uses_is_an_error_on_the_name(admin_client: Client, support: AgentProfile) -> None:
    with agents_untouched():
        response = add(admin_client, tenant=support.tenant_id, name="support", kind="agent", prompt_scope="next_turn")

    assert "already has an agent named 'support'" in form_errors(response)["name"][0]


# --- Versions: make current -----------------------------------------------------------------------------------


def test_the_change_page_offers_make_current_for_the_other_versions(
    admin_client: Client, support: AgentProfile
) -> None:
    update_profile(support, {"max_turns": 20})

    page = admin_client.get(url("agents_agentprofile_change", support.pk)).content.decode()

    assert url("agents_agentprofile_make_current", support.pk, 1) in page
    assert url("agents_agentprofile_make_current", support.pk, 2) not in page


def test_make_current_by_post_rolls_back(admin_client: Client, support: AgentProfile) -> None:
    update_profile(support, {"max_turns": 20})

    response = admin_client.post(url("agents_agentprofile_make_current", support.pk, 1))

    assert response.status_code == 302 and response["Location"] == url("agents_agentprofile_change", support.pk)
    support.refresh_from_db()
    assert support.current_version is not None and support.current_version.number == 1
    assert "support: Made version 1 current." in messages_of(response)


def test_make_current_refuses_get_and_a_missing_version(admin_client: Client, support: AgentProfile) -> None:
    with agents_untouched():
        by_get = admin_client.get(url("agents_agentprofile_make_current", support.pk, 1))
        missing = admin_client.post(url("agents_agentprofile_make_current", support.pk, 9))

    assert (by_get.status_code, missing.status_code) == (405, 404)


def test_staff_who_may_only_view_profiles_see_them_but_cannot_make_current(
    client: Client, django_user_model: type[User], support: AgentProfile
) -> None:
    update_profile(support, {"max_turns": 20})
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_agentprofile"))
    client.force_login(viewer)

    page = client.get(url("agents_agentprofile_change", support.pk))
    with agents_untouched():
        make_current = client.post(url("agents_agentprofile_make_current", support.pk, 1))

    assert page.status_code == 200
    assert make_current.status_code == 403


# --- Deleting through the service --------------------------------------------------------------------------------


def test_deleting_a_profile_deletes_its_versions(admin_client: Client, support: AgentProfile) -> None:
    update_profile(support, {"max_turns": 20})

    response = admin_client.post(url("agents_agentprofile_delete", support.pk), {"post": "yes"})

    assert response.status_code == 302
    assert not AgentProfile.objects.filter(pk=support.pk).exists()
    assert not AgentVersion.objects.filter(profile_id=support.pk).exists()


@pytest.mark.parametrize("method", ["get", "post"])
def test_deleting_the_default_is_refused_with_a_message(admin_client: Client, tenant: Tenant, method: str) -> None:
    default = default_profile(tenant)

    with agents_untouched():
        response = getattr(admin_client, method)(url("agents_agentprofile_delete", default.pk), {"post": "yes"})

    assert response.status_code == 302 and response["Location"] == url("agents_agentprofile_change", default.pk)
    assert "The default agent cannot be deleted; make another one the default first." in messages_of(response)


def test_deleting_a_profile_in_use_is_refused_with_a_message(admin_client: Client, support: AgentProfile) -> None:
    Conversation.objects.create(tenant=support.tenant, agent=support)

    with agents_untouched():
        response = admin_client.post(url("agents_agentprofile_delete", support.pk), {"post": "yes"})

    assert response.status_code == 302
    assert "1 conversation(s) use agent 'support'" in messages_of(response)[0]


def test_the_changelist_offers_no_bulk_delete(admin_client: Client, support: AgentProfile) -> None:
    response = admin_client.get(url("agents_agentprofile_changelist"))

    assert response.status_code == 200
    assert 'value="delete_selected"' not in response.content.decode()
