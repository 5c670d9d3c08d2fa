"""Approvals over REST: list, read, allow or deny once, as whom; another tenant's or end user's is 404."""

from typing import Any
from uuid import UUID, uuid4

import pytest
from django.test import Client
from pytest_django import DjangoAssertNumQueries, DjangoCaptureOnCommitCallbacks
from rest_framework.test import APIClient

from agents.services import create_profile
from agents.spec import AgentSpec
from approvals.models import Approval, ToolGrant
from audit.models import AuditRecord
from conversations.models import Conversation, Event, Run
from tenants.models import ApiKey, Tenant
from tests.api.assertions import error_of
from tests.chat.test_chat_agents import session
from tests.conftest import client_with_key
from tests.factories import ApprovalFactory

pytestmark = pytest.mark.django_db

APPROVALS = "/api/tenants/acme/approvals"


def url(approval: Approval, tenant: str = "acme") -> str:
    return f"/api/tenants/{tenant}/approvals/{approval.pk}"


def decide(client: Client, approval: Approval, body: dict[str, Any], tenant: str = "acme", **headers: str) -> Any:
    return client.post(url(approval, tenant), body, format="json", **headers)


def snapshot(*approvals: Approval) -> list[dict[str, Any]]:
    """The approvals' rows as stored, their runs', and every decision event and audit record."""
    return [
        *[Approval.objects.values().get(pk=approval.pk) for approval in approvals],
        *[Run.objects.values().get(pk=approval.run_id) for approval in approvals],
        list(Event.objects.filter(type="permission.decision").values()),
        list(AuditRecord.objects.values()),
        list(ToolGrant.objects.values()),
    ]


# --- deciding -----------------------------------------------------------------------------------------


def test_allowing_answers_the_approval_decided_by_the_key_and_queues_the_waiting_run_again(
    api_client: APIClient,
    approval: Approval,
    dispatched: list[UUID],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    key = ApiKey.objects.get(tenant_id="acme")

    with django_capture_on_commit_callbacks(execute=True):
        response = decide(api_client, approval, {"decision": "allow"})

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "allowed"
    assert body["decided_by"] == {"kind": "api_key", "name": f"acme key ({key.prefix}…)"}
    assert body["decided_at"] and body["message"] == "" and body["updated_input"] is None and not body["remember"]
    assert Run.objects.get(pk=approval.run_id).status == Run.Status.QUEUED
    assert dispatched == [approval.run_id]  # on commit: a worker resumes it


def test_the_answer_has_every_field_of_the_contract(api_client: APIClient, approval: Approval) -> None:
    body = api_client.get(url(approval)).json()

    assert body == {
        "id": str(approval.pk),
        "conversation_id": str(approval.conversation_id),
        "run_id": str(approval.run_id),
        "user_id": "alice",
        "tool_use_id": approval.tool_use_id,
        "tool": "Bash",
        "input": {"command": "echo hi"},
        "title": "The agent wants to use Bash: echo hi",
        "display_name": "Bash",
        "description": "echo hi",
        "decision_reason": approval.decision_reason,
        "status": "pending",
        "requested_at": body["requested_at"],
        "expires_at": body["expires_at"],
        "message": "",
        "updated_input": None,
        "remember": False,
        "decided_by": None,
        "decided_at": None,
    }
    assert body["requested_at"] < body["expires_at"]


def test_denying_with_a_message_stores_it_for_the_model_in_the_decision_event(
    api_client: APIClient, approval: Approval, dispatched: list[UUID]
) -> None:
    response = decide(api_client, approval, {"decision": "deny", "message": "Not on Fridays."})

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["message"]) == ("denied", "Not on Fridays.")
    event = Event.objects.get(conversation_id=approval.conversation_id, type="permission.decision")
    assert event.run_id == approval.run_id
    assert event.data["approval_id"] == str(approval.pk)
    assert (event.data["decision"], event.data["message"]) == ("denied", "Not on Fridays.")
    assert event.data["decided_by"]["kind"] == "api_key"


