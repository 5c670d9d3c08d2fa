"""The audit trail: an append-only record of who did what, kept apart from the rows it speaks of."""

from typing import Any

from django.db import models

from tenants.models import Tenant


class AuditRecordQuerySet(models.QuerySet["AuditRecord"]):
    def for_tenant(self, tenant: Tenant | str) -> "AuditRecordQuerySet":
        return self.filter(tenant=tenant)

    def update(self, **kwargs: Any) -> int:
        raise TypeError("Audit records are append-only.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise TypeError("Audit records are append-only.")


class AuditRecord(models.Model):
    """One act: who (`actor_kind`, `actor`), did what (`action`), to which object, with what details."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Not a foreign key: the record outlives what it names (a deleted conversation, even a deleted tenant).
    tenant = models.CharField(max_length=63, blank=True, db_index=True)
    actor_kind = models.CharField(max_length=20, help_text="end_user, api_key, operator or system.")
    actor = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=100, help_text="Dotted, e.g. approval.allowed, question.answered.")
    object_type = models.CharField(max_length=50)
    object_id = models.CharField(max_length=100)
    data = models.JSONField(default=dict, blank=True)

    objects = AuditRecordQuerySet.as_manager()

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["tenant", "-at"]), models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.actor_kind}:{self.actor} {self.action} {self.object_type} {self.object_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise TypeError("Audit records are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise TypeError("Audit records are append-only.")


def record(
    *, tenant: str, actor_kind: str, actor: str, action: str, object_type: str, object_id: Any, data: dict[str, Any]
) -> AuditRecord:
    return AuditRecord.objects.create(
        tenant=tenant,
        actor_kind=actor_kind,
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        data=data,
    )
