"""The agents' workflows: versions numbered and never changed, a change only when something changed, rolling
back, choosing an agent (pinned or current), the default made once, and deletions refused while needed."""

from decimal import Decimal

import pytest

from agents.models import AgentProfile, AgentVersion
from agents.services import (
    add_version,
    choose_agent,
    create_profile,
    default_profile,
    delete_profile,
    make_current,
    run_version,
    update_profile,
)
from agents.spec import AgentSpec, check_spec
from api.errors import Conflict, ServiceError
from conversations.models import Conversation
from runs.services import RunOptions, start_run
from tenants.models import Tenant
from tests.agents.conftest import agent_rows, agents_untouched
from tests.factories import LanguageModelFactory

pytestmark = pytest.mark.django_db


# --- Versions ---------------------------------------------------------------------------------------------


def test_a_new_profile_has_version_1_current(tenant: Tenant) -> None:
    profile = create_profile(tenant, "helper", AgentSpec(instructions="Help."), created_by="operator:ann")

    version = profile.current_version
    assert version is not None
    assert (version.number, version.instructions, version.created_by) == (1, "Help.", "operator:ann")


def test_each_change_is_the_next_number_and_the_earlier_versions_stay_as_they_were(support: AgentProfile) -> None:
    first = AgentVersion.objects.values().get(profile=support, number=1)

    update_profile(support, {"max_turns": 20})
    update_profile(support, {"instructions": "Answer briefly.", "effort": "low"})

    assert list(support.versions.values_list("number", "max_turns", "instructions", "effort")) == [
        (3, 20, "Answer briefly.", "low"),
        (2, 20, "Answer from the docs.", ""),
        (1, 8, "Answer from the docs.", ""),
    ]
    assert AgentVersion.objects.values().get(profile=support, number=1) == first
    support.refresh_from_db()
    assert support.current_version is not None and support.current_version.number == 3


def test_a_change_to_nothing_makes_no_version(support: AgentProfile) -> None:
    update_profile(support, {"max_turns": 8, "allowed_tools": ["Read", "Grep", "Bash(git *)"]})
    update_profile(support, {}, description="Answers customers, politely.")

    assert support.versions.count() == 1
    assert support.description == "Answers customers, politely."


def test_a_change_to_nothing_leaves_the_profile_as_it_was(support: AgentProfile) -> None:
    rows = agent_rows()

    update_profile(support, {"max_turns": 8}, description=support.description, choosable=False, is_default=False)

    assert agent_rows() == rows  # updated_at included


def test_a_budget_written_differently_is_the_same_budget(tenant: Tenant) -> None:
    profile = create_profile(tenant, "thrifty", AgentSpec(run_budget_usd=Decimal("0.5")))

    update_profile(profile, {"run_budget_usd": Decimal("0.500000")})

    assert profile.versions.count() == 1


def test_a_version_can_be_added_without_becoming_current(support: AgentProfile) -> None:
    draft = add_version(support, AgentSpec(instructions="A draft."), make_current=False)

    support.refresh_from_db()
    assert (draft.number, support.current_version_id) == (2, support.versions.get(number=1).pk)


def test_make_current_points_at_an_older_version_and_back(support: AgentProfile) -> None:
    update_profile(support, {"max_turns": 20})

    make_current(support, 1)
    rolled_back = AgentProfile.objects.get(pk=support.pk).current_version
    make_current(support, 2)

    assert rolled_back is not None and rolled_back.max_turns == 8
    support.refresh_from_db()
    assert support.current_version is not None and support.current_version.max_turns == 20
    assert support.versions.count() == 2


def test_make_current_of_a_missing_version_is_404(support: AgentProfile) -> None:
    with pytest.raises(ServiceError) as refusal:
        make_current(support, 5)

    assert (refusal.value.status, refusal.value.message) == (404, "Agent 'support' has no version 5.")