def test_an_edited_input_is_stored_as_the_input_the_call_runs_with(api_client: APIClient, approval: Approval) -> None:
    response = decide(api_client, approval, {"decision": "allow", "updated_input": {"command": "echo hello"}})

    assert response.status_code == 200
    assert response.json()["updated_input"] == {"command": "echo hello"}
    assert response.json()["input"] == {"command": "echo hi"}  # what the agent asked stays on record
    event = Event.objects.get(type="permission.decision")
    assert event.data["updated_input"] == {"command": "echo hello"}


def test_remember_allows_the_tool_for_the_rest_of_the_conversation_only(
    api_client: APIClient, approval: Approval, bobs_approval: Approval
) -> None:
    response = decide(api_client, approval, {"decision": "allow", "remember": True})

    assert response.status_code == 200 and response.json()["remember"] is True
    grant = ToolGrant.objects.get()
    assert (grant.conversation_id, grant.tool, grant.approval_id) == (approval.conversation_id, "Bash", approval.pk)
    assert not ToolGrant.objects.filter(conversation_id=bobs_approval.conversation_id).exists()


def test_an_edited_input_the_agent_profile_refuses_is_400_and_the_approval_still_waits(
    api_client: APIClient, tenant: Tenant, waiting_run: Run
) -> None:
    profile = create_profile(
        tenant,
        "echoer",
        AgentSpec(allowed_tools=["Bash(echo *)"], permission_rules=[{"pattern": "Bash(echo *)", "action": "ask"}]),
    )
    Run.objects.filter(pk=waiting_run.pk).update(agent_version=profile.current_version)
    approval = ApprovalFactory(run=waiting_run)
    before = snapshot(approval)

    refused = decide(api_client, approval, {"decision": "allow", "updated_input": {"command": "rm -rf /workspace"}})
    after_refusal = snapshot(approval)
    allowed = decide(api_client, approval, {"decision": "allow", "updated_input": {"command": "echo bye"}})

    error = error_of(refused, 400)
    assert error["code"] == "input_refused"
    assert "allows only these tools: Bash(echo *)" in error["message"] and "updated_input" in error["fields"]
    assert after_refusal == before
    assert allowed.status_code == 200 and allowed.json()["updated_input"] == {"command": "echo bye"}


def test_a_second_decision_is_409_and_the_first_stands(api_client: APIClient, approval: Approval) -> None:
    first = decide(api_client, approval, {"decision": "allow"})
    after_first = snapshot(approval)

    second = decide(api_client, approval, {"decision": "deny", "message": "Changed my mind."})

    assert first.status_code == 200
    error = error_of(second, 409)
    assert error["code"] == "already_decided" and "allowed" in error["message"]
    assert snapshot(approval) == after_first


def test_an_expired_approval_cannot_be_decided(api_client: APIClient, approval: Approval) -> None:
    Approval.objects.filter(pk=approval.pk).update(status=Approval.Status.EXPIRED, decided_by_kind="system")

    response = decide(api_client, approval, {"decision": "allow"})

    assert error_of(response, 409)["code"] == "already_decided"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "decision"),
        ({"decision": "maybe"}, "decision"),
        ({"decision": True}, "decision"),
        ({"decision": "allow", "updated_input": ["echo", "hi"]}, "updated_input"),
        ({"decision": "allow", "updated_input": "echo hi"}, "updated_input"),
        ({"decision": "deny", "remember": True}, "remember"),
        ({"decision": "deny", "updated_input": {"command": "echo no"}}, "updated_input"),
        ({"decision": "allow", "remember": "yes"}, "remember"),
        ({"decision": "allow", "message": 42}, "message"),
        ({"decision": "allow", "message": "x" * 10_001}, "message"),
        ({"decision": "allow", "why": "because"}, "why"),
    ],
    ids=[
        "no-decision",
        "unknown-decision",
        "decision-not-text",
        "input-a-list",
        "input-a-string",
        "remember-with-deny",
        "edited-input-with-deny",
        "remember-not-a-boolean",
        "message-not-text",
        "message-too-long",
        "unknown-field",
    ],
)
def test_a_bad_body_is_400_naming_the_field_and_decides_nothing(
    api_client: APIClient, approval: Approval, body: dict[str, Any], field: str
) -> None:
    before = snapshot(approval)

    response = decide(api_client, approval, body)

    error = error_of(response, 400)
    assert field in error["fields"], error
    assert field in error["message"]
    assert snapshot(approval) == before


