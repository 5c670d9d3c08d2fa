"""What a run asks a person: an approval of one tool call, or the answer to its agent's question.

Both are rows, not promises held by a process: a run waits on one in-process for a short while, is then
suspended (its worker and sandbox freed), and the decision resumes it on any worker, however long it took.
"""

import uuid
from typing import Any

from django.db import models
from django.db.models import Q

from conversations.models import Conversation, Run
from tenants.models import Tenant

ASK_USER_QUESTION = "AskUserQuestion"


class Decider(models.TextChoices):
    END_USER = "end_user", "End user"
    API_KEY = "api_key", "API key"
    OPERATOR = "operator", "Operator"
    SYSTEM = "system", "The platform (expiry, a run that ended)"


class RequestQuerySet(models.QuerySet[Any]):
    def for_tenant(self, tenant: Tenant | str) -> "RequestQuerySet":
        return self.filter(tenant=tenant)

    def pending(self) -> "RequestQuerySet":
        return self.filter(status="pending")


class PersonRequest(models.Model):
    """What approvals and questions share: whose run asked, about which tool call, until when, and who settled it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="+")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="+")
    user_id = models.CharField(max_length=200, blank=True, help_text="The end user whose run asked.")
    tool_use_id = models.CharField(max_length=100, help_text="The model's id for the tool call (unique in the run).")
    requested_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(help_text="Past it, the platform denies by itself (the profile's timeout).")
    decided_by_kind = models.CharField(max_length=10, choices=Decider.choices, blank=True)
    decided_by = models.CharField(max_length=200, blank=True, help_text="The end user, key prefix or operator.")
    decided_at = models.DateTimeField(null=True, blank=True)
    applied_at = models.DateTimeField(
        null=True, blank=True, help_text="When the run took the decision (the call ran or was refused)."
    )

    objects = RequestQuerySet.as_manager()

    class Meta:
        abstract = True

    @property
    def is_pending(self) -> bool:
        return self.status == "pending"  # type: ignore[attr-defined]


class Approval(PersonRequest):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ALLOWED = "allowed", "Allowed"
        DENIED = "denied", "Denied"
        EXPIRED = "expired", "Expired (denied)"
        CANCELLED = "cancelled", "Cancelled (the run ended)"

    tool = models.CharField(max_length=200)
    tool_input = models.JSONField(default=dict)
    title = models.CharField(max_length=500, blank=True, help_text="One sentence saying what the agent wants to do.")
    display_name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True, help_text="What the call says about itself (its command, path, URL).")
    decision_reason = models.TextField(blank=True, help_text="Why a person is asked: the profile's rule.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    message = models.TextField(blank=True, help_text="The decider's words to the model.")
    updated_input = models.JSONField(null=True, blank=True, help_text="The input the call runs with, as edited.")
    remember = models.BooleanField(
        default=False, help_text="Allowed for the rest of the conversation: later calls of this tool ask nobody."
    )

    class Meta:
        ordering = ["-requested_at"]
        constraints = [models.UniqueConstraint(fields=["run", "tool_use_id"], name="approval_once_per_call")]
        indexes = [
            models.Index(fields=["tenant", "status", "-requested_at"]),
            models.Index(fields=["expires_at"], condition=Q(status="pending"), name="approval_pending_expiry_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.tool} ({self.status})"

    @property
    def allowed(self) -> bool:
        return self.status == self.Status.ALLOWED


class Question(PersonRequest):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ANSWERED = "answered", "Answered"
        EXPIRED = "expired", "Expired (unanswered)"
        CANCELLED = "cancelled", "Cancelled (the run ended)"

    questions = models.JSONField(
        default=list, help_text='The agent\'s questions: [{"question", "header", "options": [{"label", …}], …}]'
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    answers = models.JSONField(null=True, blank=True, help_text="Per question text, the chosen label(s) or text.")

    class Meta:
        ordering = ["-requested_at"]
        constraints = [models.UniqueConstraint(fields=["run", "tool_use_id"], name="question_once_per_call")]
        indexes = [
            models.Index(fields=["tenant", "status", "-requested_at"]),
            models.Index(fields=["expires_at"], condition=Q(status="pending"), name="question_pending_expiry_idx"),
        ]

    def __str__(self) -> str:
        first = self.questions[0].get("question", "") if self.questions else ""
        return f"{first[:60]} ({self.status})"

    @property
    def tool(self) -> str:
        """The CLI's tool that asks the user (Claude Code 2.1)."""
        return ASK_USER_QUESTION


class ToolGrant(models.Model):
    """A tool a person allowed for the rest of a conversation: its later calls ask nobody."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="+")
    tool = models.CharField(max_length=200)
    approval = models.ForeignKey(Approval, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["conversation", "tool"], name="tool_grant_once")]

    def __str__(self) -> str:
        return f"{self.tool} in {self.conversation_id}"
