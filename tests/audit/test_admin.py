"""The operator admin of the audit trail: read by staff, never added, changed or deleted."""

import pytest
from django.contrib.admin.sites import site
from django.contrib.auth.models import User
from django.test import Client, RequestFactory
from django.urls import reverse

from audit.models import AuditRecord, record
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def records(tenant: Tenant, other_tenant: Tenant) -> list[AuditRecord]:
    return [
        record(
            tenant="acme",
            actor_kind="end_user",
            actor="alice",
            action="approval.allowed",
            object_type="approval",
            object_id="a-1",
            data={"message": "Fine."},
        ),
        record(
            tenant="globex",
            actor_kind="operator",
            actor="olga",
            action="approval.denied",
            object_type="approval",
            object_id="g-1",
            data={},
        ),
    ]


def test_the_pages_render_and_filter(admin_client: Client, records: list[AuditRecord]) -> None:
    changelist = reverse("admin:audit_auditrecord_changelist")

    acme = admin_client.get(f"{changelist}?tenant=acme")
    operators = admin_client.get(f"{changelist}?actor_kind=operator")
    searched = admin_client.get(f"{changelist}?q=approval.denied")
    page = admin_client.get(reverse("admin:audit_auditrecord_change", args=[records[0].pk]))

    assert [row.actor for row in acme.context["cl"].result_list] == ["alice"]
    assert [row.actor for row in operators.context["cl"].result_list] == ["olga"]
    assert [row.actor for row in searched.context["cl"].result_list] == ["olga"]
    assert page.status_code == 200 and "Fine." in page.content.decode()


def test_nobody_adds_changes_or_deletes_a_record_even_a_superuser(
    admin_client: Client, rf: RequestFactory, admin_user: User, records: list[AuditRecord]
) -> None:
    request = rf.get("/")
    request.user = admin_user
    model_admin = site._registry[AuditRecord]
    before = list(AuditRecord.objects.values())

    answers = (
        model_admin.has_view_permission(request),
        model_admin.has_add_permission(request),
        model_admin.has_change_permission(request),
        model_admin.has_delete_permission(request),
    )
    added = admin_client.get(reverse("admin:audit_auditrecord_add"))
    deleted = admin_client.post(reverse("admin:audit_auditrecord_delete", args=[records[0].pk]), {"post": "yes"})
    bulk = admin_client.post(
        reverse("admin:audit_auditrecord_changelist"),
        {"action": "delete_selected", "_selected_action": [str(row.pk) for row in records], "post": "yes"},
    )

    assert answers == (True, False, False, False)
    assert added.status_code == deleted.status_code == 403
    assert bulk.status_code in (200, 302)
    assert list(AuditRecord.objects.values()) == before