def test_a_body_that_is_not_json_is_refused(api_client: APIClient, approval: Approval) -> None:
    response = api_client.post(url(approval), "decision=allow", content_type="application/x-www-form-urlencoded")

    assert error_of(response, 415)
    assert Approval.objects.get(pk=approval.pk).is_pending


# --- who decides --------------------------------------------------------------------------------------


def test_a_key_acting_for_an_end_user_decides_as_the_key_for_that_user(tenant_key: str, approval: Approval) -> None:
    key = ApiKey.objects.get(tenant_id="acme")

    response = decide(client_with_key(tenant_key, user_id="alice"), approval, {"decision": "allow"})

    assert response.json()["decided_by"] == {"kind": "api_key", "name": f"acme key ({key.prefix}…) for alice"}
    assert tenant_key not in response.content.decode()  # the prefix, never the secret


def test_an_end_users_chat_session_decides_as_that_end_user(api_client: APIClient, approval: Approval) -> None:
    browser, csrf = session(api_client)

    response = browser.post(url(approval), {"decision": "deny"}, "application/json", **csrf)

    assert response.status_code == 200, response.content
    assert response.json()["decided_by"] == {"kind": "end_user", "name": "alice"}


def test_a_chat_session_write_without_the_csrf_token_is_refused(api_client: APIClient, approval: Approval) -> None:
    browser, _ = session(api_client)

    response = browser.post(url(approval), {"decision": "allow"}, "application/json")

    assert error_of(response, 403)
    assert Approval.objects.get(pk=approval.pk).is_pending


def test_an_admin_key_decides_in_any_tenant_as_itself(admin_key: str, approval: Approval) -> None:
    response = decide(client_with_key(admin_key), approval, {"decision": "allow"})

    assert response.status_code == 200
    assert response.json()["decided_by"]["name"].startswith("platform admin (ak_")


def test_the_audit_trail_names_the_decider(api_client: APIClient, approval: Approval) -> None:
    decide(api_client, approval, {"decision": "deny", "message": "No."})

    record = AuditRecord.objects.get()
    key = ApiKey.objects.get(tenant_id="acme")
    assert (record.tenant, record.actor_kind, record.actor) == ("acme", "api_key", f"acme key ({key.prefix}…)")
    assert (record.action, record.object_type, record.object_id) == ("approval.denied", "approval", str(approval.pk))
    assert record.data["run_id"] == str(approval.run_id) and record.data["message"] == "No."


# --- the run it wakes, and its neighbours ---------------------------------------------------------------