def test_a_refused_change_stores_nothing_not_even_the_profiles_own_fields(support: AgentProfile) -> None:
    with agents_untouched(), pytest.raises(ServiceError) as refusal:
        update_profile(support, {"allowed_tools": ["Shell"]}, description="Changed.", choosable=True)

    assert refusal.value.fields is not None and list(refusal.value.fields) == ["allowed_tools"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_turns", 0, "greater than or equal to 1"),
        ("thinking_budget", 200_000, "less than or equal to 128000"),
        ("run_budget_usd", Decimal("-0.01"), "greater than or equal to 0"),
        ("run_budget_usd", Decimal("0.0000001"), "no more than 6 decimal places"),
        ("run_budget_calls", 2**31, "less than or equal to 2147483647"),
    ],
)
def test_numbers_out_of_their_columns_bounds_are_refused_naming_the_field(
    tenant: Tenant, field: str, value: object, message: str
) -> None:
    with pytest.raises(ServiceError) as refusal:
        check_spec(tenant, AgentSpec().changed({field: value}))

    assert refusal.value.fields == {field: [refusal.value.fields[field][0]]}  # type: ignore[index]
    assert message in refusal.value.message


def test_an_unknown_field_is_refused(tenant: Tenant) -> None:
    with pytest.raises(ServiceError, match=r"Unknown agent fields: system_prompt\."):
        AgentSpec().changed({"system_prompt": "Be brief."})


def test_a_taken_name_is_a_conflict(support: AgentProfile) -> None:
    with agents_untouched(), pytest.raises(Conflict) as refusal:
        create_profile(support.tenant, "support", AgentSpec())

    assert refusal.value.code == "agent_exists"


# --- Choosing an agent ---------------------------------------------------------------------------------------


def test_a_name_follows_the_current_version(support: AgentProfile) -> None:
    choice = choose_agent(support.tenant, "support")
    update_profile(support, {"max_turns": 20})

    assert choice.pinned is None
    assert AgentProfile.objects.get(pk=support.pk).current_version.number == 2  # type: ignore[union-attr]


def test_name_at_version_pins_that_version(support: AgentProfile) -> None:
    update_profile(support, {"max_turns": 20})
    update_profile(support, {"max_turns": 30})

    choice = choose_agent(support.tenant, "support@2")

    assert choice.pinned is not None and (choice.pinned.number, choice.version.max_turns) == (2, 20)


def test_a_pinned_conversation_keeps_its_version_when_the_profile_changes(support: AgentProfile) -> None:
    choice = choose_agent(support.tenant, "support@1")
    conversation = Conversation.objects.create(tenant=support.tenant, agent=choice.profile, agent_version=choice.pinned)
    following = Conversation.objects.create(tenant=support.tenant, agent=support)

    update_profile(support, {"max_turns": 20})

    assert run_version(conversation).number == 1
    assert run_version(following).number == 2
    assert run_version(conversation, "support").number == 2  # a message may name the agent for itself


def test_no_reference_is_the_tenants_default(tenant: Tenant) -> None:
    assert choose_agent(tenant, None).profile == choose_agent(tenant, "").profile == default_profile(tenant)


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("helpdesk", "agent: No agent is named 'helpdesk'. Choose one of: default, support."),
        ("support@two", "agent: Write name@version with a version number, such as support@1."),
        ("support@7", "agent: Agent 'support' has no version 7."),
    ],
)
def test_an_unknown_reference_is_refused_listing_the_choices(
    support: AgentProfile, their_agent: AgentProfile, reference: str, message: str
) -> None:
    with pytest.raises(ServiceError) as refusal:
        choose_agent(support.tenant, reference)

    assert (refusal.value.status, refusal.value.code, refusal.value.message) == (400, "unknown_agent", message)
    assert refusal.value.fields == {"agent": [message.removeprefix("agent: ")]}


def test_another_tenants_agent_is_unknown_by_name(tenant: Tenant, other_tenant: Tenant) -> None:
    create_profile(other_tenant, "globex-analyst", AgentSpec())

    with pytest.raises(ServiceError) as refusal:
        choose_agent(tenant, "globex-analyst")

    assert "globex-analyst" not in refusal.value.message.split("Choose one of:")[1]


# --- The default profile -------------------------------------------------------------------------------------


