"""The operator admin of approvals: read-only rows, decided (selected in the list, or one on its page) through
runs.services as the operator, and only by staff with the permission to change approvals."""

from typing import Any
from uuid import UUID

import pytest
from django.contrib.admin.sites import site
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.test import Client, RequestFactory
from django.urls import reverse
from pytest_django import DjangoCaptureOnCommitCallbacks

from approvals.models import Approval, Question, ToolGrant
from audit.models import AuditRecord
from conversations.models import Event, Run
from tests.factories import ApprovalFactory

pytestmark = pytest.mark.django_db


def url(name: str, *args: object) -> str:
    return reverse(f"admin:{name}", args=args)


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def run_action(client: Client, action: str, *approvals: Approval) -> Any:
    return client.post(
        url("approvals_approval_changelist"),
        {"action": action, "_selected_action": [str(approval.pk) for approval in approvals]},
    )


@pytest.fixture
def viewer(client: Client) -> Client:
    """Staff who may look at approvals, not decide them."""
    user = User.objects.create_user("vera", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_approval", "view_question"]))
    client.force_login(user)
    return client


# --- pages --------------------------------------------------------------------------------------------


def test_the_pages_render_and_nothing_is_added_changed_or_deleted_by_hand(
    admin_client: Client, rf: RequestFactory, admin_user: User, approval: Approval, question: Question
) -> None:
    ToolGrant.objects.create(conversation_id=approval.conversation_id, tool="Bash", approval=approval)

    for page in (
        url("approvals_approval_changelist"),
        url("approvals_approval_changelist")
        + f"?status__exact=pending&tool=Bash&tenant__id__exact=acme&q={approval.pk}",
        url("approvals_approval_changelist") + "?q=echo",
        url("approvals_approval_change", approval.pk),
        url("approvals_question_changelist"),
        url("approvals_question_changelist") + f"?q={question.conversation_id}",
        url("approvals_question_change", question.pk),
        url("approvals_toolgrant_changelist"),
    ):
        assert admin_client.get(page).status_code == 200, page
    assert admin_client.get(url("approvals_approval_add")).status_code == 403
    request = rf.get("/")
    request.user = admin_user
    for model in (Approval, Question, ToolGrant):
        model_admin = site._registry[model]
        assert not model_admin.has_add_permission(request), model
        assert not model_admin.has_change_permission(request), model
        assert not model_admin.has_delete_permission(request), model


def test_the_list_searches_and_filters(admin_client: Client, approval: Approval, bobs_approval: Approval) -> None:
    Approval.objects.filter(pk=bobs_approval.pk).update(status=Approval.Status.DENIED, tool="Write")

    pending = admin_client.get(url("approvals_approval_changelist") + "?status__exact=pending")
    writes = admin_client.get(url("approvals_approval_changelist") + "?tool=Write")
    by_run = admin_client.get(url("approvals_approval_changelist") + f"?q={approval.run_id}")

    assert [row.pk for row in pending.context["cl"].result_list] == [approval.pk]
    assert [row.pk for row in writes.context["cl"].result_list] == [bobs_approval.pk]
    assert [row.pk for row in by_run.context["cl"].result_list] == [approval.pk]


def test_a_pending_approvals_page_offers_allow_and_deny_and_a_decided_ones_does_not(
    admin_client: Client, approval: Approval, bobs_approval: Approval
) -> None:
    Approval.objects.filter(pk=bobs_approval.pk).update(status=Approval.Status.ALLOWED, decided_by_kind="end_user")

    pending = admin_client.get(url("approvals_approval_change", approval.pk)).content.decode()
    decided = admin_client.get(url("approvals_approval_change", bobs_approval.pk)).content.decode()

    assert url("approvals_approval_allow", approval.pk) in pending
    assert url("approvals_approval_deny", approval.pk) in pending
    assert 'name="csrfmiddlewaretoken"' in pending  # the buttons post the change form, with its token
    assert url("approvals_approval_allow", bobs_approval.pk) not in decided


# --- deciding -------------------------------------------------------------------------------------------


def test_allow_selected_allows_the_pending_ones_as_the_operator_and_leaves_the_rest(
    admin_client: Client,
    approval: Approval,
    bobs_approval: Approval,
    their_approval: Approval,
    dispatched: list[UUID],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    Approval.objects.filter(pk=bobs_approval.pk).update(status=Approval.Status.DENIED, decided_by_kind="end_user")
    bobs_before = Approval.objects.values().get(pk=bobs_approval.pk)
    theirs_before = Approval.objects.values().get(pk=their_approval.pk)

    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(admin_client, "allow_selected", approval, bobs_approval)

    assert response.status_code == 302
    allowed = Approval.objects.get(pk=approval.pk)
    assert (allowed.status, allowed.decided_by_kind, allowed.decided_by) == ("allowed", "operator", "admin")
    assert Approval.objects.values().get(pk=bobs_approval.pk) == bobs_before
    assert Approval.objects.values().get(pk=their_approval.pk) == theirs_before
    assert Run.objects.get(pk=approval.run_id).status == Run.Status.QUEUED
    assert dispatched == [approval.run_id]
    assert "Allowed 1 approval(s)." in messages_of(response)
    assert any("already denied" in message for message in messages_of(response))
    record = AuditRecord.objects.get()
    assert (record.actor_kind, record.actor, record.action) == ("operator", "admin", "approval.allowed")
    assert Event.objects.get(type="permission.decision").data["decided_by"] == {"kind": "operator", "name": "admin"}


def test_deny_selected_denies_each_pending_one(
    admin_client: Client, approval: Approval, bobs_approval: Approval
) -> None:
    response = run_action(admin_client, "deny_selected", approval, bobs_approval)

    assert response.status_code == 302
    assert set(Approval.objects.values_list("status", flat=True)) == {"denied"}
    assert set(AuditRecord.objects.values_list("actor", "action")) == {("admin", "approval.denied")}


def test_the_page_allows_with_the_operators_words(admin_client: Client, approval: Approval) -> None:
    response = admin_client.post(
        url("approvals_approval_allow", approval.pk), {"decision_message": "Go ahead, once.\r\n"}
    )

    assert response.status_code == 302 and response["Location"] == url("approvals_approval_change", approval.pk)
    allowed = Approval.objects.get(pk=approval.pk)
    assert (allowed.status, allowed.message, allowed.decided_by) == ("allowed", "Go ahead, once.", "admin")


def test_the_page_denies_with_a_reason_and_a_second_decision_is_refused_with_a_message(
    admin_client: Client, approval: Approval
) -> None:
    admin_client.post(url("approvals_approval_deny", approval.pk), {"decision_message": "Not in production."})
    decided = Approval.objects.values().get(pk=approval.pk)

    again = admin_client.post(url("approvals_approval_allow", approval.pk), {})

    assert (decided["status"], decided["message"]) == ("denied", "Not in production.")
    assert Approval.objects.values().get(pk=approval.pk) == decided
    assert any("already settled" in message for message in messages_of(again))


def test_deciding_by_get_or_for_a_missing_approval_is_refused(admin_client: Client, approval: Approval) -> None:
    assert admin_client.get(url("approvals_approval_allow", approval.pk)).status_code == 405
    missing = "00000000-0000-4000-8000-000000000000"
    assert admin_client.post(url("approvals_approval_deny", missing)).status_code == 404
    assert Approval.objects.get(pk=approval.pk).is_pending


def test_staff_who_may_only_view_approvals_see_them_but_cannot_decide(viewer: Client, approval: Approval) -> None:
    page = viewer.get(url("approvals_approval_change", approval.pk))
    changelist = viewer.get(url("approvals_approval_changelist"))

    by_button = viewer.post(url("approvals_approval_allow", approval.pk), {})
    by_action = run_action(viewer, "allow_selected", approval)

    assert page.status_code == 200 and url("approvals_approval_allow", approval.pk) not in page.content.decode()
    assert "allow_selected" not in changelist.content.decode()
    assert by_button.status_code == 403
    assert by_action.status_code in (200, 302)
    assert Approval.objects.get(pk=approval.pk).is_pending


def test_denying_every_request_a_run_waits_on_queues_it_again(admin_client: Client, waiting_run: Run) -> None:
    first, second = ApprovalFactory(run=waiting_run), ApprovalFactory(run=waiting_run)

    response = run_action(admin_client, "deny_selected", first, second)

    assert "Denied 2 approval(s)." in messages_of(response)
    assert Run.objects.get(pk=waiting_run.pk).status == Run.Status.QUEUED