def test_a_decision_leaves_other_requests_and_runs_as_they_were(
    api_client: APIClient,
    approval: Approval,
    bobs_approval: Approval,
    their_approval: Approval,
    dispatched: list[UUID],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    neighbours = snapshot(bobs_approval, their_approval)

    with django_capture_on_commit_callbacks(execute=True):
        decide(api_client, approval, {"decision": "allow", "remember": True})

    assert snapshot(bobs_approval, their_approval)[:4] == neighbours[:4]
    assert dispatched == [approval.run_id]
    assert list(Event.objects.filter(type="permission.decision").values_list("conversation_id", flat=True)) == [
        approval.conversation_id
    ]


def test_a_run_still_waiting_on_another_request_stays_waiting(
    api_client: APIClient,
    waiting_run: Run,
    dispatched: list[UUID],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    first, second = ApprovalFactory(run=waiting_run), ApprovalFactory(run=waiting_run)

    with django_capture_on_commit_callbacks(execute=True):
        decide(api_client, first, {"decision": "allow"})

    assert Approval.objects.get(pk=second.pk).is_pending
    assert Run.objects.get(pk=waiting_run.pk).status == Run.Status.WAITING
    assert dispatched == []


def test_deciding_for_a_run_waiting_in_process_tells_its_worker_and_leaves_it_running(
    api_client: APIClient,
    waiting_run: Run,
    dispatched: list[UUID],
    signalled: list[tuple[UUID, dict[str, Any]]],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    Run.objects.filter(pk=waiting_run.pk).update(status=Run.Status.RUNNING, worker="worker-1:42")
    approval = ApprovalFactory(run=waiting_run)

    with django_capture_on_commit_callbacks(execute=True):
        decide(api_client, approval, {"decision": "allow"})

    assert signalled == [(waiting_run.pk, {"type": "run.decided"})]
    assert Run.objects.get(pk=waiting_run.pk).status == Run.Status.RUNNING
    assert dispatched == []


# --- tenancy and end users ------------------------------------------------------------------------------


def test_another_tenants_approval_is_404_like_a_missing_one_and_stays_undecided(
    api_client: APIClient, other_api_client: APIClient, approval: Approval, their_approval: Approval
) -> None:
    missing = Approval(pk=uuid4())
    before = snapshot(approval, their_approval)

    answers = [
        # globex's key, under its own URL and under acme's
        other_api_client.get(url(approval, "globex")),
        decide(other_api_client, approval, {"decision": "allow"}, tenant="globex"),
        other_api_client.get(url(approval)),
        decide(other_api_client, approval, {"decision": "allow"}),
        # acme's key naming globex's approval, under either URL
        api_client.get(url(their_approval)),
        decide(api_client, their_approval, {"decision": "allow"}),
        decide(api_client, their_approval, {"decision": "allow"}, tenant="globex"),
    ]

    expected = error_of(api_client.get(url(missing)), 404)
    assert error_of(decide(api_client, missing, {"decision": "allow"}), 404) == expected
    assert [error_of(answer, 404) for answer in answers] == [expected] * len(answers)
    assert snapshot(approval, their_approval) == before


def test_another_end_users_approval_is_404_to_a_key_acting_for_a_user_and_to_a_chat_session(
    api_client: APIClient, tenant_key: str, approval: Approval, bobs_approval: Approval
) -> None:
    as_alice = client_with_key(tenant_key, user_id="alice")
    browser, csrf = session(api_client)  # alice's chat session
    before = snapshot(bobs_approval)

    answers = [
        as_alice.get(url(bobs_approval)),
        decide(as_alice, bobs_approval, {"decision": "allow"}),
        browser.get(url(bobs_approval)),
        browser.post(url(bobs_approval), {"decision": "allow"}, "application/json", **csrf),
    ]

    expected = error_of(as_alice.get(url(Approval(pk=uuid4()))), 404)
    assert [error_of(answer, 404) for answer in answers] == [expected] * 4
    assert snapshot(bobs_approval) == before
    assert as_alice.get(url(approval)).status_code == 200


# --- lists ----------------------------------------------------------------------------------------------


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["results"]]


def test_the_pending_list_is_the_tenants_and_narrows_to_an_end_user(
    api_client: APIClient, tenant_key: str, approval: Approval, bobs_approval: Approval, their_approval: Approval
) -> None:
    decided = ApprovalFactory(run=approval.run, status=Approval.Status.DENIED, decided_by_kind="end_user")
    browser, _ = session(api_client)

    pending = ids(api_client.get(f"{APPROVALS}?status=pending"))
    every = ids(api_client.get(APPROVALS))
    alices = ids(client_with_key(tenant_key, user_id="alice").get(f"{APPROVALS}?status=pending"))
    in_session = ids(browser.get(APPROVALS))
    bobs = ids(client_with_key(tenant_key, user_id="bob").get(APPROVALS))

    assert set(pending) == {str(approval.pk), str(bobs_approval.pk)}
    assert set(every) == {str(approval.pk), str(bobs_approval.pk), str(decided.pk)}
    assert alices == [str(approval.pk)]
    assert set(in_session) == {str(approval.pk), str(decided.pk)}
    assert bobs == [str(bobs_approval.pk)]


def test_the_list_filters_by_conversation_run_user_and_tool(
    api_client: APIClient, approval: Approval, bobs_approval: Approval
) -> None:
    conversation, run = bobs_approval.conversation_id, bobs_approval.run_id

    assert ids(api_client.get(f"{APPROVALS}?conversation={conversation}")) == [str(bobs_approval.pk)]
    assert ids(api_client.get(f"{APPROVALS}?run={approval.run_id}")) == [str(approval.pk)]
    assert ids(api_client.get(f"{APPROVALS}?run={run}&user_id=alice")) == []
    assert ids(api_client.get(f"{APPROVALS}?tool=Read")) == []
    assert ids(api_client.get(f"{APPROVALS}?conversation={uuid4()}")) == []


def test_the_list_is_newest_first_and_paginated(api_client: APIClient, waiting_run: Run) -> None:
    made = [ApprovalFactory(run=waiting_run) for _ in range(3)]

    first = api_client.get(f"{APPROVALS}?limit=2").json()
    rest = api_client.get(f"{APPROVALS}?limit=2&offset=2").json()

    assert first["count"] == 3 and first["next"] and rest["next"] is None
    listed = [item["id"] for item in first["results"] + rest["results"]]
    assert listed == [str(approval.pk) for approval in reversed(made)]


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("status=maybe", "status"),
        ("conversation=not-a-uuid", "conversation"),
        ("run=42", "run"),
        ("state=pending", "state"),
        ("limit=0", "limit"),
    ],
)
def test_a_bad_list_parameter_is_400_naming_it(api_client: APIClient, query: str, name: str) -> None:
    error = error_of(api_client.get(f"{APPROVALS}?{query}"), 400)

    assert name in error["fields"], error