def test_the_default_profile_is_made_once_and_then_found(tenant: Tenant) -> None:
    first = default_profile(tenant)
    rows = agent_rows()

    again = default_profile(tenant)

    assert again == first and agent_rows() == rows
    assert (first.name, first.is_default, first.choosable) == ("default", True, True)


def test_a_tenant_without_profiles_gets_its_default_on_first_use(make_tenant: object) -> None:
    tenant = Tenant.objects.create(id="initech", name="Initech", default_model_id="offline")

    profile = default_profile(tenant)

    assert AgentProfile.objects.filter(tenant=tenant).get() == profile
    assert profile.current_version is not None and profile.current_version.number == 1


def test_a_profile_named_default_becomes_the_default_rather_than_a_clash(make_tenant: object) -> None:
    tenant = Tenant.objects.create(id="initech", name="Initech", default_model_id="offline")
    named = create_profile(tenant, "default", AgentSpec(instructions="Mine."))

    profile = default_profile(tenant)

    assert profile.pk == named.pk and profile.is_default


def test_making_another_profile_the_default_leaves_exactly_one(support: AgentProfile) -> None:
    update_profile(support, {}, is_default=True)

    assert list(AgentProfile.objects.filter(tenant=support.tenant, is_default=True)) == [support]


def test_the_default_cannot_be_unmade_only_replaced(tenant: Tenant) -> None:
    with agents_untouched(), pytest.raises(Conflict):
        update_profile(default_profile(tenant), {}, is_default=False)


# --- Deleting ----------------------------------------------------------------------------------------------


def test_deleting_a_profile_takes_its_versions_and_leaves_the_others(
    support: AgentProfile, their_agent: AgentProfile
) -> None:
    update_profile(support, {"max_turns": 20})
    default = default_profile(support.tenant)
    others = list(AgentVersion.objects.exclude(profile=support).values())

    delete_profile(support)

    assert list(AgentProfile.objects.order_by("pk")) == sorted([default, their_agent], key=lambda p: p.pk)
    assert not AgentVersion.objects.filter(profile_id=support.pk).exists()
    assert list(AgentVersion.objects.values()) == others


def test_the_default_profile_is_not_deleted(tenant: Tenant) -> None:
    with agents_untouched(), pytest.raises(Conflict) as refusal:
        delete_profile(default_profile(tenant))

    assert refusal.value.code == "default_agent"


def test_a_profile_in_use_is_not_deleted(support: AgentProfile) -> None:
    Conversation.objects.create(tenant=support.tenant, agent=support)

    with agents_untouched(), pytest.raises(Conflict) as refusal:
        delete_profile(support)

    assert refusal.value.code == "agent_in_use"


def test_a_profile_that_only_runs_used_is_deleted_and_the_runs_keep_their_events(support: AgentProfile) -> None:
    conversation = Conversation.objects.create(tenant=support.tenant)  # the default agent's
    run = start_run(conversation, RunOptions("Hello", agent="support"))  # this message's agent only

    delete_profile(support)

    run.refresh_from_db()
    assert run.agent_version is None
    assert run.events.get(type="run.queued").data["agent"] == {"name": "support", "version": 1, "kind": "agent"}


def test_a_fallback_or_subagent_model_of_another_provider_is_refused_naming_the_field(tenant: Tenant) -> None:
    LanguageModelFactory(id="bedrock-haiku", provider="bedrock", provider_model_id="anthropic.claude-haiku")
    subagent = {"name": "researcher", "description": "Looks up.", "prompt": "Research.", "model": "bedrock-haiku"}

    with pytest.raises(ServiceError) as fallback:
        create_profile(tenant, "mixed", AgentSpec(fallback_model="bedrock-haiku"))
    with pytest.raises(ServiceError) as sub:
        create_profile(tenant, "mixed", AgentSpec(subagents=[subagent]))

    assert fallback.value.fields is not None and "fallback_model" in fallback.value.fields
    assert "same provider" in fallback.value.message
    assert sub.value.fields is not None and "subagents" in sub.value.fields
    assert not AgentProfile.objects.filter(name="mixed").exists()