def test_listing_another_tenants_approvals_is_404(api_client: APIClient, their_approval: Approval) -> None:
    assert error_of(api_client.get("/api/tenants/globex/approvals"), 404)["code"] == "not_found"


def test_the_list_takes_the_same_queries_for_one_approval_or_many(
    api_client: APIClient, waiting_run: Run, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    ApprovalFactory(run=waiting_run)
    api_client.get(APPROVALS)  # the key's first use is recorded once

    with django_assert_num_queries(4):  # the key, the tenant, the count, the page
        one = api_client.get(APPROVALS)
    for _ in range(4):
        ApprovalFactory(run=waiting_run)
    with django_assert_num_queries(4):
        five = api_client.get(APPROVALS)

    assert len(ids(one)) == 1 and len(ids(five)) == 5


# --- the conversation's own log ---------------------------------------------------------------------------


def test_the_decision_lands_in_the_conversations_event_log_after_its_other_events(
    api_client: APIClient, conversation: Conversation, approval: Approval
) -> None:
    last_seq = Conversation.objects.get(pk=conversation.pk).last_seq

    decide(api_client, approval, {"decision": "allow"})

    events = api_client.get(f"/api/tenants/acme/conversations/{conversation.pk}/events?after={last_seq}").json()
    assert [event["type"] for event in events["events"]] == ["permission.decision"]
    assert events["events"][0]["data"]["approval_id"] == str(approval.pk)
